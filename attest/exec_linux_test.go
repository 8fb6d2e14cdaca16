package attest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// The exec-after-connect child: it connects with a socket that survives
// exec(2), waits for one byte from the server (the server has accepted and
// recorded it), then execs another binary that keeps the connection.
const (
	execChildEnv  = "BADGE_ATTEST_TEST_EXEC_SOCKET"
	execTargetEnv = "BADGE_ATTEST_TEST_EXEC_TARGET"
	holdFDEnv     = "BADGE_ATTEST_TEST_HOLD_FD"
)

func execChildMain(sock, target string) int {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0) // no SOCK_CLOEXEC
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: sock})
	}
	var b [1]byte
	if err == nil {
		_, err = unix.Read(fd, b[:])
	}
	if err == nil && fd != 3 {
		err = unix.Dup3(fd, 3, 0)
	}
	if err == nil {
		err = unix.Exec(target, []string{target}, []string{holdFDEnv + "=3"})
	}
	fmt.Fprintln(os.Stderr, "exec child:", err)
	return 1
}

// holdFDMain is the program after exec: it tells the server it runs (one
// byte on the inherited connection) and holds the connection until stdin
// closes.
func holdFDMain(fd string) int {
	n, err := strconv.Atoi(fd)
	if err == nil {
		_, err = unix.Write(n, []byte("x"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hold fd:", err)
		return 1
	}
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// TestAttestExecAfterConnect: a process that connects and then execs
// another binary, keeping the connection, is not given the new binary's
// selectors: Attest and Verify fail with ErrPeerChanged.
func TestAttestExecAfterConnect(t *testing.T) {
	dir := openDir(t)
	ln, sock := listen(t, dir)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	connector, target := filepath.Join(dir, "connector"), filepath.Join(dir, "target")
	copyFile(t, self, connector)
	copyFile(t, self, target)

	cmd := exec.Command(connector, "-test.run=^$")
	cmd.Env = append(os.Environ(), execChildEnv+"="+sock, execTargetEnv+"="+target)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); ln.Close() }()
	defer func() {
		stdin.Close()
		if err := <-done; err != nil {
			t.Errorf("child: %v: %s", err, stderr.Bytes())
		}
	}()
	conn, err := ln.AcceptUnix()
	if err != nil {
		t.Fatalf("accept: %v: %s", err, stderr.Bytes())
	}
	defer conn.Close()
	p, err := PeerFromConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a := New(Config{})
	set, err := a.Attest(p, KindPath|KindUID)
	if err != nil {
		t.Fatalf("Attest before exec: %v", err)
	}
	if got := values(set, "unix", "path"); len(got) != 1 || got[0] != connector {
		t.Fatalf("path before exec %q, want %s", got, connector)
	}

	// Let it exec, and wait until the new program speaks.
	if _, err := conn.Write([]byte("g")); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		t.Fatalf("no word from the exec'd program: %v: %s", err, stderr.Bytes())
	}
	if !p.Alive() {
		t.Fatal("the exec'd process is not Alive")
	}
	for _, k := range []Kind{KindPath, KindSHA256, KindUID, KindAll} {
		if set, err := a.Attest(p, k); !errors.Is(err, ErrPeerChanged) || set != nil {
			t.Errorf("Attest(%s) after exec = %v, %v; want ErrPeerChanged", k, set.Selectors(), err)
		}
	}
	if err := a.Verify(p); !errors.Is(err, ErrPeerChanged) {
		t.Errorf("Verify after exec = %v, want ErrPeerChanged", err)
	}
}

// TestExePathOnlyOfRecordedFile: the path is read only from the file the
// peer ran at connect. If /proc/<pid>/exe leads elsewhere when the path is
// read (the process exec'd; it may exec back before Attest's final check),
// the read fails with ErrPeerChanged instead of naming the other file.
func TestExePathOnlyOfRecordedFile(t *testing.T) {
	_, p := selfPeer(t)
	dir := t.TempDir()
	connected, other := filepath.Join(dir, "connected"), filepath.Join(dir, "other")
	for _, f := range []string{connected, other} {
		if err := os.WriteFile(f, []byte(f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := fakeProc(t, p, "testdata/status/self.txt", "testdata/cgroup/empty.txt", connected)
	procDir := root + "/" + strconv.Itoa(int(p.PID)) + "/"
	bp := new([]byte)
	if got, err := exePath(p, procDir, bp); err != nil || got != connected {
		t.Fatalf("exePath = %q, %v; want %s", got, err, connected)
	}
	link := procDir + "exe"
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, link); err != nil {
		t.Fatal(err)
	}
	if got, err := exePath(p, procDir, bp); !errors.Is(err, ErrPeerChanged) {
		t.Fatalf("exePath after the exe changed = %q, %v; want ErrPeerChanged", got, err)
	}
}

// TestZombiePeer: a connector that has exited but is not reaped (its
// parent does not wait, as an attacker's parent would not) still passes the
// pidfd check, yet it is gone: Verify and Attest say ErrPeerGone, whether
// it exited after the server accepted its connection or before.
func TestZombiePeer(t *testing.T) {
	for _, tt := range []struct {
		name        string
		exitFirst   bool // exit before the server accepts
		wantExeKnow bool
	}{
		{"exited after accept", false, true},
		{"exited before accept", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := startChildConnAfter(t, tt.exitFirst)
			if c.peer.exeErr == nil != tt.wantExeKnow {
				t.Fatalf("executable recorded: %v, want %v", c.peer.exeErr, tt.wantExeKnow)
			}
			if !tt.exitFirst {
				c.exitUnreaped(t)
			}
			if !c.peer.Alive() {
				t.Fatal("the zombie is not Alive by its pidfd: the test shows nothing")
			}
			a := New(Config{})
			if err := a.Verify(c.peer); !errors.Is(err, ErrPeerGone) {
				t.Errorf("Verify of a zombie = %v, want ErrPeerGone", err)
			}
			if set, err := a.Attest(c.peer, KindUID); !errors.Is(err, ErrPeerGone) {
				t.Errorf("Attest of a zombie = %v, %v; want ErrPeerGone", set.Selectors(), err)
			}
		})
	}
}

// startChildConnAfter starts a child that connects; if exitFirst, it lets
// the child exit (unreaped) before accepting and reading the peer.
func startChildConnAfter(t *testing.T, exitFirst bool) *child {
	t.Helper()
	dir := openDir(t)
	ln, sock := listen(t, dir)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, bin: self, done: make(chan error, 1)}
	c.cmd = exec.Command(self, "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childEnv+"="+sock)
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.stdin.Close(); c.cmd.Wait() })
	if exitFirst {
		// The child's connect returns when the connection is queued: wait
		// until the kernel queued it (the listener is readable).
		rc, err := ln.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, 10_000); err != nil || fds[0].Revents&unix.POLLIN == 0 {
				t.Errorf("the child did not connect: %v", err)
			}
		})
		c.exitUnreaped(t)
	}
	if c.conn, err = ln.AcceptUnix(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	if c.peer, err = PeerFromConn(c.conn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.peer.Close() })
	return c
}

// exitUnreaped makes the child exit and waits for that without reaping it.
func (c *child) exitUnreaped(t *testing.T) {
	t.Helper()
	c.stdin.Close()
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, c.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
}
