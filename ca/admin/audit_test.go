package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/backup"
	"github.com/badge-dev/badge/storage"
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
	tok, err := s.client.CreateJoinToken(ctx, admin.JoinTokenRequest{Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.EvictNode(ctx, "ghost"); err == nil {
		t.Fatal("evicting an unknown node succeeded")
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
		"token.create web-1 ok",
		"node.evict ghost error",
	}
	if !slices.Equal(got, want) || page.More {
		t.Fatalf("audit trail =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := page.Records[1].Detail; !strings.Contains(d, `reason="key leaked"`) || !strings.Contains(d, "block=true") {
		t.Errorf("revocation detail = %q; want the reason and the block", d)
	}
	rep, err := s.client.VerifyAudit(ctx)
	for _, r := range page.Records {
		if strings.Contains(r.Detail, tok.Token) || strings.Contains(r.Target, tok.Token) {
			t.Errorf("record %d holds the join token", r.Seq)
		}
	}
	if err != nil || !rep.OK || rep.Records != 9 {
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
		var e struct{ Field string }
		if code != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Field != tc.field {
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

// TestBackupStalledClient opens a backup and never reads it: after the
// write timeout the server gives up, releases the read transaction, and
// records the failed backup.
func TestBackupStalledClient(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	// A database larger than the socket buffers of both ends.
	for i := range 4000 {
		if err := e.store.CreateEntry(ctx, storage.Entry{ID: fmt.Sprintf("pad%05d", i), SPIFFEID: "spiffe://example.org/pad/" + strings.Repeat("x", 200),
			Selectors: []string{fmt.Sprintf("unix:uid:%d", 100000+i)}, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	s := startServer(t, e.dir, admin.Config{Authority: e.auth, BackupWriteTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/backup HTTP/1.1\r\nHost: badge\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		page, err := s.client.AuditList(ctx, time.Time{}, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Records) == 1 {
			if r := page.Records[0]; r.Action != ca.AuditBackup || !strings.HasPrefix(r.Result, "error") {
				t.Fatalf("record of a stalled backup = %+v; want a failed backup", r)
			}
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("a backup whose client stopped reading did not end within 10s")
		}
	}
}

// FuzzParseAuditQuery: any query gives values within bounds or an
// *ca.InvalidError naming since, after or limit; never a panic.
func FuzzParseAuditQuery(f *testing.F) {
	for _, q := range []string{"", "since=2026-11-29T15:00:00Z&after=3&limit=10", "limit=0", "since=yesterday", "after=-1", "limit=99999999999999999999", "since=%zz"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		_, _, limit, err := admin.ParseAuditQuery(q)
		if err != nil {
			var inv *ca.InvalidError
			if !errors.As(err, &inv) || (inv.Field != "since" && inv.Field != "after" && inv.Field != "limit") {
				t.Fatalf("ParseAuditQuery(%q) = %v; want an InvalidError naming the parameter", raw, err)
			}
			return
		}
		if limit < 1 || limit > admin.MaxAuditPage {
			t.Fatalf("ParseAuditQuery(%q) limit %d out of bounds", raw, limit)
		}
	})
}
