package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage/etcd/etcdtest"
)

// TestE2EEtcdStorage: the real server on --storage etcd://, against an
// etcd member started by the test: an entry created through the admin
// socket gives a workload its SVID, and after a restart of the server the
// entry, the CA and issuance are all still there. The data directory holds
// the key files and the replica id, never a database file.
func TestE2EEtcdStorage(t *testing.T) {
	requireRoot(t)
	srv := etcdtest.Start(t, nil)
	d := startDaemon(t, "--storage", "etcd://"+srv.Endpoint, "--root-kek", writeKEK(t, t.TempDir()))
	// The leader compacts etcd's history, every 5 minutes by default.
	if logs := d.logs(); !strings.Contains(logs, "compact_interval=5m0s") {
		t.Errorf("the server's log does not say it compacts etcd every 5m (compact_interval=5m0s):\n%s", logs)
	}
	d.createEntry("spiffe://example.org/payments", "unix:uid:1001")
	fetch := func() workloadResult {
		t.Helper()
		r := d.runWorkload(1001, 1001, "fetch")
		if r.Error != "" {
			t.Fatalf("fetch: %s: %s", r.Code, r.Error)
		}
		if len(r.SVIDs) != 1 || r.SVIDs[0].ID != "spiffe://example.org/payments" {
			t.Fatalf("fetch got %+v, want one SVID spiffe://example.org/payments", ids(r))
		}
		b := d.runWorkload(1001, 1001, "bundles")
		if b.Error != "" {
			t.Fatalf("bundles: %s", b.Error)
		}
		verifySVID(t, r.SVIDs[0], b.Bundle)
		return b
	}
	before := fetch()

	d.restart()
	if out := d.mustBadge("entry", "list"); !strings.Contains(out, "spiffe://example.org/payments") {
		t.Fatalf("entry list after restart:\n%s\nwant the entry kept in etcd", out)
	}
	after := fetch()
	if len(before.Bundle) == 0 || !bytes.Equal(before.Bundle[0], after.Bundle[0]) {
		t.Errorf("the root CA changed across the restart")
	}
	if _, err := os.Stat(filepath.Join(d.dataDir, "badge.db")); !os.IsNotExist(err) {
		t.Errorf("data dir has badge.db (%v); with etcd the state is there, not here", err)
	}
	if id, err := os.ReadFile(filepath.Join(d.dataDir, "replica-id")); err != nil || len(bytes.TrimSpace(id)) == 0 {
		t.Errorf("replica-id: %q, %v; want the server's replica id", id, err)
	}
}

// writeKEK writes a root key-encryption key file (32 random bytes, mode
// 0600) under dir and returns its path: the one file every server of an
// etcd store is given.
func writeKEK(t *testing.T, dir string) string {
	t.Helper()
	kek := make([]byte, 32)
	rand.Read(kek)
	path := filepath.Join(dir, "root.kek")
	if err := os.WriteFile(path, kek, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// etcdReplica starts another server on the etcd store: its own data dir
// and replica id, the shared key-encryption key, and args.
func etcdReplica(t *testing.T, args ...string) *daemon {
	t.Helper()
	dir := worldReadableTempDir(t)
	d := &daemon{t: t, dir: dir, dataDir: filepath.Join(dir, "data"),
		socket: filepath.Join(dir, "sock", "workload.sock"), admin: filepath.Join(dir, "sock", "admin.sock"),
		args: args}
	d.start()
	t.Cleanup(d.stop)
	return d
}

// TestE2EEtcdReplicaSeesEntry: two servers share one etcd. An entry
// created through server A reaches a workload waiting on server B's
// socket within 200 ms, through B's watch on etcd.
func TestE2EEtcdReplicaSeesEntry(t *testing.T) {
	requireRoot(t)
	srv := etcdtest.Start(t, nil)
	args := []string{"--storage", "etcd://" + srv.Endpoint, "--root-kek", writeKEK(t, t.TempDir())}
	a := startDaemon(t, args...)
	a.createEntry("spiffe://example.org/base", "unix:uid:1001")
	b := etcdReplica(t, args...)

	w := b.startStream(1001, 1001)
	if r := w.next(t, 10*time.Second); len(r.SVIDs) != 1 || r.SVIDs[0].ID != "spiffe://example.org/base" {
		t.Fatalf("first update on B: %v %s", ids(r), r.Error)
	}
	a.createEntry("spiffe://example.org/added", "unix:uid:1001", "unix:gid:1001")
	created := time.Now()
	r := w.next(t, 5*time.Second)
	if got := ids(r); !slices.Equal(got, []string{"spiffe://example.org/base", "spiffe://example.org/added"}) {
		t.Fatalf("B's stream after the create on A got %v", got)
	}
	lag := r.At.Sub(created)
	t.Logf("entry created on A reached B's stream %s after the create returned", lag)
	if lag > 200*time.Millisecond {
		t.Errorf("entry created on A reached B's stream %s after the create returned, want within 200ms", lag)
	}
	if out := b.mustBadge("entry", "list"); !strings.Contains(out, "spiffe://example.org/added") {
		t.Errorf("B's entry list lacks the entry created on A:\n%s", out)
	}
}
