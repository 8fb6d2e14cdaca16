package main

// The test binary plays three roles: the test runner; a worker child of
// --uids (badge-bench re-executes its own executable, which in a test is
// the test binary, with benchChildArg); and a badge daemon
// (BADGE_BENCH_TEST_DAEMON=DIR: the real authority, Workload API, admin
// API and agent listener on real sockets and a real bbolt file, in a
// process of its own so that badge-bench finds and measures it as it
// would a real daemon).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/ca/nodeapi"
	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/unixsock"
	"github.com/badge-dev/badge/storage/bbolt"
)

const daemonRoleEnv = "BADGE_BENCH_TEST_DAEMON"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == benchChildArg {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
	}
	if dir := os.Getenv(daemonRoleEnv); dir != "" {
		if err := daemonMain(dir); err != nil {
			fmt.Fprintln(os.Stderr, "test daemon:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// A race-enabled child otherwise waits a second before it exits.
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	os.Exit(m.Run())
}

// daemonMain serves the Workload API on DIR/sock/workload.sock, the admin
// API on DIR/sock/admin.sock and the agent listener on a free port of
// 127.0.0.1 (written to DIR/agent.addr), writes "ready" to stdout, and
// serves until stdin is closed.
func daemonMain(dir string) error {
	ctx := context.Background()
	store, err := bbolt.Open(filepath.Join(dir, "badge.db"), &bbolt.Options{NoSync: true})
	if err != nil {
		return err
	}
	defer store.Close()
	auth, err := ca.New(ctx, ca.Config{Store: store, KeyDir: filepath.Join(dir, "keys")})
	if err != nil {
		return err
	}
	defer auth.Close()
	wl, err := workload.Listen(filepath.Join(dir, "sock", "workload.sock"))
	if err != nil {
		return err
	}
	al, err := unixsock.Listen(filepath.Join(dir, "sock", "admin.sock"), 0o600)
	if err != nil {
		return err
	}
	src := auth.WorkloadSource()
	wsrv, err := workload.New(workload.Config{Source: src, Attestor: attest.New(attest.Config{}), JWT: src})
	if err != nil {
		return err
	}
	nsrv, err := nodeapi.New(ctx, nodeapi.Config{Authority: auth})
	if err != nil {
		return err
	}
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "agent.addr"), []byte(nl.Addr().String()), 0o644); err != nil {
		return err
	}
	asrv, err := admin.New(admin.Config{Authority: auth, NodeConnections: nsrv.NodeConnections})
	if err != nil {
		return err
	}
	errc := make(chan error, 3)
	go func() { errc <- wsrv.Serve(wl) }()
	go func() { errc <- asrv.Serve(al) }()
	go func() { errc <- nsrv.Serve(nl) }()
	fmt.Println("ready")
	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	wsrv.Shutdown(sctx)
	asrv.Shutdown(sctx)
	nsrv.Shutdown(sctx)
	return err
}

// daemon is a test daemon running in a child process.
type daemon struct {
	pid           int
	socket, admin string
	agentAddr     string // the agent listener, HOST:PORT
	client        *admin.Client
}

// startDaemon starts a test daemon in a directory that every uid can
// traverse, and stops it when the test ends.
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "bb-") // short: socket paths have 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), daemonRoleEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		stdin.Close()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("test daemon: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("test daemon did not stop within 10 s of its stdin closing")
		}
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		exited <- cmd.Wait()
	}()
	select {
	case line := <-ready:
		if line != "ready\n" {
			t.Fatalf("test daemon said %q, want ready", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("test daemon not ready within 30 s")
	}
	d := &daemon{
		pid:    cmd.Process.Pid,
		socket: filepath.Join(dir, "sock", "workload.sock"),
		admin:  filepath.Join(dir, "sock", "admin.sock"),
	}
	addr, err := os.ReadFile(filepath.Join(dir, "agent.addr"))
	if err != nil {
		t.Fatal(err)
	}
	d.agentAddr = string(addr)
	d.client = admin.NewClient(d.admin)
	return d
}

// entry registers id for uid and returns the entry id.
func (d *daemon) entry(t *testing.T, id string, uid int) string {
	t.Helper()
	e, err := d.client.CreateEntry(context.Background(), admin.EntryRequest{
		SPIFFEID: id, Selectors: []string{"unix:uid:" + strconv.Itoa(uid)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e.ID
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs workers as uids 1001-1002")
	}
}
