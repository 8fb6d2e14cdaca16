package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/badge-dev/badge/ca/admin"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// verifySVID parses what a workload received and checks it as a relying
// party would: key matches certificate, chain verifies against the bundle
// the workload got from FetchX509Bundles.
func verifySVID(t *testing.T, s workloadSVID, bundle [][]byte) *x509svid.SVID {
	t.Helper()
	svid, err := x509svid.ParseRaw(bytes.Join(s.Chain, nil), s.Key)
	if err != nil {
		t.Fatalf("X.509-SVID for %s does not parse (or key does not match): %v", s.ID, err)
	}
	var roots []*x509.Certificate
	for _, der := range bundle {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, c)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, roots)); err != nil {
		t.Fatalf("X.509-SVID for %s does not verify against the bundle: %v", s.ID, err)
	}
	return svid
}

func TestE2EIdentityPerUID(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/payments", "unix:uid:1001")
	d.createEntry("spiffe://example.org/orders", "unix:uid:1002", "unix:gid:1002")

	for _, tc := range []struct {
		uid, gid uint32
		want     string
	}{
		{1001, 1001, "spiffe://example.org/payments"},
		{1002, 1002, "spiffe://example.org/orders"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			before := time.Now()
			r := d.runWorkload(tc.uid, tc.gid, "fetch")
			if r.Error != "" {
				t.Fatalf("uid %d: %s: %s", tc.uid, r.Code, r.Error)
			}
			if len(r.SVIDs) != 1 || r.SVIDs[0].ID != tc.want {
				t.Fatalf("uid %d got %+v, want one SVID %s", tc.uid, ids(r), tc.want)
			}
			bundles := d.runWorkload(tc.uid, tc.gid, "bundles")
			if bundles.Error != "" {
				t.Fatalf("FetchX509Bundles: %s", bundles.Error)
			}
			svid := verifySVID(t, r.SVIDs[0], bundles.Bundle)
			leaf := svid.Certificates[0]
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got > 5*time.Minute+30*time.Second {
				t.Errorf("lifetime %s exceeds TTL 5m plus 30s backdating", got)
			}
			if leaf.NotAfter.After(r.At.Add(5 * time.Minute)) {
				t.Errorf("NotAfter %s is more than 5m after the fetch at %s", leaf.NotAfter, r.At)
			}
			if leaf.NotBefore.Before(before.Add(-30*time.Second - time.Second)) {
				t.Errorf("NotBefore %s is backdated by more than 30s", leaf.NotBefore)
			}
			if len(svid.Certificates) != 2 {
				t.Errorf("chain has %d certificates, want leaf + intermediate", len(svid.Certificates))
			}
		})
	}

	t.Run("no entry is PermissionDenied", func(t *testing.T) {
		r := d.runWorkload(1003, 1003, "fetch")
		if r.Code != "PermissionDenied" {
			t.Fatalf("uid 1003 without an entry: code %q (%s), want PermissionDenied", r.Code, r.Error)
		}
	})
	t.Run("missing header is InvalidArgument", func(t *testing.T) {
		r := d.runWorkload(1001, 1001, "noheader")
		if r.Code != "InvalidArgument" {
			t.Fatalf("call without workload.spiffe.io header: code %q (%s), want InvalidArgument", r.Code, r.Error)
		}
	})
}

func ids(r workloadResult) []string {
	var out []string
	for _, s := range r.SVIDs {
		out = append(out, s.ID)
	}
	return out
}

func TestE2ETwoEntriesOneCaller(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/first", "unix:uid:1001")
	d.createEntry("spiffe://example.org/second", "unix:uid:1001", "unix:gid:1001")
	r := d.runWorkload(1001, 1001, "fetch")
	if got, want := ids(r), []string{"spiffe://example.org/first", "spiffe://example.org/second"}; !slices.Equal(got, want) {
		t.Fatalf("got %v (%s), want %v with the oldest entry first", got, r.Error, want)
	}
	// An entry needs all of its selectors: gid 1002 does not get the second.
	r = d.runWorkload(1001, 1002, "fetch")
	if got, want := ids(r), []string{"spiffe://example.org/first"}; !slices.Equal(got, want) {
		t.Fatalf("uid 1001 gid 1002 got %v, want %v", got, want)
	}
}

