package main

// The end-to-end harness. The test binary plays three roles, chosen by the
// BADGE_E2E_ROLE variable: the test runner (unset), the badge command
// ("badge", used to run the real daemon as a separate process that can be
// SIGKILLed), and a workload ("workload", run as another uid through
// SysProcAttr.Credential, talking to the daemon with go-spiffe's real
// workloadapi client).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// testBinary is a copy of the test binary that every uid may execute.
var testBinary string

// noRaceExitPause stops a race-enabled child from waiting a second at exit
// (the race detector's default), which every workload process would pay.
const noRaceExitPause = "GORACE=atexit_sleep_ms=0"

func TestMain(m *testing.M) {
	switch os.Getenv("BADGE_E2E_ROLE") {
	case "badge":
		os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	case "workload":
		os.Exit(workloadMain())
	}
	code := func() int {
		dir, err := os.MkdirTemp("", "badge-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := os.Chmod(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		data, err := os.ReadFile(self)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		testBinary = filepath.Join(dir, "badge.test")
		if err := os.WriteFile(testBinary, data, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests run workloads as other uids and need root (run the suite as root, as CI does)")
	}
}

// daemon is a badge server running as a child process.
type daemon struct {
	t        *testing.T
	dir      string
	dataDir  string
	socket   string
	admin    string
	args     []string
	wrap     []string            // a command (and its arguments) that runs the daemon
	bin      string              // the daemon's binary (a real badge); empty: the test binary
	env      []string            // more environment for the daemon
	fileLog  bool                // leave --log-level to the config file (default: --log-level debug)
	cred     *syscall.Credential // run the daemon as this user; nil: as root
	agent    bool                // `badge agent` rather than `badge server` (admin: its server's)
	cmd      *exec.Cmd
	exited   chan struct{}
	mu       sync.Mutex
	logLines []string
}

// startDaemon starts `badge server` on a fresh directory and waits for it to
// say it is ready.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	return startDaemonAs(t, nil, args...)
}

// startDaemonAs is startDaemon with the daemon running as cred (nil: root),
// in a directory that user owns.
func startDaemonAs(t *testing.T, cred *syscall.Credential, args ...string) *daemon {
	t.Helper()
	requireRoot(t)
	dir := worldReadableTempDir(t)
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	d := &daemon{
		cred:    cred,
		t:       t,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		socket:  filepath.Join(dir, "sock", "workload.sock"),
		admin:   filepath.Join(dir, "sock", "admin.sock"),
		args:    args,
	}
	d.start()
	t.Cleanup(d.stop)
	return d
}

// worldReadableTempDir returns a temporary directory that other uids can
// traverse, so workloads running as them reach the socket inside. It and
// the directories above it up to the sticky temporary directory are
// owned by the test's uid (root) with mode 0755, so the server trusts
// socket directories and data dirs inside it.
func worldReadableTempDir(t *testing.T) string {
	dir := t.TempDir()
	for p := dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func (d *daemon) start() {
	d.t.Helper()
	args := []string{"server", "--data-dir", d.dataDir, "--socket", d.socket, "--admin-socket", d.admin}
	name := "badge server"
	if d.agent {
		args, name = []string{"agent", "--data-dir", d.dataDir, "--socket", d.socket}, "badge agent"
	}
	if !d.fileLog {
		args = append(args, "--log-level", "debug")
	}
	args = append(args, d.args...)
	bin := testBinary
	if d.bin != "" {
		bin = d.bin
	}
	cmd := exec.Command(bin, args...)
	if len(d.wrap) > 0 {
		cmd = exec.Command(d.wrap[0], append(append(d.wrap[1:len(d.wrap):len(d.wrap)], bin), args...)...)
	}
	cmd.Env = append(append(os.Environ(), "BADGE_E2E_ROLE=badge", noRaceExitPause), d.env...)
	if d.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: d.cred}
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.cmd = cmd
	d.exited = make(chan struct{})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.logLines = append(d.logLines, line)
			d.mu.Unlock()
			if !signalled && strings.Contains(line, name+" ready") {
				close(ready)
				signalled = true
			}
		}
		cmd.Wait()
		close(d.exited)
	}()
	select {
	case <-ready:
	case <-d.exited:
		d.t.Fatalf("%s exited before it was ready:\n%s", name, d.logs())
	case <-time.After(15 * time.Second):
		d.t.Fatalf("%s not ready after 15s:\n%s", name, d.logs())
	}
}

