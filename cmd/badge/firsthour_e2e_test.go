package main

// End-to-end tests of what a newcomer meets in the README's quick start:
// the example client, the messages of a refused workload, openssl on the
// written files, and the admin's input mistakes.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runAs runs bin with args as uid (gid = uid) with exactly the environment
// env, and returns stdout, stderr, the exit code and the process's pid.
func runAs(t *testing.T, uid uint32, env []string, bin string, args ...string) (string, string, int, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v as uid %d did not finish within 30s", bin, args, uid)
	}
	if err != nil && exitCode(err) < 0 {
		t.Fatalf("%s %v as uid %d: %v", bin, args, uid, err)
	}
	return out.String(), errOut.String(), exitCode(err), cmd.Process.Pid
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// TestE2EWhoamiExample builds the README's example client and runs it as
// other uids against the real daemon: it prints its SPIFFE ID, and without
// an entry or without SPIFFE_ENDPOINT_SOCKET it says why instead of
// waiting forever.
func TestE2EWhoamiExample(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is needed to build the example")
	}
	d := startDaemon(t)
	dir := worldReadableTempDir(t)
	build := exec.Command(goTool, "build", "-o", dir+"/", "./sdk/examples/whoami")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	whoami := filepath.Join(dir, "whoami")
	d.createEntry("spiffe://example.org/payments", "unix:uid:1001")
	endpoint := "SPIFFE_ENDPOINT_SOCKET=unix://" + d.socket

	out, errOut, code, _ := runAs(t, 1001, []string{endpoint}, whoami)
	if code != 0 || out != "spiffe://example.org/payments\n" {
		t.Fatalf("whoami as uid 1001: exit %d, stdout %q, stderr %q; want spiffe://example.org/payments", code, out, errOut)
	}

	_, errOut, code, pid := runAs(t, 1003, []string{endpoint}, whoami, "-timeout", "2s")
	want := fmt.Sprintf("whoami: no X.509-SVID from unix://%s within 2s: no identity issued: no registration entry matches the caller "+
		"(pid %d, uid 1003, gid 1003); an admin registers one with: badge entry create --id SPIFFE_ID --selector unix:uid:1003", d.socket, pid)
	if code != 1 || firstLine(errOut) != want {
		t.Fatalf("whoami as uid 1003 (no entry): exit %d, stderr:\n%s\nwant exit 1 and:\n%s", code, errOut, want)
	}

	_, errOut, code, _ = runAs(t, 1001, []string{"PATH=/usr/bin:/bin"}, whoami)
	want = "whoami: SPIFFE_ENDPOINT_SOCKET is not set: set it to badge's Workload API socket, e.g. SPIFFE_ENDPOINT_SOCKET=unix:///run/badge/workload.sock"
	if code != 1 || firstLine(errOut) != want {
		t.Fatalf("whoami without SPIFFE_ENDPOINT_SOCKET: exit %d, stderr:\n%s\nwant exit 1 and:\n%s", code, errOut, want)
	}
}

// TestE2ESVIDFetchRefusals: `badge svid fetch` as a uid tells a caller with
// no entry from a caller whose ID is blocked, and the server's log says
// which, once per uid per minute.
func TestE2ESVIDFetchRefusals(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/payments", "unix:uid:1001")
	d.mustBadge("revoke", "--id", "spiffe://example.org/payments", "--block")
	env := []string{"BADGE_E2E_ROLE=badge", noRaceExitPause, "SPIFFE_ENDPOINT_SOCKET=unix://" + d.socket}
	for _, tc := range []struct {
		uid    uint32
		want   string // %d: the pid
		logged string
	}{
		{1001, "badge svid fetch: no identity issued: the caller (pid %d, uid 1001, gid 1001) matches only blocked IDs: spiffe://example.org/payments; " +
			"an admin lifts a block with: badge unblock --id spiffe://example.org/payments",
			"uid=1001 gid=1001 reason=blocked spiffe_id=spiffe://example.org/payments suppressed=0"},
		{1002, "badge svid fetch: no identity issued: no registration entry matches the caller (pid %d, uid 1002, gid 1002); " +
			"an admin registers one with: badge entry create --id SPIFFE_ID --selector unix:uid:1002",
			`uid=1002 gid=1002 reason="not registered" suppressed=0`},
	} {
		for range 2 {
			_, errOut, code, pid := runAs(t, tc.uid, env, testBinary, "svid", "fetch")
			if want := fmt.Sprintf(tc.want, pid); code != exitFailure || errOut != want+"\n" {
				t.Errorf("svid fetch as uid %d: exit %d, stderr:\n%s\nwant exit 1 and:\n%s", tc.uid, code, errOut, want)
			}
		}
		var lines []string
		for _, l := range strings.Split(d.logs(), "\n") {
			if strings.Contains(l, "Workload API caller refused") && strings.Contains(l, fmt.Sprintf("uid=%d ", tc.uid)) {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 || !strings.Contains(lines[0], tc.logged) {
			t.Errorf("two refusals of uid %d logged %d lines, want one with %q:\n%s", tc.uid, len(lines), tc.logged, strings.Join(lines, "\n"))
		}
	}
}

// TestE2EOpensslVerifiesWrittenSVID: the README's openssl command verifies
// the files `svid fetch --write` writes (the intermediate is in svid.pem).
func TestE2EOpensslVerifiesWrittenSVID(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/root-workload", "unix:uid:0")
	dir := t.TempDir()
	d.mustBadge("svid", "fetch", "--write", dir)
	cmd := exec.Command(openssl, "verify", "-CAfile", "svid_bundle.pem", "-untrusted", "svid.pem", "svid.pem")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "svid.pem: OK" {
		t.Fatalf("openssl verify -CAfile svid_bundle.pem -untrusted svid.pem svid.pem: %v\n%s", err, out)
	}
}

// TestE2EAdminInputMessages: the admin's input mistakes get one sentence
// naming the input as given and what to check.
func TestE2EAdminInputMessages(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // all of stderr
	}{
		{"unknown serial with a leading zero", []string{"revoke", "--serial", "0123abcdef"}, exitFailure,
			"badge revoke: no unexpired certificate with serial 0123abcdef was issued by this authority: " +
				"check the serial (openssl x509 -noout -serial -in svid.pem); an expired certificate needs no revocation\n"},
		{"bad uid selector", []string{"entry", "create", "--id", "spiffe://example.org/a", "--selector", "unix:uid:abc"}, exitFailure,
			"badge entry create: invalid selector \"unix:uid:abc\": unix:uid: want a decimal number from 0 to 4294967294 without sign or leading zeros\n"},
		{"selector without type", []string{"entry", "create", "--id", "spiffe://example.org/a", "--selector", "1001"}, exitFailure,
			"badge entry create: invalid selector \"1001\": want TYPE:KEY:VALUE, found no ':'\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := d.badge(tc.args...)
			if code != tc.code || errOut != tc.want {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and:\n%s", code, errOut, tc.code, tc.want)
			}
		})
	}

	// A serial as openssl prints it (upper case, a leading zero) revokes.
	d.createEntry("spiffe://example.org/root-workload", "unix:uid:0")
	var svids []svidJSON
	if err := json.Unmarshal([]byte(d.mustBadge("svid", "fetch", "--json")), &svids); err != nil || len(svids) != 1 {
		t.Fatalf("svid fetch --json: %v %v", svids, err)
	}
	if out := d.mustBadge("revoke", "--serial", "00"+strings.ToUpper(svids[0].Serial)); strings.TrimSpace(out) != "1 certificate revoked" {
		t.Fatalf("revoke --serial with leading zeros printed %q", out)
	}
}