func TestE2ERotationBeforeHalfLife(t *testing.T) {
	const ttl = 10 * time.Second
	d := startDaemon(t, "--svid-ttl", ttl.String(), "--max-svid-ttl", ttl.String())
	d.createEntry("spiffe://example.org/short", "unix:uid:1001")
	w := d.startStream(1001, 1001)
	first := w.next(t, 10*time.Second)
	if first.Error != "" {
		t.Fatalf("first update: %s", first.Error)
	}
	second := w.next(t, ttl/2+3*time.Second)
	if second.Error != "" {
		t.Fatalf("second update: %s", second.Error)
	}
	a := verifySVID(t, first.SVIDs[0], first.Bundle).Certificates[0]
	b := verifySVID(t, second.SVIDs[0], second.Bundle).Certificates[0]
	if a.SerialNumber.Cmp(b.SerialNumber) == 0 {
		t.Fatal("rotation delivered the same serial")
	}
	if gap := second.At.Sub(first.At); gap > ttl/2+500*time.Millisecond {
		t.Fatalf("fresh SVID arrived %s after the first, later than half-life %s plus margin", gap, ttl/2)
	}
	if time.Now().After(a.NotAfter) {
		t.Fatal("first SVID expired before the rotation was observed")
	}
}

func TestE2EStreamPushOnEntryChange(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/base", "unix:uid:1001")
	w := d.startStream(1001, 1001)
	if r := w.next(t, 10*time.Second); len(r.SVIDs) != 1 {
		t.Fatalf("first update %v %s", ids(r), r.Error)
	}
	start := time.Now()
	id := d.createEntry("spiffe://example.org/added", "unix:uid:1001", "unix:gid:1001")
	r := w.next(t, 2*time.Second)
	if got := ids(r); !slices.Equal(got, []string{"spiffe://example.org/base", "spiffe://example.org/added"}) {
		t.Fatalf("after create got %v", got)
	}
	t.Logf("new entry reached the open stream %s after the create command started", r.At.Sub(start))
	d.mustBadge("entry", "delete", id)
	if r := w.next(t, 2*time.Second); !slices.Equal(ids(r), []string{"spiffe://example.org/base"}) {
		t.Fatalf("after delete got %v", ids(r))
	}
}

func TestE2ERestartKeepsEntriesAndBundle(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/a", "unix:uid:1001")
	d.createEntry("spiffe://example.org/b", "unix:uid:1002", "unix:path:/usr/bin/true")
	listBefore := d.mustBadge("entry", "list", "--json")
	bundleBefore := d.mustBadge("bundle", "show")
	if again := d.mustBadge("entry", "list", "--json"); again != listBefore {
		t.Fatal("entry list --json differs between two calls on the same state")
	}
	d.restart()
	if got := d.mustBadge("entry", "list", "--json"); got != listBefore {
		t.Fatalf("entries changed across restart:\nbefore %s\nafter  %s", listBefore, got)
	}
	if got := d.mustBadge("bundle", "show"); got != bundleBefore {
		t.Fatal("trust bundle changed across restart")
	}
	r := d.runWorkload(1001, 1001, "fetch")
	if len(r.SVIDs) != 1 {
		t.Fatalf("after restart: %v %s", ids(r), r.Error)
	}
	verifySVID(t, r.SVIDs[0], pemBundle(t, bundleBefore))
}

func pemBundle(t *testing.T, s string) [][]byte {
	t.Helper()
	var out [][]byte
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		out = append(out, b.Bytes)
	}
	if len(out) == 0 {
		t.Fatalf("no certificate in bundle %q", s)
	}
	return out
}

