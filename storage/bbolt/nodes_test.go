package bbolt

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// TestMigrateToNodes: a database of schema version 3 (before nodes) opens
// with its entries intact and scoped to no node, and gains the nodes and
// join_tokens buckets.
func TestMigrateToNodes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v3.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	err = db.Update(func(tx *bolt.Tx) error {
		for v := range 3 {
			if err := migrations[v](tx); err != nil {
				return err
			}
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchemaVersion, []byte("3")); err != nil {
			return err
		}
		// An entry as version 3 wrote it: no "nodes" field.
		return tx.Bucket(bucketEntries).Put([]byte("e1"),
			[]byte(`{"id":"e1","spiffe_id":"spiffe://example.org/web","selectors":["unix:uid:1000"],"created_at":"2026-01-01T00:00:00Z","revision":1}`))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s, err := Open(path, nil)
	if err != nil {
		t.Fatalf("Open(v3): %v", err)
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
	e, err := s.GetEntry(t.Context(), "e1")
	if err != nil || e.Nodes != nil || !e.CreatedAt.Equal(created) {
		t.Errorf("entry after upgrade = %+v, %v; want it unchanged, with no nodes", e, err)
	}
	if ns, err := s.ListNodes(t.Context()); err != nil || len(ns) != 0 {
		t.Errorf("ListNodes after upgrade = %+v, %v", ns, err)
	}
}

// TestEvictionSurvivesRestart: an evicted node is evicted after a reopen,
// and the token it had is gone.
func TestEvictionSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "badge.db")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 24, 13, 0, 0, 0, time.UTC)
	ctx := t.Context()
	tok := storage.JoinToken{Hash: fmt.Sprintf("%064x", 1), Node: "web", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	pending := tok
	pending.Hash = fmt.Sprintf("%064x", 2)
	if err := s.CreateJoinToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ConsumeJoinToken(ctx, tok.Hash, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJoinToken(ctx, pending); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.EvictNode(ctx, "web", t0.Add(time.Minute), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, err := s.GetNode(ctx, "web")
	if err != nil || !n.Evicted() || n.EvictedBy != 7 {
		t.Errorf("node after reopen = %+v, %v; want evicted by uid 7", n, err)
	}
	if _, _, err := s.ConsumeJoinToken(ctx, pending.Hash, t0.Add(2*time.Minute)); err == nil {
		t.Error("the token made before the eviction works after a reopen")
	}
}
