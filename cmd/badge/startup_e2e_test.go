package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runServerOnce starts `badge server` with args and waits for it to exit,
// which it must, within 15s; it returns the exit code and stderr.
func runServerOnce(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(testBinary, append([]string{"server"}, args...)...)
	cmd.Env = []string{"BADGE_E2E_ROLE=badge", noRaceExitPause}
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return exitCode(err), errOut.String()
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("badge server kept running; stderr:\n%s", errOut.String())
	}
	return 0, ""
}

// TestE2ESecondServerOnSameDataDir: the database is locked by the running
// server; a second one says so promptly and leaves the first serving.
func TestE2ESecondServerOnSameDataDir(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/a", "unix:uid:1001")
	dir := t.TempDir()
	code, errOut := runServerOnce(t, "--data-dir", d.dataDir,
		"--socket", filepath.Join(dir, "w.sock"), "--admin-socket", filepath.Join(dir, "a.sock"))
	if code != exitFailure || !strings.Contains(errOut, "locked") {
		t.Fatalf("second server: exit %d, stderr %q; want exit 1 naming the lock", code, errOut)
	}
	// A second server on the same sockets is refused too, before it has
	// created anything (no data dir, no CA), and the socket of the first
	// is left alone.
	code, errOut = runServerOnce(t, "--data-dir", filepath.Join(dir, "data"), "--socket", d.socket, "--admin-socket", filepath.Join(dir, "a2.sock"))
	if code != exitFailure || !strings.Contains(errOut, "in use by another running server") {
		t.Fatalf("second server on the same socket: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Lstat(filepath.Join(dir, "data")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the server refused for its socket created its data dir: %v", err)
	}
	code, errOut = runServerOnce(t, "--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "w2.sock"), "--admin-socket", d.admin)
	if code != exitFailure || !strings.Contains(errOut, "in use by another running server") {
		t.Fatalf("second server on the same admin socket: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Lstat(filepath.Join(dir, "data")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the server refused for its admin socket created its data dir: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "w2.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the server refused for its admin socket left its workload socket: %v", err)
	}
	if r := d.runWorkload(1001, 1001, "fetch"); len(r.SVIDs) != 1 {
		t.Fatalf("first server stopped serving: %v %s", ids(r), r.Error)
	}
}

// TestE2ECorruptDatabase: a damaged database is a clear startup error
// naming the file, never a panic, and the file is left as it was.
func TestE2ECorruptDatabase(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(data, "badge.db")
	garbage := bytes.Repeat([]byte("not a database "), 4096)
	if err := os.WriteFile(db, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	code, errOut := runServerOnce(t, "--data-dir", data, "--socket", filepath.Join(dir, "w.sock"), "--admin-socket", filepath.Join(dir, "a.sock"))
	if code != exitFailure || !strings.Contains(errOut, db) || strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine ") {
		t.Fatalf("corrupt database: exit %d, stderr %q; want exit 1 naming %s", code, errOut, db)
	}
	if got, err := os.ReadFile(db); err != nil || !bytes.Equal(got, garbage) {
		t.Fatal("startup modified the corrupt database")
	}
}
