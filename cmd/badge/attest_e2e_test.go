package main

// Attacks on the binding of an identity to the process that connected: a
// process that connects and then execs the binary an entry names, and a
// connection passed to another process whose connector then dies. Each
// attacker is a real process as another uid, on a raw socket that survives
// exec(2) and fork(2), talking to the real daemon.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Environment of the attack modes.
const (
	envExecTarget = "BADGE_E2E_EXEC_TARGET" // execconnector: the binary to exec
	envConnFD     = "BADGE_E2E_FD"          // fdfetch, fdstream: the inherited connection
	envConsumed   = "BADGE_E2E_CONSUMED"    // hex of the bytes the connector already read
)

func init() {
	workloadModes["execconnector"] = execConnectorMain
	workloadModes["fdfetch"] = fdFetchMain
	workloadModes["fdparent"] = fdParentMain
	workloadModes["fdstream"] = fdStreamMain
}

// rawConnect connects to the Workload API socket with a descriptor that is
// not close-on-exec, and reads the server's first HTTP/2 frame (its
// SETTINGS): proof that the server accepted the connection and ran its
// handshake, which is when it records the peer. It returns the descriptor
// and the bytes read.
func rawConnect(addr string) (int, []byte, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0) // no SOCK_CLOEXEC
	if err != nil {
		return -1, nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: strings.TrimPrefix(addr, "unix://")}); err != nil {
		return -1, nil, fmt.Errorf("connect: %w", err)
	}
	readFull := func(b []byte) error {
		for n := 0; n < len(b); {
			m, err := unix.Read(fd, b[n:])
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return err
			}
			if m == 0 {
				return io.ErrUnexpectedEOF
			}
			n += m
		}
		return nil
	}
	head := make([]byte, 9)
	if err := readFull(head); err != nil {
		return -1, nil, fmt.Errorf("reading the server's first frame: %w", err)
	}
	if head[3] != 0x4 { // SETTINGS
		return -1, nil, fmt.Errorf("first frame from the server has type %d, want SETTINGS", head[3])
	}
	payload := make([]byte, int(head[0])<<16|int(head[1])<<8|int(head[2]))
	if err := readFull(payload); err != nil {
		return -1, nil, fmt.Errorf("reading the server's SETTINGS: %w", err)
	}
	return fd, append(head, payload...), nil
}

// replayConn is a connection whose first reads return what the connector
// already consumed.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// inheritedConn returns a dialer that hands out, once, the connection this
// process inherited on descriptor $BADGE_E2E_FD.
func inheritedConn() (func(context.Context, string) (net.Conn, error), error) {
	n, err := strconv.Atoi(os.Getenv(envConnFD))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envConnFD, err)
	}
	consumed, err := hex.DecodeString(os.Getenv(envConsumed))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envConsumed, err)
	}
	c, err := net.FileConn(os.NewFile(uintptr(n), "inherited"))
	if err != nil {
		return nil, err
	}
	var (
		mu   sync.Mutex
		conn net.Conn = &replayConn{Conn: c, pending: consumed}
	)
	return func(context.Context, string) (net.Conn, error) {
		mu.Lock()
		defer mu.Unlock()
		if conn == nil {
			return nil, errors.New("the inherited connection was used already")
		}
		c := conn
		conn = nil
		return c, nil
	}, nil
}

// execConnectorMain connects, then execs $BADGE_E2E_EXEC_TARGET in fdfetch
// mode with the connection on descriptor 3.
func execConnectorMain(_ context.Context, addr string) int {
	fd, consumed, err := rawConnect(addr)
	if err == nil && fd != 3 {
		err = unix.Dup3(fd, 3, 0)
	}
	if err == nil {
		target := os.Getenv(envExecTarget)
		err = unix.Exec(target, []string{target}, []string{
			noRaceExitPause, "BADGE_E2E_ROLE=workload", "BADGE_E2E_MODE=fdfetch",
			envConnFD + "=3", envConsumed + "=" + hex.EncodeToString(consumed),
		})
	}
	fmt.Fprintln(os.Stderr, "execconnector:", err)
	return 1
}

// fdFetchMain runs go-spiffe's client over the inherited connection and
// reports one FetchX509Context.
func fdFetchMain(ctx context.Context, _ string) int {
	enc := json.NewEncoder(os.Stdout)
	fail := func(err error) int {
		enc.Encode(workloadResult{Error: err.Error(), Code: status.Code(err).String(), At: time.Now()})
		return 0
	}
	dial, err := inheritedConn()
	if err != nil {
		return fail(err)
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix:///inherited"),
		workloadapi.WithDialOptions(grpc.WithContextDialer(dial)))
	if err != nil {
		return fail(err)
	}
	defer client.Close()
	xc, err := client.FetchX509Context(ctx)
	if err != nil {
		return fail(err)
	}
	r := resultOf(xc)
	r.At = time.Now()
	enc.Encode(r)
	return 0
}

