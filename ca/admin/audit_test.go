package admin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/backup"
)

// TestAuditTrail does every kind of admin action through the API, one of
// them failing, and checks that each is in the trail with the admin's
// uid, target and result, and that the trail verifies.
func TestAuditTrail(t *testing.T) {
	ctx := context.Background()
	_, s := newServer(t)
	ent, err := s.client.CreateEntry(ctx, admin.EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Revoke(ctx, admin.RevokeRequest{SPIFFEID: "spiffe://example.org/api", Block: true, Reason: "key leaked"}); err != nil {
		t.Fatal(err)
	}
	if err := s.client.Unblock(ctx, "spiffe://example.org/api"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Revoke(ctx, admin.RevokeRequest{Serial: "abcdef"}); err == nil {
		t.Fatal("revoking an unknown serial succeeded")
	}
	if _, err := s.client.CreateOAuthClient(ctx, "spiffe://example.org/batch"); err != nil {
		t.Fatal(err)
	}
	if err := s.client.DeleteOAuthClient(ctx, "spiffe://example.org/batch"); err != nil {
		t.Fatal(err)
	}
	if err := s.client.DeleteEntry(ctx, ent.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.ListEntries(ctx); err != nil { // reads are not recorded
		t.Fatal(err)
	}
	page, err := s.client.AuditList(ctx, time.Time{}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	uid := uint32(os.Geteuid())
	var got []string
	for _, r := range page.Records {
		if r.AdminUID != uid {
			t.Errorf("record %d has admin uid %d, want %d", r.Seq, r.AdminUID, uid)
		}
		got = append(got, fmt.Sprintf("%s %s %s", r.Action, r.Target, strings.SplitN(r.Result, ":", 2)[0]))
	}
	want := []string{
		"entry.create " + ent.ID + " ok",
		"revoke.id spiffe://example.org/api ok",
		"unblock spiffe://example.org/api ok",
		"revoke.serial abcdef error",
		"client.create spiffe://example.org/batch ok",
		"client.delete spiffe://example.org/batch ok",
		"entry.delete " + ent.ID + " ok",
	}
	if !slices.Equal(got, want) || page.More {
		t.Fatalf("audit trail =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := page.Records[1].Detail; !strings.Contains(d, `reason="key leaked"`) || !strings.Contains(d, "block=true") {
		t.Errorf("revocation detail = %q; want the reason and the block", d)
	}
	rep, err := s.client.VerifyAudit(ctx)
	if err != nil || !rep.OK || rep.Records != 7 {
		t.Fatalf("VerifyAudit = %+v, %v; want ok with 7 records", rep, err)
	}
	// Paging.
	page, err = s.client.AuditList(ctx, time.Time{}, 5, 1)
	if err != nil || len(page.Records) != 1 || page.Records[0].Seq != 6 || !page.More {
		t.Fatalf("AuditList(after 5, limit 1) = %+v, %v", page, err)
	}
}

func TestAuditQueryErrors(t *testing.T) {
	_, s := newServer(t)
	for _, tc := range []struct{ query, field string }{
		{"since=yesterday", "since"},
		{"after=-1", "after"},
		{"limit=0", "limit"},
		{"limit=10001", "limit"},
	} {
		code, body := s.raw(t, http.MethodGet, "/v1/audit?"+tc.query, nil)
		if code != http.StatusBadRequest || !bytes.Contains(body, []byte(`"field":"`+tc.field+`"`)) {
			t.Errorf("GET /v1/audit?%s = %d %s; want 400 naming %s", tc.query, code, body, tc.field)
		}
	}
}

// TestBackupStream takes a backup through the API and checks the archive:
// the database and every key file, a manifest that matches, and the
// backup itself in the audit trail.
func TestBackupStream(t *testing.T) {
	ctx := context.Background()
	_, s := newServer(t)
	var buf bytes.Buffer
	if _, err := s.client.Backup(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	var names []string
	m, err := backup.Read(bytes.NewReader(buf.Bytes()), func(f backup.File, r io.Reader) error {
		names = append(names, f.Name)
		return nil
	})
	if err != nil {
		t.Fatalf("backup.Read: %v", err)
	}
	if m.TrustDomain != "example.org" || len(names) < 4 || names[0] != backup.DBName {
		t.Fatalf("backup holds %v (trust domain %q); want the database and the root, intermediate and JWT keys", names, m.TrustDomain)
	}
	page, err := s.client.AuditList(ctx, time.Time{}, 0, 0)
	if err != nil || len(page.Records) != 1 || page.Records[0].Action != ca.AuditBackup || page.Records[0].Result != "ok" {
		t.Fatalf("audit after a backup = %+v, %v; want one backup record", page.Records, err)
	}
}

func TestAuditNotImplemented(t *testing.T) {
	e := newEnv(t)
	s := startServer(t, e.dir, admin.Config{Authority: struct{ admin.Authority }{e.auth}})
	var ae *admin.Error
	if _, err := s.client.AuditList(context.Background(), time.Time{}, 0, 0); !errors.As(err, &ae) || ae.Status != http.StatusNotImplemented {
		t.Errorf("AuditList without an audit trail = %v; want 501", err)
	}
	if _, err := s.client.Backup(context.Background(), io.Discard); !errors.As(err, &ae) || ae.Status != http.StatusNotImplemented {
		t.Errorf("Backup without support = %v; want 501", err)
	}
}
