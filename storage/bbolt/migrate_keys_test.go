package bbolt

import (
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// writeV6 writes a database of schema version 6 (before key schedules)
// holding the given raw key records.
func writeV6(t *testing.T, recs map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v6.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for v := range 6 {
			if err := migrations[v](tx); err != nil {
				return err
			}
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchemaVersion, []byte("6")); err != nil {
			return err
		}
		for id, rec := range recs {
			if err := tx.Bucket(bucketKeys).Put([]byte(id), []byte(rec)); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMigrateKeySchedule: the key records of schema 6 (the active root,
// intermediate and JWT key, and a retired intermediate) come through the
// upgrade with their schedule: active and retired keys became active when
// created, a retired key is removed when it expires, and nothing else
// changes.
func TestMigrateKeySchedule(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	path := writeV6(t, map[string]string{
		"root": `{"id":"root","kind":"x509-root","public_key":"AQ==","private_ref":"root.key","certificate":"Ag==","created_at":"2026-01-01T00:00:00Z","not_after":"2027-01-01T00:00:00Z","state":"active"}`,
		"int1": `{"id":"int1","kind":"x509-intermediate","public_key":"AQ==","private_ref":"int1.key","certificate":"Ag==","created_at":"2026-01-01T00:00:00Z","not_after":"2026-01-02T00:00:00Z","state":"retired"}`,
		"int2": `{"id":"int2","kind":"x509-intermediate","public_key":"AQ==","private_ref":"int2.key","certificate":"Ag==","created_at":"2026-01-01T12:00:00Z","not_after":"2026-01-02T12:00:00Z","state":"active"}`,
		"jwt":  `{"id":"jwt","kind":"jwt","public_key":"AQ==","private_ref":"jwt-jwt.key","created_at":"2026-01-01T00:00:00Z","not_after":"2027-01-01T00:00:00Z","state":"active"}`,
	})
	s, err := Open(path, nil)
	if err != nil {
		t.Fatalf("Open(v6): %v", err)
	}
	defer s.Close()
	err = s.view(t.Context(), func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySchemaVersion); string(v) != strconv.Itoa(schemaVersion) {
			t.Errorf("schema version after upgrade = %q, want %d", v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		state             storage.KeyState
		activates, remove time.Time
	}{
		"root": {storage.KeyActive, created, time.Time{}},
		"int1": {storage.KeyRetired, created, created.Add(24 * time.Hour)},
		"int2": {storage.KeyActive, created.Add(12 * time.Hour), time.Time{}},
		"jwt":  {storage.KeyActive, created, time.Time{}},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d key records after upgrade, want %d", len(recs), len(want))
	}
	for _, r := range recs {
		w := want[r.ID]
		if r.State != w.state || !r.ActivatesAt.Equal(w.activates) || !r.RemoveAt.Equal(w.remove) || !r.RetiresAt.IsZero() {
			t.Errorf("key %s after upgrade: state %s, activates %v, retires %v, remove %v; want %s, %v, zero, %v",
				r.ID, r.State, r.ActivatesAt, r.RetiresAt, r.RemoveAt, w.state, w.activates, w.remove)
		}
		if len(r.Certificate) == 0 && r.Kind != "jwt" || r.PrivateRef == "" || len(r.PublicKey) != 1 {
			t.Errorf("key %s lost fields in the upgrade: %+v", r.ID, r)
		}
	}
}

// TestMigrateKeyScheduleCorrupt: a key record that does not decode stops
// the upgrade with ErrCorrupt; the file keeps schema 6.
func TestMigrateKeyScheduleCorrupt(t *testing.T) {
	path := writeV6(t, map[string]string{"k": `{"id":"k","state":`})
	s, err := Open(path, nil)
	if err == nil {
		s.Close()
		t.Fatal("Open accepted a damaged key record")
	}
	if !errors.Is(err, storage.ErrCorrupt) {
		t.Errorf("Open = %v, want ErrCorrupt", err)
	}
}
