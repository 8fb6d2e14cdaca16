package bbolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
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
		{"no-freelist.db", storage.ErrCorrupt, []string{"page"}},
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

// testTokenHash is the stored form of a join token.
const testTokenHash = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"

// TestCorruptRecords puts damaged values into each bucket of a sound file:
// every read reports ErrCorrupt naming the key, and nothing panics.
func TestCorruptRecords(t *testing.T) {
	const id = "spiffe://example.org/web"
	good := testSerial(1, id, t0.Add(time.Hour))
	goodKeys := newSerialKeys(good)
	goodKeys.setSeq(1) // the first record's sequence number
	for _, tc := range []struct {
		name        string
		bucket, key []byte
		val         []byte
		// reads names the serial reads that must report the damage:
		// SerialsFor, PruneSerials, RevokeSerial, RevokeUnbound.
		reads string
	}{
		{"entry not JSON", bucketEntries, []byte("e-bad"), []byte("{"), ""},
		{"entry wrong type", bucketEntries, []byte("e-bad"), []byte(`{"id":"e-bad","revision":"one"}`), ""},
		{"entry id mismatch", bucketEntries, []byte("e-bad"), []byte(`{"id":"e-other"}`), ""},
		{"key not JSON", bucketKeys, []byte("k-bad"), []byte("\x00\x01"), ""},
		{"key id mismatch", bucketKeys, []byte("k-bad"), []byte(`{"id":"k"}`), ""},
		{"join token not JSON", bucketJoinTokens, []byte(testTokenHash), []byte("{"), ""},
		{"join token hash mismatch", bucketJoinTokens, []byte(testTokenHash), []byte(`{"hash":"0b"}`), ""},
		{"record unknown format", bucketSerialRecords, goodKeys.key, append([]byte{9}, goodKeys.val[1:]...), "spr"},
		{"record truncated", bucketSerialRecords, goodKeys.key, goodKeys.val[:len(goodKeys.val)-1], "sr"},
		{"record long spiffe id", bucketSerialRecords, goodKeys.key, []byte{1, 0xff, 0x7f}, "spr"},
		{"record other id", bucketSerialRecords, goodKeys.key, newSerialKeys(testSerial(1, "spiffe://example.org/x", t0.Add(time.Hour))).val, "s"},
		{"record key short", bucketSerialRecords, []byte{0x80}, goodKeys.val, "p"},
		{"index key short", bucketSerialIDs, append([]byte(id), 0, 0x80, 1), nil, "s"},
		{"index without record", bucketSerialIDs, append(append([]byte(id), 0), appendSecond(appendSecond(nil, t0.Add(time.Hour).Unix()), 99)...), nil, "s"},
		{"record key mismatch", bucketSerialRecords, goodKeys.key, newSerialKeys(testSerial(1, id, t0.Add(2*time.Hour))).val, "spr"},
		{"reservation key short", bucketSerialReservations, []byte{0x80}, encodeReservation([]string{"ab"}), "pu"},
		{"reservation truncated", bucketSerialReservations, append(appendTime(nil, t0.Add(-time.Hour)), 0, 0, 0, 0, 0, 0, 0, 1), []byte{2, 2, 'a', 'b'}, "u"},
		{"reservation bad serial", bucketSerialReservations, append(appendTime(nil, t0.Add(-time.Hour)), 0, 0, 0, 0, 0, 0, 0, 1), []byte{1, 2, 'X', 'Y'}, "u"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := openStore(t, filepath.Join(t.TempDir(), "badge.db"), &Options{NoSync: true})
			if err := s.RecordSerial(ctx, good); err != nil {
				t.Fatal(err)
			}
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
			case string(bucketJoinTokens):
				_, err := s.GetJoinToken(ctx, string(tc.key))
				errs = append(errs, err)
				_, err = s.ListJoinTokens(ctx)
				errs = append(errs, err)
			default:
				for _, r := range tc.reads {
					var err error
					switch r {
					case 's':
						_, err = s.SerialsFor(ctx, id, t0)
					case 'p':
						_, err = s.PruneSerials(ctx, t0.Add(100*time.Hour))
					case 'r':
						_, err = s.RevokeSerial(ctx, good.Serial, "", 0, t0)
					case 'u':
						_, err = s.RevokeUnbound(ctx, t0.Add(-2*time.Hour), "crash")
					}
					errs = append(errs, err)
				}
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

// checkIndexes verifies that serial_records holds want records and that
// each has exactly its serial_ids entry.
func checkIndexes(t *testing.T, s *Store, want int) {
	t.Helper()
	if err := s.flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		recs, ids, err := serialBuckets(tx)
		if err != nil {
			return err
		}
		for _, b := range []*bolt.Bucket{recs, ids} {
			if n := b.Stats().KeyN; n != want {
				t.Errorf("bucket has %d keys, want %d", n, want)
			}
		}
		return recs.ForEach(func(k, v []byte) error {
			r, err := decodeSerial(k, v)
			if err != nil {
				return err
			}
			if ids.Get(append(append([]byte(r.SPIFFEID), 0), k...)) == nil {
				t.Errorf("serial %s: no serial_ids entry", k)
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

// TestMigrateSchemaV3 opens testdata/schema-v3.db, written by the release
// before the serial layout changed (150 serials folded into the indexed
// buckets, 40 still in serials_log, 20 of them expired at its t0): every record
// comes through the upgrade, the old buckets are gone, and the new ones
// answer SerialsFor, RevokeSerial and PruneSerials.
func TestMigrateSchemaV3(t *testing.T) {
	ctx := t.Context()
	fixT0 := time.Date(2026, 11, 24, 13, 0, 0, 123456789, time.UTC) // the fixture's clock
	path := copyFixture(t, "schema-v3.db")
	s := openStore(t, path, nil)
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySchemaVersion); string(v) != strconv.Itoa(schemaVersion) {
			t.Errorf("schema version = %q, want %d", v, schemaVersion)
		}
		for _, name := range [][]byte{bucketSerialsV1, bucketSerialsByIDV1, bucketSerialsByExpiryV1, bucketSerialsLogV1} {
			if tx.Bucket(name) != nil {
				t.Errorf("bucket %s is still there", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s, 190)
	all, live := 0, 0
	for w := range 3 {
		id := fmt.Sprintf("spiffe://example.org/w%d", w)
		got, err := s.SerialsFor(ctx, id, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		all += len(got)
		for _, r := range got {
			if r.EntryID != "e1" || !r.IssuedAt.Equal(r.NotAfter.Add(-5*time.Minute)) || r.SPIFFEID != id {
				t.Errorf("migrated record %+v", r)
			}
		}
		got, err = s.SerialsFor(ctx, id, fixT0)
		if err != nil {
			t.Fatal(err)
		}
		live += len(got)
	}
	if all != 190 || live != 169 {
		t.Errorf("after upgrade: %d serials, %d unexpired at t0; want 190, 169", all, live)
	}
	// The last record logged (not folded) before the upgrade.
	n := uint64(190)
	last := fmt.Sprintf("%032x", n*0x9e3779b97f4a7c15)
	if r, err := s.RevokeSerial(ctx, last, "test", 0, fixT0); err != nil || r.SPIFFEID != "spiffe://example.org/w0" {
		t.Errorf("RevokeSerial(%s) = %+v, %v", last, r, err)
	}
	if n, err := s.PruneSerials(ctx, fixT0); n != 20 || err != nil {
		t.Errorf("PruneSerials(t0) = %d, %v; want 20", n, err)
	}
	if _, err := s.GetEntry(ctx, "e1"); err != nil {
		t.Errorf("GetEntry after upgrade: %v", err)
	}
}

// TestReservationDeletedWhenUsed: a reservation leaves the file in the
// transaction that binds or releases its last serial, so that the
// reservations kept are those of the blocks in use, not of every block of
// the last NotAfter.
func TestReservationDeletedWhenUsed(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, filepath.Join(t.TempDir(), "badge.db"), &Options{NoSync: true})
	count := func() int {
		t.Helper()
		if err := s.flush(ctx); err != nil {
			t.Fatal(err)
		}
		n := 0
		if err := s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketSerialReservations).Stats().KeyN; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const id = "spiffe://example.org/web"
	a, b := []string{fmt.Sprintf("%032x", 1), fmt.Sprintf("%032x", 2)}, []string{fmt.Sprintf("%032x", 3), fmt.Sprintf("%032x", 4)}
	for _, r := range [][]string{a, b} {
		if err := s.ReserveSerials(ctx, storage.Reservation{Serials: r, NotAfter: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	for i, step := range []struct {
		do   func() error
		want int
	}{
		{func() error { return s.BindSerial(ctx, testSerial(1, id, t0.Add(time.Minute))) }, 2},
		{func() error { return s.BindSerial(ctx, testSerial(1, id, t0.Add(2*time.Minute))) }, 2}, // the same serial again
		{func() error { return s.BindSerial(ctx, testSerial(2, id, t0.Add(time.Minute))) }, 1},
		{func() error { return s.ReleaseSerials(ctx, b[:1]) }, 1},
		{func() error { return s.ReleaseSerials(ctx, append(b[:1], a...)) }, 1}, // not reserved any more
		{func() error { return s.RecordSerial(ctx, testSerial(4, id, t0.Add(time.Minute))) }, 0},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := count(); got != step.want {
			t.Fatalf("after step %d: %d reservations, want %d", i, got, step.want)
		}
	}
	if len(s.unbound) != 0 {
		t.Errorf("%d serials still tracked as unbound", len(s.unbound))
	}
}

// TestSerialFileBounded: in steady state, with serials pruned as fast as
// they are recorded, the file stops growing: pruning frees the first pages
// and inserts reuse them. Four generations of 4,000 live serials; the
// high-water mark after the fourth is that of the second, give or take a
// few pages.
func TestSerialFileBounded(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, filepath.Join(t.TempDir(), "badge.db"), &Options{NoSync: true})
	const live, step = 4000, 500
	at := func(n int) time.Time { return t0.Add(time.Duration(n) * 10 * time.Millisecond) }
	size := func() int64 {
		var n int64
		if err := s.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var sizes []int64
	for n := 0; n < 6*live; n += step {
		for i := n; i < n+step; i++ {
			r := testSerial(i, fmt.Sprintf("spiffe://example.org/%d", i%8), at(i+live))
			if err := s.BindSerial(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		// Commit the step's records before pruning, as a server's
		// steady flow does: otherwise a starved committer may write
		// several generations in one batch, which is a different test.
		if err := s.flush(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PruneSerials(ctx, at(n+step)); err != nil {
			t.Fatal(err)
		}
		if (n+step)%live == 0 {
			sizes = append(sizes, size())
		}
	}
	checkIndexes(t, s, live)
	t.Logf("used size per generation: %v", sizes)
	// Batched commits land at different points of each generation, and
	// bbolt places a batch's pages wherever its freelist has room, so the
	// high-water mark moves by up to a few dozen pages from one run to the
	// next. A file that kept growing would add a whole generation's records
	// (about 900 KiB) each time: four more generations would add 3.6 MiB.
	const slack = 128 << 10
	if sizes[5] > sizes[1]+slack {
		t.Errorf("used size per generation %v: still growing after the second", sizes)
	}
}
