package bbolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

var t0 = time.Date(2026, 11, 24, 13, 0, 0, 0, time.UTC)

func openStore(t testing.TB, path string, opts *Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testSerial(n int, spiffeID string, notAfter time.Time) storage.Serial {
	return storage.Serial{
		Serial:    fmt.Sprintf("%032x", n),
		SPIFFEID:  spiffeID,
		EntryID:   "e1",
		NotBefore: notAfter.Add(-5 * time.Minute),
		NotAfter:  notAfter,
		IssuedAt:  notAfter.Add(-5 * time.Minute),
	}
}

// copyFixture copies testdata/name to a temporary directory, so that tests
// never modify the committed file.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "badge.db")
	s := openStore(t, path, nil)
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("new file has mode %v, want 0600", perm)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		for _, name := range buckets {
			if tx.Bucket(name) == nil {
				t.Errorf("bucket %s missing", name)
			}
		}
		if v := tx.Bucket(bucketMeta).Get(keySchemaVersion); string(v) != strconv.Itoa(schemaVersion) {
			t.Errorf("schema version = %q, want %d", v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		path string
		want error
	}{
		{"missing directory", filepath.Join(dir, "nodir", "badge.db"), fs.ErrNotExist},
		{"path is a directory", dir, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.path, nil)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Open = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name the path", err)
			}
		})
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "badge.db")
	s := openStore(t, path, nil)
	e := storage.Entry{ID: "e1", SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:uid:1"},
		TTL: time.Minute, DNSNames: []string{"web"}, CreatedAt: t0, Revision: 3}
	k := storage.Key{ID: "k1", Kind: "jwt", PublicKey: []byte{1, 2}, PrivateRef: "k1.key",
		CreatedAt: t0, NotAfter: t0.Add(time.Hour), State: storage.KeyActive}
	r := testSerial(1, e.SPIFFEID, t0.Add(time.Hour))
	if err := s.CreateEntry(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := s.PutKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordSerial(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path, nil)
	entries, err := s.ListEntries(ctx)
	if err != nil || !reflect.DeepEqual(entries, []storage.Entry{e}) {
		t.Errorf("after reopen, ListEntries = %+v, %v; want [%+v]", entries, err, e)
	}
	keys, err := s.ListKeys(ctx)
	if err != nil || !reflect.DeepEqual(keys, []storage.Key{k}) {
		t.Errorf("after reopen, ListKeys = %+v, %v; want [%+v]", keys, err, k)
	}
	serials, err := s.SerialsFor(ctx, e.SPIFFEID, t0)
	if err != nil || !reflect.DeepEqual(serials, []storage.Serial{r}) {
		t.Errorf("after reopen, SerialsFor = %+v, %v; want [%+v]", serials, err, r)
	}
	// The serial waits in the log, which Open loaded.
	if err := s.RecordSerial(ctx, r); !errors.Is(err, storage.ErrExists) {
		t.Errorf("after reopen, RecordSerial(same serial) = %v, want ErrExists", err)
	}
	if err := s.CreateEntry(ctx, e); !errors.Is(err, storage.ErrExists) {
		t.Errorf("after reopen, CreateEntry(same ID) = %v, want ErrExists", err)
	}
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "badge.db")
	first := openStore(t, path, nil)
	for _, timeout := range []time.Duration{-1, 100 * time.Millisecond} {
		start := time.Now()
		s, err := Open(path, &Options{Timeout: timeout})
		elapsed := time.Since(start)
		if err == nil {
			s.Close()
			t.Fatalf("second Open(timeout %v) succeeded", timeout)
		}
		if !errors.Is(err, storage.ErrLocked) {
			t.Errorf("second Open(timeout %v) = %v, want ErrLocked", timeout, err)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the path", err)
		}
		// Generous bound: the point is that Open gives up rather than
		// waiting for the lock forever.
		if elapsed > timeout+2*time.Second {
			t.Errorf("second Open(timeout %v) took %v", timeout, elapsed)
		}
	}
	// The failed attempts did not disturb the first store.
	if err := first.CreateEntry(t.Context(), storage.Entry{ID: "e1", SPIFFEID: "spiffe://example.org/a"}); err != nil {
		t.Fatalf("first store after failed opens: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, path, &Options{Timeout: -1})
	if _, err := s.GetEntry(t.Context(), "e1"); err != nil {
		t.Errorf("after the lock was released: %v", err)
	}
}

func TestFixtureErrors(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		want    error    // nil: Open succeeds
		says    []string // in the error, besides the path
	}{
		{"empty.db", nil, nil},
		{"short.db", storage.ErrCorrupt, nil},
		{"random.db", storage.ErrCorrupt, nil},
		{"bad-checksum.db", storage.ErrCorrupt, nil},
		{"truncated.db", storage.ErrCorrupt, nil},
		{"truncated-tail.db", storage.ErrCorrupt, nil},
		{"bad-page.db", storage.ErrCorrupt, nil},
		{"bad-version.db", storage.ErrCorrupt, []string{"schema_version"}},
		{"not-badge.db", storage.ErrSchema, []string{"widgets"}},
		{"no-freelist.db", storage.ErrSchema, []string{"freelist"}},
		{"future-schema.db", storage.ErrSchema, []string{strconv.Itoa(futureSchema), strconv.Itoa(schemaVersion)}},
		{"bad-record.db", nil, nil},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			path := copyFixture(t, tc.fixture)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, &Options{Timeout: -1})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Open = %v, want success", err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("Open succeeded, want %v", tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Open = %v, want %v", err, tc.want)
			}
			for _, part := range append([]string{path}, tc.says...) {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not mention %q", err, part)
				}
			}
			t.Logf("Open: %v", err)
			// Nothing is repaired or rewritten.
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
				t.Errorf("a failed Open modified the file (%v)", err)
			}
			// The lock was released: a second attempt fails the same way,
			// not with ErrLocked.
			if s, err := Open(path, &Options{Timeout: -1}); !errors.Is(err, tc.want) {
				if err == nil {
					s.Close()
				}
				t.Errorf("second Open = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestFutureSchemaUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "badge.db")
	s := openStore(t, path, nil)
	if err := s.CreateEntry(t.Context(), storage.Entry{ID: "e1", SPIFFEID: "spiffe://example.org/a"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	setMeta(t, path, strconv.Itoa(schemaVersion+7))
	_, err := Open(path, nil)
	if !errors.Is(err, storage.ErrSchema) {
		t.Fatalf("Open(newer schema) = %v, want ErrSchema", err)
	}
	// Going back to the current version shows the data was left alone.
	setMeta(t, path, strconv.Itoa(schemaVersion))
	s = openStore(t, path, nil)
	if _, err := s.GetEntry(t.Context(), "e1"); err != nil {
		t.Errorf("entry after refused open: %v", err)
	}
}

// TestCorruptRecords puts damaged values into each bucket of a sound file:
// every read reports ErrCorrupt naming the key, and nothing panics.
func TestCorruptRecords(t *testing.T) {
	const id = "spiffe://example.org/web"
	good := testSerial(1, id, t0.Add(time.Hour))
	goodJSON := jsonOf(t, good)
	for _, tc := range []struct {
		name        string
		bucket, key []byte
		val         []byte
	}{
		{"entry not JSON", bucketEntries, []byte("e-bad"), []byte("{")},
		{"entry wrong type", bucketEntries, []byte("e-bad"), []byte(`{"id":"e-bad","revision":"one"}`)},
		{"entry id mismatch", bucketEntries, []byte("e-bad"), []byte(`{"id":"e-other"}`)},
		{"key not JSON", bucketKeys, []byte("k-bad"), []byte("\x00\x01")},
		{"key id mismatch", bucketKeys, []byte("k-bad"), []byte(`{"id":"k"}`)},
		{"serial not JSON", bucketSerials, []byte(good.Serial), []byte("null-ish")},
		{"serial mismatch", bucketSerials, []byte(good.Serial), bytes.Replace(goodJSON, []byte(good.Serial), []byte("ff"), 1)},
		{"index value short", bucketSerialsByID, append(byIDPrefix(id), "ab"...), []byte{1, 2}},
		{"index without record", bucketSerialsByID, append(byIDPrefix(id), "ab"...), appendTime(nil, t0.Add(time.Hour))},
		{"expiry key short", bucketSerialsByExpiry, []byte{0x80}, []byte(id)},
		{"log not JSON", bucketSerialsLog, logKey(99), []byte("{")},
		{"log key short", bucketSerialsLog, []byte{99}, goodJSON},
		{"log record invalid", bucketSerialsLog, logKey(99), []byte(`{"serial":"XY","spiffe_id":"` + id + `"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := openStore(t, filepath.Join(t.TempDir(), "badge.db"), &Options{NoSync: true})
			if err := s.RecordSerial(ctx, good); err != nil {
				t.Fatal(err)
			}
			foldAll(t, s)
			err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(tc.bucket).Put(tc.key, tc.val) })
			if err != nil {
				t.Fatal(err)
			}
			var errs []error
			switch string(tc.bucket) {
			case string(bucketEntries):
				_, err := s.GetEntry(ctx, string(tc.key))
				errs = append(errs, err)
				_, err = s.ListEntries(ctx)
				errs = append(errs, err)
			case string(bucketKeys):
				_, err := s.ListKeys(ctx)
				errs = append(errs, err)
			case string(bucketSerialsByExpiry):
				_, err := s.PruneSerials(ctx, t0.Add(100*time.Hour))
				errs = append(errs, err)
			case string(bucketSerialsLog):
				_, err := s.SerialsFor(ctx, id, t0)
				errs = append(errs, err)
				_, err = s.PruneSerials(ctx, t0.Add(100*time.Hour))
				errs = append(errs, err)
			default:
				_, err := s.SerialsFor(ctx, id, t0)
				errs = append(errs, err)
			}
			for _, err := range errs {
				if !errors.Is(err, storage.ErrCorrupt) {
					t.Errorf("got %v, want ErrCorrupt", err)
				} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.key)) {
					t.Errorf("error %q does not name the key %q", err, tc.key)
				}
			}
		})
	}

	t.Run("fixture", func(t *testing.T) {
		s := openStore(t, copyFixture(t, "bad-record.db"), nil)
		if _, err := s.GetEntry(t.Context(), "entry-0001"); !errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("GetEntry(damaged) = %v, want ErrCorrupt", err)
		}
		if _, err := s.GetEntry(t.Context(), "entry-0002"); err != nil {
			t.Errorf("GetEntry(sound) = %v", err)
		}
		if _, err := s.ListEntries(t.Context()); !errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("ListEntries = %v, want ErrCorrupt", err)
		}
		// The damaged entry can be deleted, which repairs the store.
		if err := s.DeleteEntry(t.Context(), "entry-0001"); err != nil {
			t.Fatal(err)
		}
		if list, err := s.ListEntries(t.Context()); err != nil || len(list) != 2 {
			t.Errorf("ListEntries after deleting the damaged entry = %d entries, %v; want 2", len(list), err)
		}
	})
}

// TestRecordSerialDurable records from many goroutines with real syncs and
// finds every record after reopening.
func TestRecordSerialDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "badge.db")
	s := openStore(t, path, nil)
	const workers, each = 64, 40
	ids := []string{"spiffe://example.org/a", "spiffe://example.org/b"}
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				n := w*each + i
				if err := s.RecordSerial(context.Background(), testSerial(n, ids[n%2], t0.Add(time.Hour))); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path, nil)
	total := 0
	for _, id := range ids {
		got, err := s.SerialsFor(t.Context(), id, t0)
		if err != nil {
			t.Fatal(err)
		}
		total += len(got)
	}
	if total != workers*each {
		t.Errorf("after reopen: %d serials, want %d", total, workers*each)
	}
	checkIndexes(t, s, workers*each)
}

// foldAll moves every record of serials_log into the indexed buckets.
func foldAll(t *testing.T, s *Store) {
	t.Helper()
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if _, err := s.foldLocked(math.MaxInt); err != nil {
		t.Fatalf("fold: %v", err)
	}
}

// checkIndexes folds the log and verifies that each serial record has
// exactly its two index entries.
func checkIndexes(t *testing.T, s *Store, want int) {
	t.Helper()
	foldAll(t, s)
	err := s.db.View(func(tx *bolt.Tx) error {
		tb, err := serialBuckets(tx)
		if err != nil {
			return err
		}
		for _, b := range []*bolt.Bucket{tb.serials, tb.byID, tb.byExpiry} {
			if n := b.Stats().KeyN; n != want {
				t.Errorf("bucket has %d keys, want %d", n, want)
			}
		}
		return tb.serials.ForEach(func(k, v []byte) error {
			r, err := decodeSerial(k, v)
			if err != nil {
				return err
			}
			if tb.byID.Get(append(byIDPrefix(r.SPIFFEID), k...)) == nil {
				t.Errorf("serial %s: no serials_by_id entry", k)
			}
			if tb.byExpiry.Get(append(appendTime(nil, r.NotAfter), k...)) == nil {
				t.Errorf("serial %s: no serials_by_expiry entry", k)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitCtx reports, by closing waiting, that RecordSerial has queued its
// record and is waiting on Done.
type waitCtx struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func newWaitCtx(parent context.Context) *waitCtx {
	return &waitCtx{Context: parent, waiting: make(chan struct{})}
}

func (c *waitCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

// holdWriteLock starts a write transaction, so that the committer blocks
// until release is called.
func holdWriteLock(t *testing.T, s *Store) (release func()) {
	t.Helper()
	tx, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { _ = tx.Rollback() }) }
	t.Cleanup(release)
	return release
}

func TestRecordSerialCancelledWhileWaiting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "badge.db")
	s := openStore(t, path, nil)
	release := holdWriteLock(t, s)

	parent, cancel := context.WithCancel(t.Context())
	ctx := newWaitCtx(parent)
	result := make(chan error, 1)
	go func() { result <- s.RecordSerial(ctx, testSerial(1, "spiffe://example.org/a", t0)) }()
	<-ctx.waiting
	cancel()
	if err := <-result; !errors.Is(err, context.Canceled) {
		t.Fatalf("RecordSerial cancelled while waiting = %v, want context.Canceled", err)
	}

	// The store still works once the lock is released.
	release()
	if err := s.RecordSerial(t.Context(), testSerial(2, "spiffe://example.org/a", t0)); err != nil {
		t.Fatalf("RecordSerial after a cancelled one: %v", err)
	}
}

func TestCloseDrainsQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "badge.db")
	s := openStore(t, path, nil)
	release := holdWriteLock(t, s)

	const n = 10
	results := make(chan error, n)
	for i := range n {
		ctx := newWaitCtx(t.Context())
		go func() { results <- s.RecordSerial(ctx, testSerial(i, "spiffe://example.org/a", t0)) }()
		<-ctx.waiting // queued
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range n {
		if err := <-results; err != nil {
			t.Errorf("RecordSerial queued before Close: %v", err)
		}
	}
	s = openStore(t, path, nil)
	if got, err := s.SerialsFor(t.Context(), "spiffe://example.org/a", time.Time{}); err != nil || len(got) != n {
		t.Errorf("after Close and reopen: %d serials, %v; want %d", len(got), err, n)
	}
}

// TestGroupCommit checks that records queued while a commit is in flight
// share the next transaction.
func TestGroupCommit(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "badge.db"), nil)
	release := holdWriteLock(t, s)
	const n = 50
	results := make(chan error, n)
	for i := range n {
		ctx := newWaitCtx(t.Context())
		go func() { results <- s.RecordSerial(ctx, testSerial(i, "spiffe://example.org/a", t0)) }()
		<-ctx.waiting
	}
	before := s.writeTxs.Load()
	release()
	for range n {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	// The committer may have taken the first record before the rest were
	// queued: at most two transactions.
	if writes := s.writeTxs.Load() - before; writes > 2 {
		t.Errorf("%d records took %d write transactions, want at most 2", n, writes)
	}
}

func TestPruneBoundedTransactions(t *testing.T) {
	old := pruneBatch
	pruneBatch = 7
	t.Cleanup(func() { pruneBatch = old })

	ctx := t.Context()
	s := openStore(t, filepath.Join(t.TempDir(), "badge.db"), &Options{NoSync: true})
	const expired, live = 50, 5
	for i := range expired + live {
		notAfter := t0.Add(-time.Duration(i+1) * time.Second)
		if i >= expired {
			notAfter = t0.Add(time.Duration(i) * time.Second)
		}
		if err := s.RecordSerial(ctx, testSerial(i, fmt.Sprintf("spiffe://example.org/%d", i%3), notAfter)); err != nil {
			t.Fatal(err)
		}
	}
	foldAll(t, s)
	before := s.writeTxs.Load()
	n, err := s.PruneSerials(ctx, t0)
	if err != nil || n != expired {
		t.Fatalf("PruneSerials = %d, %v; want %d", n, err, expired)
	}
	if txs, want := s.writeTxs.Load()-before, uint64(expired/7+1); txs != want {
		t.Errorf("PruneSerials used %d transactions, want %d", txs, want)
	}
	checkIndexes(t, s, live)

	// A cancelled context stops between transactions.
	for i := range 20 {
		if err := s.RecordSerial(ctx, testSerial(1000+i, "spiffe://example.org/x", t0.Add(-time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if n, err := s.PruneSerials(cctx, t0); !errors.Is(err, context.Canceled) || n != 0 {
		t.Errorf("PruneSerials(cancelled) = %d, %v; want 0, context.Canceled", n, err)
	}
}

func TestOpenLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	path := filepath.Join(t.TempDir(), "badge.db")
	s := openStore(t, path, &Options{Logger: log})
	s.Close()
	for _, want := range []string{"msg=\"created database\"", "msg=\"opened database\"", "path=" + path, "schema_version=" + strconv.Itoa(schemaVersion)} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, buf.String())
		}
	}
}

var _ io.Closer = (*Store)(nil)