// TestE2ESIGKILLLosesNoEntry kills the daemon while workloads fetch and
// entries are being created, and checks that every entry whose creation was
// acknowledged is there after the restart.
func TestE2ESIGKILLLosesNoEntry(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/load", "unix:uid:1001")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				cmd := d.workloadCmd(1001, 1001, "fetch")
				cmd.Run()
			}
		}()
	}
	var acked []string
	for i := range 200 {
		out, _, code := d.badge("entry", "create", "--id", fmt.Sprintf("spiffe://example.org/kill/%d", i), "--selector", fmt.Sprintf("unix:uid:%d", 20000+i))
		if code != 0 {
			break
		}
		acked = append(acked, strings.TrimSpace(out))
		if i == 100 {
			d.cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	close(stop)
	wg.Wait()
	d.signal(syscall.SIGKILL)
	if len(acked) < 100 {
		t.Fatalf("only %d entries created before the kill", len(acked))
	}
	d.start()
	var es []admin.Entry
	if err := json.Unmarshal([]byte(d.mustBadge("entry", "list", "--json")), &es); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range es {
		have[e.ID] = true
	}
	for _, id := range acked {
		if !have[id] {
			t.Errorf("entry %s was acknowledged before SIGKILL but is gone after restart", id)
		}
	}
	if r := d.runWorkload(1001, 1001, "fetch"); len(r.SVIDs) != 1 {
		t.Fatalf("after SIGKILL and restart: %v %s", ids(r), r.Error)
	}
}

func TestE2EAdminSocketRefusesOtherUIDs(t *testing.T) {
	d := startDaemon(t)
	cmd := exec.Command(testBinary, "entry", "list", "--admin-socket", d.admin)
	cmd.Env = []string{"BADGE_E2E_ROLE=badge", noRaceExitPause}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1001, Gid: 1001}}
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	err := cmd.Run()
	if code := exitCode(err); code != exitFailure {
		t.Fatalf("badge entry list as uid 1001: exit %d, want %d (stderr %q)", code, exitFailure, errOut.String())
	}
	if !strings.Contains(errOut.String(), "admin socket") {
		t.Fatalf("error %q does not name the admin socket", errOut.String())
	}
	fi, err := os.Stat(d.admin)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestE2EBadInput(t *testing.T) {
	d := startDaemon(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // a fragment of the one-line cause
	}{
		{"malformed id", []string{"entry", "create", "--id", "spiffe://example.org/a//b", "--selector", "unix:uid:1"}, exitFailure, "spiffe_id"},
		{"not a spiffe id", []string{"entry", "create", "--id", "https://example.org/a", "--selector", "unix:uid:1"}, exitFailure, "spiffe_id"},
		{"wrong trust domain", []string{"entry", "create", "--id", "spiffe://other.org/a", "--selector", "unix:uid:1"}, exitFailure, "not in trust domain example.org"},
		{"trust domain only", []string{"entry", "create", "--id", "spiffe://example.org", "--selector", "unix:uid:1"}, exitFailure, "needs a path"},
		{"unknown selector type", []string{"entry", "create", "--id", "spiffe://example.org/a", "--selector", "k8s:ns:default"}, exitFailure, "selector"},
		{"bad uid", []string{"entry", "create", "--id", "spiffe://example.org/a", "--selector", "unix:uid:abc"}, exitFailure, "selector"},
		{"relative path", []string{"entry", "create", "--id", "spiffe://example.org/a", "--selector", "unix:path:bin/x"}, exitFailure, "selector"},
		{"negative ttl", []string{"entry", "create", "--id", "spiffe://example.org/a", "--selector", "unix:uid:1", "--ttl", "-1m"}, exitUsage, "-ttl: must be positive"},
		{"zero ttl", []string{"entry", "create", "--id", "spiffe://example.org/a", "--selector", "unix:uid:1", "--ttl", "0s"}, exitUsage, "-ttl: must be positive"},
		{"oversized ttl", []string{"entry", "create", "--id", "spiffe://example.org/a", "--selector", "unix:uid:1", "--ttl", "1h"}, exitFailure, "exceeds the server's maximum"},
		{"bad dns", []string{"entry", "create", "--id", "spiffe://example.org/a", "--selector", "unix:uid:1", "--dns", "a_b.example"}, exitFailure, "dns_name"},
		{"no selector", []string{"entry", "create", "--id", "spiffe://example.org/a"}, exitUsage, "--selector"},
		{"no id", []string{"entry", "create", "--selector", "unix:uid:1"}, exitUsage, "--id"},
		{"unknown flag", []string{"entry", "create", "--frobnicate"}, exitUsage, "frobnicate"},
		{"unknown entry", []string{"entry", "show", "0123456789abcdef"}, exitFailure, "not found"},
		{"unknown command", []string{"entry", "explode"}, exitUsage, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := d.badge(tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tc.code, errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Fatalf("stderr %q does not name the problem (%q)", errOut, tc.want)
			}
			if lines := strings.Count(strings.TrimSpace(errOut), "\n"); code == exitFailure && lines > 0 {
				t.Fatalf("cause is not one line: %q", errOut)
			}
		})
	}
	// The daemon kept serving through all of it, and stored nothing.
	if _, errOut, code := d.badge("healthcheck"); code != 0 {
		t.Fatalf("healthcheck after bad input: exit %d: %s", code, errOut)
	}
	if got := strings.TrimSpace(d.mustBadge("entry", "list", "--json")); got != "[]" {
		t.Fatalf("bad requests stored entries: %s", got)
	}
}

