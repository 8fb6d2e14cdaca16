package main

import (
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/badge-dev/badge/ca/admin"
)

// TestBackupRestoreE2E takes `badge backup` from a real daemon while
// workloads fetch SVIDs and an admin creates entries, restores it with
// `badge restore` into a new data dir, starts a second daemon on it, and
// checks that it serves the same entries, revocations and bundle, and
// that a workload's SVID from it verifies against the first daemon's
// bundle: the keys came along.
func TestBackupRestoreE2E(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/web", "unix:uid:1001")
	d.createEntry("spiffe://example.org/db", "unix:uid:1002")
	d.mustBadge("revoke", "--id", "spiffe://example.org/db", "--block", "--reason", "retired")
	d.mustBadge("client", "create", "--id", "spiffe://example.org/batch")
	if r := d.runWorkload(1001, 1001, "fetch"); r.Error != "" {
		t.Fatalf("fetch before the backup: %s", r.Error)
	}
	var before []admin.Entry
	json.Unmarshal([]byte(d.mustBadge("entry", "list", "--json")), &before)

	// Load: SVID fetches as uid 1001 and entry writes, during the backup.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var fetches, writes atomic.Int64
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := d.workloadCmd(1001, 1001, "fetch").Run(); err == nil {
				fetches.Add(1)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, code := d.badge("entry", "create", "--id", "spiffe://example.org/load", "--selector", "unix:uid:"+strconv.Itoa(2000+i)); code == 0 {
				writes.Add(1)
			}
		}
	}()
	waitFor(t, func() bool { return fetches.Load() > 0 && writes.Load() > 2 })
	out := filepath.Join(d.dir, "badge.backup")
	res := d.mustBadge("backup", "--out", out)
	close(stop)
	wg.Wait()
	t.Logf("backup under load (%d fetches, %d entry writes): %s", fetches.Load(), writes.Load(), res)
	if !strings.Contains(res, "key files") || !strings.Contains(res, "keep it as secret") {
		t.Errorf("backup says %q", res)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want 0600", err, fi.Mode())
	}
	if _, errOut, code := d.badge("backup", "--out", out); code != 1 || !strings.Contains(errOut, "exists") {
		t.Errorf("backup over an existing file: exit %d, %q; want it refused", code, errOut)
	}

	// Restore into a new data dir and serve it.
	dir := worldReadableTempDir(t)
	d2 := &daemon{t: t, dir: dir, dataDir: filepath.Join(dir, "data"),
		socket: filepath.Join(dir, "sock", "workload.sock"), admin: filepath.Join(dir, "sock", "admin.sock")}
	restored := d2.mustBadge("restore", "--from", out, "--data-dir", d2.dataDir)
	t.Logf("restore: %s", restored)
	if _, errOut, code := d2.badge("restore", "--from", out, "--data-dir", d2.dataDir); code != 1 || !strings.Contains(errOut, "not empty") {
		t.Errorf("restore over a data dir: exit %d, %q; want it refused", code, errOut)
	}
	d2.start()
	t.Cleanup(d2.stop)

	if b1, b2 := d.mustBadge("bundle", "show"), d2.mustBadge("bundle", "show"); b1 != b2 {
		t.Errorf("restored bundle differs:\n%s\nwant\n%s", b2, b1)
	}
	var after, now []admin.Entry
	json.Unmarshal([]byte(d2.mustBadge("entry", "list", "--json")), &after)
	json.Unmarshal([]byte(d.mustBadge("entry", "list", "--json")), &now)
	// The restored entries are the first ones: everything created before
	// the backup, and a prefix of the entries written during it.
	if len(after) < len(before) || len(after) > len(now) || !slices.EqualFunc(after, now[:len(after)], sameAdminEntry) {
		t.Errorf("restored %d entries; want the first %d to %d of the server's, unchanged", len(after), len(before), len(now))
	}
	// The same revoked IDs. The backup also holds the serials the running
	// server had reserved but not bound yet: the restored server, like any
	// server after an unclean stop, revokes them, since certificates with
	// them may exist; nothing else is revoked anew.
	var r1, r2 admin.Revocations
	json.Unmarshal([]byte(d.mustBadge("revocations", "list", "--json")), &r1)
	json.Unmarshal([]byte(d2.mustBadge("revocations", "list", "--json")), &r2)
	if !reflect.DeepEqual(r1.IDs, r2.IDs) {
		t.Errorf("restored revoked IDs %+v; want %+v", r2.IDs, r1.IDs)
	}
	for _, s := range r2.Serials {
		if s.SPIFFEID != "" || !strings.Contains(s.Reason, "never bound") {
			t.Errorf("restored server revoked %+v; want only unbound reservations", s)
		}
	}
	if c1, c2 := d.mustBadge("client", "list", "--json"), d2.mustBadge("client", "list", "--json"); c1 != c2 {
		t.Errorf("restored clients:\n%s\nwant\n%s", c2, c1)
	}
	if out := d2.mustBadge("audit", "verify"); !strings.Contains(out, "verified") {
		t.Errorf("audit verify on the restored server: %s", out)
	}
	// An SVID from the restored server chains to the first server's roots.
	r := d2.runWorkload(1001, 1001, "fetch")
	if r.Error != "" || len(r.SVIDs) == 0 {
		t.Fatalf("fetch from the restored server: %+v", r)
	}
	roots := x509.NewCertPool()
	for _, der := range d.runWorkload(1001, 1001, "fetch").Bundle {
		c, _ := x509.ParseCertificate(der)
		roots.AddCert(c)
	}
	leaf, err := x509.ParseCertificate(r.SVIDs[0].Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range r.SVIDs[0].Chain[1:] {
		c, _ := x509.ParseCertificate(der)
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("SVID of the restored server does not verify with the original bundle: %v", err)
	}
	// The blocked ID is still blocked.
	if r := d2.runWorkload(1002, 1002, "fetch"); r.Code != "PermissionDenied" {
		t.Errorf("blocked ID on the restored server: %+v; want PermissionDenied", r)
	}
}

// TestRestoreRefusesDamage restores a truncated and an altered backup:
// both are refused, naming the problem, and leave no data dir behind.
func TestRestoreRefusesDamage(t *testing.T) {
	d := startDaemon(t)
	out := filepath.Join(d.dir, "badge.backup")
	d.mustBadge("backup", "--out", out)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	altered := slices.Clone(data)
	altered[4096] ^= 0xff // inside badge.db, past its tar and PAX headers
	for _, tc := range []struct {
		name string
		data []byte
		says string
	}{
		{"truncated", data[:len(data)/2], "truncated"},
		{"altered", altered, `"badge.db" does not match the manifest`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(d.dir, tc.name+".backup")
			if err := os.WriteFile(file, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(d.dir, "restore-"+tc.name)
			_, errOut, code := d.badge("restore", "--from", file, "--data-dir", target)
			if code != 1 || !strings.Contains(errOut, tc.says) {
				t.Fatalf("restore of a %s backup: exit %d, %q; want exit 1 saying %q", tc.name, code, errOut, tc.says)
			}
			if _, err := os.Stat(target); !os.IsNotExist(err) {
				t.Errorf("a refused restore left %s behind (%v)", target, err)
			}
		})
	}
}

func sameAdminEntry(a, b admin.Entry) bool {
	return a.ID == b.ID && a.SPIFFEID == b.SPIFFEID && slices.Equal(a.Selectors, b.Selectors) && a.Revision == b.Revision && a.CreatedAt.Equal(b.CreatedAt)
}

// waitFor polls cond (counters with no event to wait on) every 10ms, for
// up to 20s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("condition not met within 20s")
		}
	}
}
