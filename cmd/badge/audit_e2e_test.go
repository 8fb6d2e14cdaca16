package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// TestAuditE2E does admin actions through the CLI against a real daemon,
// reads them back with `badge audit list`, verifies the chain with `badge
// audit verify`, then stops the daemon, alters one record directly in the
// bbolt file, starts it again, and expects `audit verify` to fail naming
// that record.
func TestAuditE2E(t *testing.T) {
	d := startDaemon(t)
	id := d.createEntry("spiffe://example.org/api", "unix:uid:1001")
	d.mustBadge("revoke", "--id", "spiffe://example.org/api", "--block", "--reason", "key leaked")
	d.mustBadge("unblock", "--id", "spiffe://example.org/api")
	d.mustBadge("client", "create", "--id", "spiffe://example.org/batch")
	d.mustBadge("client", "delete", "spiffe://example.org/batch")
	if _, _, code := d.badge("entry", "delete", "no-such-entry"); code != 1 {
		t.Fatalf("deleting a missing entry: exit %d, want 1", code)
	}
	d.mustBadge("entry", "delete", id)

	var recs []storage.AuditRecord
	if err := json.Unmarshal([]byte(d.mustBadge("audit", "list", "--json")), &recs); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%d %s %s uid=%d %s", r.Seq, r.Action, r.Target, r.AdminUID, strings.SplitN(r.Result, ":", 2)[0]))
	}
	want := []string{
		"1 entry.create " + id + " uid=0 ok",
		"2 revoke.id spiffe://example.org/api uid=0 ok",
		"3 unblock spiffe://example.org/api uid=0 ok",
		"4 client.create spiffe://example.org/batch uid=0 ok",
		"5 client.delete spiffe://example.org/batch uid=0 ok",
		"6 entry.delete no-such-entry uid=0 error",
		"7 entry.delete " + id + " uid=0 ok",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit list:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	table := d.mustBadge("audit", "list")
	if !strings.Contains(table, "SEQ") || !strings.Contains(table, `reason="key leaked"`) {
		t.Errorf("audit list table lacks its header or the revocation reason:\n%s", table)
	}
	if out := d.mustBadge("audit", "list", "--since", "1h", "--json"); strings.Count(out, `"seq"`) != 7 {
		t.Errorf("audit list --since 1h shows %d records, want 7", strings.Count(out, `"seq"`))
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if out := d.mustBadge("audit", "list", "--since", future, "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("audit list --since %s = %s, want []", future, out)
	}
	if _, errOut, code := d.badge("audit", "list", "--since", "yesterday"); code != 2 || !strings.Contains(errOut, "--since") {
		t.Errorf("audit list --since yesterday: exit %d, %q; want a usage error naming --since", code, errOut)
	}
	if out := d.mustBadge("audit", "verify"); !strings.Contains(out, "audit trail verified: records 1 to 7") {
		t.Fatalf("audit verify = %q", out)
	}

	// Alter record 2 (the revocation's reason) in the file, as someone
	// with write access to the database but not the CA key would.
	d.signal(syscall.SIGTERM)
	db, err := bolt.Open(filepath.Join(d.dataDir, "badge.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		key := binary.BigEndian.AppendUint64(nil, 2)
		var r storage.AuditRecord
		if err := json.Unmarshal(b.Get(key), &r); err != nil {
			return err
		}
		r.Detail = strings.Replace(r.Detail, "key leaked", "routine rotation", 1)
		data, _ := json.Marshal(r)
		return b.Put(key, data)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	d.start()
	out, errOut, code := d.badge("audit", "verify")
	if code != 1 || !strings.Contains(errOut, "record 2 was altered") {
		t.Fatalf("audit verify after editing record 2: exit %d, stdout %q, stderr %q; want exit 1 naming record 2", code, out, errOut)
	}
	var rep struct {
		OK     bool   `json:"ok"`
		BadSeq uint64 `json:"bad_seq"`
	}
	out, _, _ = d.badge("audit", "verify", "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.OK || rep.BadSeq != 2 {
		t.Fatalf("audit verify --json = %s (%v); want ok false, bad_seq 2", out, err)
	}
}