func TestE2EBadServerConfig(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	for _, tc := range []struct {
		name   string
		config string
		args   []string
		want   string
	}{
		{"unknown key", `trust-domian = "example.org"`, nil, `bad.toml:1: trust-domian: unknown setting; did you mean 'trust-domain'?`},
		{"bad duration", `svid-ttl = "five minutes"`, nil, "svid-ttl"},
		{"bad toml", `trust-domain = `, nil, "bad.toml"},
		{"ttl over max", `svid-ttl = "10m"`, nil, "exceeds the maximum"},
		{"bad trust domain", "", []string{"--trust-domain", "Example.org!"}, "trust-domain"},
		{"relative socket", "", []string{"--socket", "rel.sock"}, "absolute"},
		{"bad log level", "", []string{"--log-level", "loud"}, "log-level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"server", "--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "w.sock"), "--admin-socket", filepath.Join(dir, "a.sock")}
			if tc.config != "" {
				if err := os.WriteFile(bad, []byte(tc.config), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", bad)
			}
			args = append(args, tc.args...)
			cmd := exec.Command(testBinary, args...)
			cmd.Env = []string{"BADGE_E2E_ROLE=badge", noRaceExitPause}
			var errOut bytes.Buffer
			cmd.Stderr = &errOut
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if exitCode(err) == 0 {
					t.Fatal("server started with a bad configuration")
				}
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				t.Fatal("server kept running with a bad configuration")
			}
			if !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("stderr %q does not name the problem (%q)", errOut.String(), tc.want)
			}
		})
	}
}

func TestE2ESVIDFetchWrite(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/root-workload", "unix:uid:0")
	dir := filepath.Join(t.TempDir(), "out")
	d.mustBadge("svid", "fetch", "--write", dir)
	for name, mode := range map[string]os.FileMode{"svid.pem": 0o644, "svid_key.pem": 0o600, "svid_bundle.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	svid, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := x509bundle.Load(td, filepath.Join(dir, "svid_bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, b); err != nil {
		t.Fatalf("written SVID does not verify against the written bundle: %v", err)
	}
	if svid.ID.String() != "spiffe://example.org/root-workload" {
		t.Fatalf("wrote %s", svid.ID)
	}
	var got []svidJSON
	if err := json.Unmarshal([]byte(d.mustBadge("svid", "fetch", "--json")), &got); err != nil || len(got) != 1 {
		t.Fatalf("svid fetch --json: %v %v", got, err)
	}
}

func TestE2EHealthcheck(t *testing.T) {
	d := startDaemon(t)
	if out, errOut, code := d.badge("healthcheck"); code != 0 || strings.TrimSpace(out) != "ok" {
		t.Fatalf("healthcheck of a running server: exit %d %q %q", code, out, errOut)
	}
	d.signal(syscall.SIGTERM)
	if _, errOut, code := d.badge("healthcheck"); code != exitFailure {
		t.Fatalf("healthcheck of a stopped server: exit %d, want %d (%s)", code, exitFailure, errOut)
	}
}

// exitCode is the exit status of a finished command (0 for a nil error).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