// fdParentMain connects, starts a child in fdstream mode that holds the
// connection (descriptor 3) and shares this process's stdio, and waits.
func fdParentMain(_ context.Context, addr string) int {
	fd, consumed, err := rawConnect(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fdparent:", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fdparent:", err)
		return 1
	}
	cmd := exec.Command(self)
	cmd.Env = []string{noRaceExitPause, "BADGE_E2E_ROLE=workload", "BADGE_E2E_MODE=fdstream",
		envConnFD + "=3", envConsumed + "=" + hex.EncodeToString(consumed)}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(fd), "conn")}
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "fdparent:", err)
		return 1
	}
	return 0
}

// fdStreamMain holds a FetchX509SVID stream over the inherited connection
// and prints every message as a rawUpdate line, and how the stream ended,
// until stdin closes.
func fdStreamMain(ctx context.Context, _ string) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	enc := json.NewEncoder(os.Stdout)
	dial, err := inheritedConn()
	if err != nil {
		enc.Encode(rawUpdate{Error: err.Error(), At: time.Now()})
		return 0
	}
	conn, err := grpc.NewClient("passthrough:///inherited", grpc.WithContextDialer(dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		enc.Encode(rawUpdate{Error: err.Error(), At: time.Now()})
		return 0
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	for err == nil {
		var resp *workload.X509SVIDResponse
		if resp, err = stream.Recv(); err != nil {
			break
		}
		u := rawUpdate{At: time.Now()}
		for _, s := range resp.Svids {
			u.IDs = append(u.IDs, s.SpiffeId)
			u.Key = s.X509SvidKey
			u.Chain = [][]byte{s.X509Svid}
		}
		enc.Encode(u)
	}
	if ctx.Err() == nil {
		enc.Encode(rawUpdate{Code: status.Code(err).String(), Error: err.Error(), At: time.Now()})
	}
	return 0
}

// copyTestBinary copies the test binary to a new path every uid may
// execute and returns that path with symlinks resolved, as unix:path
// names it.
func copyTestBinary(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(worldReadableTempDir(t), name)
	data, err := os.ReadFile(testBinary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err = filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestE2EExecAfterConnect: a process connects (and the server accepts),
// then execs the binary an entry names, keeping the connection; the
// program after exec asks with go-spiffe's client over that connection.
// It gets PermissionDenied: the identity belongs to the program that
// connected. The same binary connecting on its own gets the SVID.
func TestE2EExecAfterConnect(t *testing.T) {
	d := startDaemon(t)
	target := copyTestBinary(t, "target")
	d.createEntry("spiffe://example.org/target", "unix:path:"+target, "unix:uid:1001")

	direct := d.workloadCmd(1001, 1001, "fetch")
	direct.Path, direct.Args[0] = target, target
	if r := runResult(t, direct); len(r.SVIDs) != 1 || r.SVIDs[0].ID != "spiffe://example.org/target" {
		t.Fatalf("the target binary itself got %v %s %s, want its SVID", ids(r), r.Code, r.Error)
	}

	attack := d.workloadCmd(1001, 1001, "execconnector", envExecTarget+"="+target)
	r := runResult(t, attack)
	if r.Code != "PermissionDenied" || len(r.SVIDs) != 0 {
		t.Fatalf("a process that exec'd the target after connecting got %v (%s %s), want PermissionDenied", ids(r), r.Code, r.Error)
	}
	if !strings.Contains(r.Error, "another executable") {
		t.Errorf("the refusal does not say why: %s", r.Error)
	}
}

// brief describes an update in a line.
func brief(u rawUpdate) string {
	if u.Code != "" || u.Error != "" {
		return fmt.Sprintf("end of stream: %s %s", u.Code, u.Error)
	}
	return fmt.Sprintf("SVIDs %v", u.IDs)
}

// runResult runs a workload command and decodes its one workloadResult.
func runResult(t *testing.T, cmd *exec.Cmd) workloadResult {
	t.Helper()
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v: %s", cmd.Path, err, errOut.String())
	}
	var r workloadResult
	if err := json.Unmarshal([]byte(out.String()), &r); err != nil {
		t.Fatalf("%s printed %q: %v (stderr %s)", cmd.Path, out.String(), err, errOut.String())
	}
	return r
}

// TestE2EConnectorKilledMidStream: process A connects and passes the
// connection to its child B, which holds a FetchX509SVID stream and gets
// A's SVID. A is killed (and reaped). At the next re-issuance (a revoke of
// the ID) B gets no new SVID, and its stream ends with PermissionDenied.
func TestE2EConnectorKilledMidStream(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/a", "unix:uid:1001")

	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	a := d.workloadCmd(1001, 1001, "fdparent")
	a.Stdin, a.Stdout, a.Stderr = inR, outW, os.Stderr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	inR.Close()
	updates := make(chan rawUpdate, 16)
	go func() {
		defer close(updates)
		dec := json.NewDecoder(outR)
		for {
			var u rawUpdate
			if dec.Decode(&u) != nil {
				return
			}
			updates <- u
		}
	}()
	t.Cleanup(func() {
		inW.Close() // B exits
		a.Process.Kill()
		a.Wait()
		for range updates {
		}
		outR.Close()
	})
	nextUpdate := func(timeout time.Duration) rawUpdate {
		t.Helper()
		select {
		case u, ok := <-updates:
			if !ok {
				t.Fatal("B exited")
			}
			return u
		case <-time.After(timeout):
			t.Fatalf("nothing from B within %s", timeout)
		}
		return rawUpdate{}
	}
	if u := nextUpdate(10 * time.Second); len(u.IDs) != 1 || u.IDs[0] != "spiffe://example.org/a" {
		t.Fatalf("B, holding A's connection, got %s; want A's SVID", brief(u))
	}

	if err := a.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	a.Wait() // reaped: A's PID is free
	d.mustBadge("revoke", "--id", "spiffe://example.org/a")
	u := nextUpdate(2 * time.Second)
	if u.Code != "PermissionDenied" || len(u.IDs) != 0 {
		t.Fatalf("after its connector died B got %s; want the stream to end with PermissionDenied", brief(u))
	}
	if !strings.Contains(d.logs(), "peer no longer the process that connected") {
		t.Error("the daemon did not log why the stream ended")
	}
}

// TestE2EBlockEndsStreamOfSeveralIDs: a stream holding SVIDs of two IDs
// ends with PermissionDenied when one of them is blocked.
func TestE2EBlockEndsStreamOfSeveralIDs(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/kept", "unix:uid:1001")
	d.createEntry("spiffe://example.org/blocked", "unix:uid:1001", "unix:gid:1001")
	s := d.startRawStream(1001, 1001)
	if u := s.next(t, 10*time.Second); len(u.IDs) != 2 {
		t.Fatalf("first message %s, want two SVIDs", brief(u))
	}
	d.mustBadge("revoke", "--id", "spiffe://example.org/blocked", "--block")
	if u := s.next(t, 2*time.Second); u.Code != "PermissionDenied" {
		t.Fatalf("after blocking one of its IDs the stream got %s, want PermissionDenied", brief(u))
	}
	if r := d.runWorkload(1001, 1001, "fetch"); len(r.SVIDs) != 1 || r.SVIDs[0].ID != "spiffe://example.org/kept" {
		t.Fatalf("a new fetch got %v %s, want only the ID not blocked", ids(r), r.Error)
	}
}

// TestE2ENonRootServer: a server that is not root cannot read other
// users' /proc/PID/exe. A unix:path entry does not stop it from attesting
// everyone else: uid entries still match, and path selectors of other
// users' processes are simply absent (their path entries never match),
// with a log line that says why.
func TestE2ENonRootServer(t *testing.T) {
	d := startDaemonAs(t, &syscall.Credential{Uid: 1003, Gid: 1003})
	bin, err := filepath.EvalSymlinks(testBinary)
	if err != nil {
		t.Fatal(err)
	}
	d.createEntry("spiffe://example.org/by-uid", "unix:uid:1001")
	d.createEntry("spiffe://example.org/own-uid-path", "unix:path:"+bin, "unix:uid:1003")
	d.createEntry("spiffe://example.org/other-uid-path", "unix:path:"+bin, "unix:uid:1002")

	for _, tc := range []struct {
		uid  uint32
		want string // "" for PermissionDenied
	}{
		{1001, "spiffe://example.org/by-uid"},
		{1003, "spiffe://example.org/own-uid-path"},
		{1002, ""},
	} {
		r := d.runWorkload(tc.uid, tc.uid, "fetch")
		switch {
		case tc.want == "" && r.Code != "PermissionDenied":
			t.Errorf("uid %d: got %v %s, want PermissionDenied (its path cannot be read)", tc.uid, ids(r), r.Code)
		case tc.want != "" && (len(r.SVIDs) != 1 || r.SVIDs[0].ID != tc.want):
			t.Errorf("uid %d: got %v %s %s, want %s", tc.uid, ids(r), r.Code, r.Error, tc.want)
		}
	}
	if !strings.Contains(d.logs(), "selectors left out") {
		t.Error("the daemon did not log why selectors are missing")
	}
}