func (d *daemon) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.logLines, "\n")
}

// signal sends sig and waits for the daemon to exit.
func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("badge server did not exit within 15s of %v", sig)
	}
	d.cmd = nil
}

func (d *daemon) stop() {
	d.signal(syscall.SIGTERM)
	if d.t.Failed() {
		d.t.Logf("daemon log:\n%s", d.logs())
	}
}

func (d *daemon) restart() {
	d.t.Helper()
	d.signal(syscall.SIGTERM)
	d.start()
}

// badge runs the badge CLI in-process against the daemon's sockets and
// returns stdout, stderr and the exit code.
func (d *daemon) badge(args ...string) (string, string, int) {
	d.t.Helper()
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(k string) string {
		switch k {
		case "BADGE_ADMIN_SOCKET":
			return d.admin
		case "BADGE_SOCKET":
			return d.socket
		case "BADGE_SERVER_UID":
			if d.cred != nil { // a daemon run as another user is trusted by name
				return strconv.FormatUint(uint64(d.cred.Uid), 10)
			}
		}
		return ""
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := e.dispatch(ctx, args)
	return out.String(), errOut.String(), code
}

// mustBadge runs the CLI and fails the test unless it exits 0.
func (d *daemon) mustBadge(args ...string) string {
	d.t.Helper()
	out, errOut, code := d.badge(args...)
	if code != 0 {
		d.t.Fatalf("badge %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// createEntry registers id for the selectors and returns the entry id.
func (d *daemon) createEntry(id string, selectors ...string) string {
	d.t.Helper()
	args := []string{"entry", "create", "--id", id}
	for _, s := range selectors {
		args = append(args, "--selector", s)
	}
	return strings.TrimSpace(d.mustBadge(args...))
}

// workloadResult is what a workload process reports.
type workloadResult struct {
	Error  string         `json:"error,omitempty"`
	Code   string         `json:"code,omitempty"`
	SVIDs  []workloadSVID `json:"svids,omitempty"`
	Bundle [][]byte       `json:"bundle,omitempty"`
	At     time.Time      `json:"at"`
}

type workloadSVID struct {
	ID    string   `json:"id"`
	Chain [][]byte `json:"chain"`
	Key   []byte   `json:"key"`
}

// runWorkload runs the test binary as uid/gid in the given workload mode and
// returns its result.
func (d *daemon) runWorkload(uid, gid uint32, mode string) workloadResult {
	d.t.Helper()
	cmd := d.workloadCmd(uid, gid, mode)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		d.t.Fatalf("workload uid %d: %v: %s", uid, err, errOut.String())
	}
	var r workloadResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		d.t.Fatalf("workload uid %d printed %q: %v (stderr %s)", uid, out.String(), err, errOut.String())
	}
	return r
}

// workloadCmd returns the command that runs the test binary as a workload
// of uid/gid in the given mode; env adds variables (KEY=VALUE) for the mode.
func (d *daemon) workloadCmd(uid, gid uint32, mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(testBinary)
	cmd.Env = append([]string{
		noRaceExitPause,
		"BADGE_E2E_ROLE=workload",
		"BADGE_E2E_MODE=" + mode,
		"SPIFFE_ENDPOINT_SOCKET=unix://" + d.socket,
	}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	return cmd
}

// lineWorkload is a workload process, as another uid, that reports one
// JSON document of type T per event on stdout until its stdin closes.
type lineWorkload[T any] struct {
	updates chan T
	stdin   io.WriteCloser
	cmd     *exec.Cmd
}

// startLines starts the workload mode as uid/gid and decodes its reports.
func startLines[T any](d *daemon, uid, gid uint32, mode string) *lineWorkload[T] {
	d.t.Helper()
	cmd := d.workloadCmd(uid, gid, mode)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	w := &lineWorkload[T]{updates: make(chan T, 64), stdin: stdin, cmd: cmd}
	go func() {
		defer close(w.updates)
		dec := json.NewDecoder(stdout)
		for {
			var r T
			if err := dec.Decode(&r); err != nil {
				return
			}
			w.updates <- r
		}
	}()
	d.t.Cleanup(w.stop)
	return w
}

func (w *lineWorkload[T]) stop() {
	w.stdin.Close()
	w.cmd.Wait()
}

// next waits up to timeout for the next report.
func (w *lineWorkload[T]) next(t *testing.T, timeout time.Duration) T {
	t.Helper()
	select {
	case r, ok := <-w.updates:
		if !ok {
			t.Fatal("workload exited")
		}
		return r
	case <-time.After(timeout):
		t.Fatalf("no report from the workload within %s", timeout)
	}
	var zero T
	return zero
}

// startStream runs a workload that holds a FetchX509SVID stream open with
// go-spiffe's client, reporting every update.
func (d *daemon) startStream(uid, gid uint32) *lineWorkload[workloadResult] {
	return startLines[workloadResult](d, uid, gid, "stream")
}

// workloadMain is the workload role: it reports on stdout as JSON.
func workloadMain() int {
	addr := os.Getenv("SPIFFE_ENDPOINT_SOCKET")
	enc := json.NewEncoder(os.Stdout)
	report := func(r workloadResult, err error) {
		if err != nil {
			r.Error = err.Error()
			r.Code = status.Code(err).String()
		}
		r.At = time.Now()
		enc.Encode(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	switch mode := os.Getenv("BADGE_E2E_MODE"); mode {
	case "fetch":
		xc, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
		if err != nil {
			report(workloadResult{}, err)
			return 0
		}
		report(resultOf(xc), nil)
	case "bundles":
		bs, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(addr))
		if err != nil {
			report(workloadResult{}, err)
			return 0
		}
		var r workloadResult
		for _, b := range bs.Bundles() {
			for _, c := range b.X509Authorities() {
				r.Bundle = append(r.Bundle, c.Raw)
			}
		}
		report(r, nil)
	case "noheader":
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			report(workloadResult{}, err)
			return 0
		}
		defer conn.Close()
		stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		report(workloadResult{}, err)
	case "stream":
		go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
		client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
		if err != nil {
			report(workloadResult{}, err)
			return 0
		}
		defer client.Close()
		var mu sync.Mutex
		err = client.WatchX509Context(ctx, watcher{
			update: func(xc *workloadapi.X509Context) { mu.Lock(); report(resultOf(xc), nil); mu.Unlock() },
			fail:   func(err error) { mu.Lock(); report(workloadResult{}, err); mu.Unlock() },
		})
		if err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			report(workloadResult{}, err)
		}
	default:
		if f, ok := workloadModes[mode]; ok {
			return f(ctx, addr)
		}
		fmt.Fprintf(os.Stderr, "unknown workload mode %q\n", mode)
		return 2
	}
	return 0
}

// workloadModes are further workload roles, registered by other test files
// in init functions: each runs as the workload process (as another uid)
// with the Workload API address, and returns the exit code.
var workloadModes = map[string]func(ctx context.Context, addr string) int{}

type watcher struct {
	update func(*workloadapi.X509Context)
	fail   func(error)
}

func (w watcher) OnX509ContextUpdate(xc *workloadapi.X509Context) { w.update(xc) }
func (w watcher) OnX509ContextWatchError(err error) {
	if status.Code(err).String() != "Canceled" {
		w.fail(err)
	}
}

func resultOf(xc *workloadapi.X509Context) workloadResult {
	var r workloadResult
	for _, s := range xc.SVIDs {
		ws := workloadSVID{ID: s.ID.String()}
		for _, c := range s.Certificates {
			ws.Chain = append(ws.Chain, c.Raw)
		}
		_, key, err := s.MarshalRaw()
		if err == nil {
			ws.Key = key
		}
		r.SVIDs = append(r.SVIDs, ws)
	}
	for _, b := range xc.Bundles.Bundles() {
		for _, c := range b.X509Authorities() {
			r.Bundle = append(r.Bundle, c.Raw)
		}
	}
	return r
}
