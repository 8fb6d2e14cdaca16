package bbolt

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

func openTemp(t *testing.T) *Store {
	return openStore(t, filepath.Join(t.TempDir(), "badge.db"), &Options{NoSync: true})
}

func testEntry(i int) storage.Entry {
	return storage.Entry{ID: fmt.Sprintf("e%06d", i), SPIFFEID: "spiffe://example.org/w", Selectors: []string{"unix:uid:1"}, CreatedAt: t0}
}

// auditRec returns record seq chained to prev, with a made-up hash.
func auditRec(seq uint64, prev string) storage.AuditRecord {
	h := strings.Repeat(string("0123456789abcdef"[seq%16]), 64)
	return storage.AuditRecord{Seq: seq, Time: t0, Action: "entry.create", Target: "e", Result: "ok", Prev: prev, Hash: h}
}

func headOf(r storage.AuditRecord) storage.AuditHead {
	return storage.AuditHead{Seq: r.Seq, Hash: r.Hash, SignedAt: t0, Signature: []byte{1}}
}

// The audit methods' contract is checked by storagetest (Audit/Chain).

// TestBackupConsistent takes backups while entries are being written: each
// backup is a database that opens and holds a prefix of the writes.
func TestBackupConsistent(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.CreateEntry(ctx, testEntry(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 5; i++ {
		var buf bytes.Buffer
		var keys []storage.Key
		err := s.Backup(ctx, func(size int64, k []storage.Key, writeDB func(io.Writer) (int64, error)) error {
			keys = k
			n, err := writeDB(&buf)
			if err == nil && n != size {
				t.Errorf("WriteTo wrote %d bytes, size %d", n, size)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "copy.db")
		writeFile(t, path, buf.Bytes())
		c, err := Open(path, nil)
		if err != nil {
			t.Fatalf("backup %d does not open: %v", i, err)
		}
		es, err := c.ListEntries(ctx)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 0 {
			t.Errorf("keys = %v; want none", keys)
		}
		t.Logf("backup %d: %d entries", i, len(es))
	}
	close(stop)
	wg.Wait()
}

func FuzzDecodeAudit(f *testing.F) {
	f.Add(auditKey(1), jsonOf(f, auditRec(1, "")))
	f.Add(auditKey(2), jsonOf(f, auditRec(1, "")))
	f.Add([]byte{1}, []byte(`{}`))
	f.Add(auditKey(1), []byte(`{"seq":1,"time":"x"}`))
	f.Fuzz(func(t *testing.T, key, val []byte) {
		checkDecode(t, key, val, decodeAudit)
	})
}

// TestMigrateAudit opens a database of schema version 5 (before the audit
// trail) and checks that the upgrade adds the audit bucket and keeps the
// rest.
func TestMigrateAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v5.db")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateEntry(context.Background(), testEntry(1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketAudit); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchemaVersion, []byte("5"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = Open(path, nil)
	if err != nil {
		t.Fatalf("Open of a version 5 database: %v", err)
	}
	defer s.Close()
	if es, err := s.ListEntries(context.Background()); err != nil || len(es) != 1 {
		t.Fatalf("entries after the upgrade = %v, %v", es, err)
	}
	r := auditRec(1, "")
	if err := s.AppendAudit(context.Background(), r, headOf(r)); err != nil {
		t.Fatalf("AppendAudit after the upgrade: %v", err)
	}
}
