package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	d := startDaemon(t, "--storage", "etcd://"+srv.Endpoint)
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
