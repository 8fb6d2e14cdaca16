package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv switches the test binary into a child that connects to the
// socket it names and stays connected until its stdin closes.
const childEnv = "BADGE_ATTEST_TEST_CHILD_SOCKET"

func TestMain(m *testing.M) {
	if sock := os.Getenv(childEnv); sock != "" {
		os.Exit(childMain(sock))
	}
	if sock := os.Getenv(execChildEnv); sock != "" {
		os.Exit(execChildMain(sock, os.Getenv(execTargetEnv)))
	}
	if fd := os.Getenv(holdFDEnv); fd != "" {
		os.Exit(holdFDMain(fd))
	}
	os.Exit(m.Run())
}

func childMain(sock string) int {
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	defer c.Close()
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// openDir returns a new temporary directory that other users can enter.
func openDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// listen returns a Unix listener in dir that any user may connect to.
func listen(t testing.TB, dir string) (*net.UnixListener, string) {
	t.Helper()
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	return ln, sock
}

// selfPeer connects to a fresh listener from this process and returns the
// accepted server side and its Peer.
func selfPeer(t testing.TB) (*net.UnixConn, *Peer) {
	t.Helper()
	ln, sock := listen(t, openDir(t))
	client, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	conn, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p, err := PeerFromConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return conn, p
}

type child struct {
	t     testing.TB
	once  sync.Once
	bin   string // the executable the child runs
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan error
	conn  *net.UnixConn // the accepted connection
	peer  *Peer
}

// startChild is startChildConn followed by PeerFromConn.
func startChild(t *testing.T, cred *syscall.Credential) *child {
	t.Helper()
	c := startChildConn(t, cred)
	var err error
	if c.peer, err = PeerFromConn(c.conn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.peer.Close() })
	return c
}

// startChildConn runs a copy of the test binary (in a directory every user can
// read, since the original may be in a 0700 one) with cred, accepts its
// connection.
func startChildConn(t *testing.T, cred *syscall.Credential) *child {
	t.Helper()
	dir := openDir(t)
	ln, sock := listen(t, dir)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "attest-child")
	copyFile(t, self, bin)

	c := &child{t: t, bin: bin, done: make(chan error, 1)}
	c.cmd = exec.Command(bin, "-test.run=^$")
	c.cmd.Dir = dir
	c.cmd.Env = append(os.Environ(), childEnv+"="+sock)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var stderr bytes.Buffer
	c.cmd.Stderr = &stderr
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.done <- c.cmd.Wait()
		ln.Close() // unblocks Accept if the child died before connecting
	}()
	t.Cleanup(c.stop)
	if c.conn, err = ln.AcceptUnix(); err != nil {
		c.stop()
		t.Fatalf("child did not connect: %v; stderr: %s", err, stderr.Bytes())
	}
	t.Cleanup(func() { c.conn.Close() })
	return c
}

// stop makes the child exit and waits until it has been reaped.
func (c *child) stop() {
	c.once.Do(func() {
		c.stdin.Close()
		if err := <-c.done; err != nil {
			c.t.Errorf("child: %v", err)
		}
	})
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func fileSHA256(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// pidfdPID reads which process a pidfd of this process refers to.
func pidfdPID(t *testing.T, fd int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
	}
	t.Fatalf("fd %d is not a pidfd: %s", fd, data)
	return 0
}

func values(set Set, typ, key string) []string {
	var out []string
	for _, s := range set.Selectors() {
		if s.Type == typ && s.Key == key {
			out = append(out, s.Value)
		}
	}
	return out
}

// checkValid asserts that every selector Attest produced is one
// ParseSelector accepts unchanged.
func checkValid(t *testing.T, set Set) {
	t.Helper()
	for s := range set {
		got, err := ParseSelector(s.String())
		if err != nil || got != s {
			t.Errorf("Attest produced %q, which does not round trip: %v", s, err)
		}
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child process as another uid and gid")
	}
}

func TestPeerFromConnSelf(t *testing.T) {
	_, p := selfPeer(t)
	if int(p.PID) != os.Getpid() || int(p.UID) != os.Getuid() || int(p.GID) != os.Getgid() {
		t.Errorf("Peer = pid %d uid %d gid %d, want %d %d %d", p.PID, p.UID, p.GID, os.Getpid(), os.Getuid(), os.Getgid())
	}
	if p.sock == nil || p.pidfd != -1 {
		t.Errorf("with SO_PEERPIDFD the peer holds a pidfd (%d) instead of asking the socket", p.pidfd)
	}
	p.mu.RLock()
	err := p.withPidfd(func(fd int) error {
		if got := pidfdPID(t, fd); got != os.Getpid() {
			t.Errorf("pidfd refers to pid %d, want %d", got, os.Getpid())
		}
		return nil
	})
	p.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	if !p.Alive() {
		t.Error("Alive() = false for this very process")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if p.Alive() {
		t.Error("Alive() after Close")
	}
	if _, err := New(Config{}).Attest(p, KindUID); !errors.Is(err, ErrNoPidfd) {
		t.Errorf("Attest after Close: %v, want ErrNoPidfd", err)
	}
}

// TestSOPeerPidfd checks that this kernel's SO_PEERPIDFD (Linux 6.5) is
// used and names the connecting process.
func TestSOPeerPidfd(t *testing.T) {
	conn, _ := selfPeer(t)
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	if err := rc.Control(func(s uintptr) { fd, err = peerPidfd(int(s)) }); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if fd < 0 {
		t.Skip("kernel has no SO_PEERPIDFD; PeerFromConn uses pidfd_open (TestPidfdOpenFallback)")
	}
	defer unix.Close(fd)
	if got := pidfdPID(t, fd); got != os.Getpid() {
		t.Errorf("SO_PEERPIDFD refers to pid %d, want %d", got, os.Getpid())
	}
}

// TestPeerExitedBeforeAccept: a peer that connected and exited before the
// server looked at the connection is never a live Peer.
func TestPeerExitedBeforeAccept(t *testing.T) {
	c := startChildConn(t, nil)
	c.stop()
	p, err := PeerFromConn(c.conn)
	if err != nil {
		if !errors.Is(err, ErrPeerGone) {
			t.Fatalf("PeerFromConn: %v, want ErrPeerGone", err)
		}
		t.Logf("PeerFromConn: %v", err)
		return
	}
	// Newer kernels hand out pidfds of reaped processes.
	t.Log("PeerFromConn returned a Peer of the reaped process")
	defer p.Close()
	if p.Alive() {
		t.Error("Peer of an exited process is Alive")
	}
	if _, err := New(Config{}).Attest(p, KindUID); !errors.Is(err, ErrPeerGone) {
		t.Errorf("Attest: %v, want ErrPeerGone", err)
	}
}

func TestPeerFromConnErrors(t *testing.T) {
	if _, err := PeerFromConn(nil); err == nil {
		t.Error("PeerFromConn(nil) succeeded")
	}
	// A Peer not made by PeerFromConn has no pidfd and is never attested.
	p := &Peer{PID: int32(os.Getpid()), UID: 0, GID: 0}
	if p.Alive() {
		t.Error("hand-made Peer is Alive")
	}
	if _, err := New(Config{}).Attest(p, KindUID); !errors.Is(err, ErrNoPidfd) {
		t.Errorf("Attest(hand-made Peer): %v, want ErrNoPidfd", err)
	}
	if _, err := New(Config{}).Attest(nil, KindUID); !errors.Is(err, ErrNoPidfd) {
		t.Errorf("Attest(nil): %v, want ErrNoPidfd", err)
	}
}

// TestPidfdOpenFallback exercises the path for kernels without
// SO_PEERPIDFD, and newPeer's checks of what the kernel reported.
func TestPidfdOpenFallback(t *testing.T) {
	self := &unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	p, err := newPeer(self, -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := pidfdPID(t, p.pidfd); got != os.Getpid() {
		t.Errorf("pidfd_open pidfd refers to pid %d, want %d", got, os.Getpid())
	}
	if !p.Alive() {
		t.Error("not Alive")
	}

	if _, err := newPeer(self, -1, unix.ESRCH); !errors.Is(err, ErrPeerGone) {
		t.Errorf("SO_PEERPIDFD ESRCH: %v, want ErrPeerGone", err)
	}
	if _, err := newPeer(&unix.Ucred{Pid: 0, Uid: 0, Gid: 0}, -1, nil); err == nil {
		t.Error("pid 0 accepted")
	}
	if _, err := newPeer(&unix.Ucred{Pid: 1, Uid: 1<<32 - 1, Gid: 0}, -1, nil); err == nil {
		t.Error("uid -1 accepted")
	}

	// A PID that is not (or no longer) a process.
	c := startChild(t, nil)
	pid := c.peer.PID
	c.stop()
	if _, err := newPeer(&unix.Ucred{Pid: pid, Uid: 0, Gid: 0}, -1, nil); !errors.Is(err, ErrPeerGone) {
		// The PID could have been reused already; that is what the
		// pidfd guards against, and not an error of this test.
		if err == nil {
			t.Logf("pid %d was reused before pidfd_open", pid)
		} else {
			t.Errorf("pidfd_open of exited pid: %v, want ErrPeerGone", err)
		}
	}
}

func TestAttestSelf(t *testing.T) {
	_, p := selfPeer(t)
	a := New(Config{})
	set, err := a.Attest(p, KindAll)
	if err != nil {
		t.Fatal(err)
	}
	checkValid(t, set)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		t.Fatal(err)
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	var wantGroups []string
	for _, g := range groups {
		wantGroups = append(wantGroups, strconv.Itoa(g))
	}
	slices.Sort(wantGroups)
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	unit, container := parseCgroup(cg)

	check := func(key string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s selectors = %q, want %q", key, got, want)
		}
	}
	check("uid", values(set, "unix", "uid"), []string{strconv.Itoa(os.Getuid())})
	check("gid", values(set, "unix", "gid"), []string{strconv.Itoa(os.Getgid())})
	check("supplementary_gid", values(set, "unix", "supplementary_gid"), wantGroups)
	check("path", values(set, "unix", "path"), []string{exe})
	check("sha256", values(set, "unix", "sha256"), []string{fileSHA256(t, exe)})
	var wantUser, wantGroup, wantUnit, wantContainer []string
	if u, err := user.LookupId(strconv.Itoa(os.Getuid())); err == nil {
		wantUser = []string{u.Username}
	}
	if g, err := user.LookupGroupId(strconv.Itoa(os.Getgid())); err == nil {
		wantGroup = []string{g.Name}
	}
	if unit != nil {
		wantUnit = []string{string(unit)}
	}
	if container != nil {
		wantContainer = []string{string(container)}
	}
	check("user", values(set, "unix", "user"), wantUser)
	check("group", values(set, "unix", "group"), wantGroup)
	check("unit", values(set, "systemd", "unit"), wantUnit)
	check("container_id", values(set, "docker", "container_id"), wantContainer)

	// Only the kinds asked for.
	for k := KindUID; k <= KindDockerContainer; k <<= 1 {
		sub, err := a.Attest(p, k)
		if err != nil {
			t.Fatalf("Attest(%b): %v", k, err)
		}
		for s := range sub {
			if KindOf(s) != k {
				t.Errorf("Attest(%b) returned %s", k, s)
			}
			if _, ok := set[s]; !ok {
				t.Errorf("Attest(%b) returned %s, which Attest(KindAll) did not", k, s)
			}
		}
	}
	if sub, err := a.Attest(p, 0); err != nil || len(sub) != 0 {
		t.Errorf("Attest(0) = %v, %v; want empty", sub, err)
	}
}

// TestAttestOtherUser attests a real process running as another uid and
// gid, with supplementary groups, from a binary of our choosing.
func TestAttestOtherUser(t *testing.T) {
	requireRoot(t)
	c := startChild(t, &syscall.Credential{Uid: 1001, Gid: 1001, Groups: []uint32{1002, 1003}})
	p := c.peer
	if int(p.PID) != c.cmd.Process.Pid || p.UID != 1001 || p.GID != 1001 {
		t.Fatalf("Peer = pid %d uid %d gid %d, want pid %d uid 1001 gid 1001", p.PID, p.UID, p.GID, c.cmd.Process.Pid)
	}
	if !p.Alive() {
		t.Fatal("child not Alive")
	}
	a := New(Config{})
	set, err := a.Attest(p, KindAll)
	if err != nil {
		t.Fatal(err)
	}
	checkValid(t, set)
	bin, err := filepath.EvalSymlinks(c.bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []Selector{
		{"unix", "uid", "1001"},
		{"unix", "gid", "1001"},
		{"unix", "supplementary_gid", "1002"},
		{"unix", "supplementary_gid", "1003"},
		{"unix", "path", bin},
		{"unix", "sha256", fileSHA256(t, c.bin)},
	} {
		if _, ok := set[want]; !ok {
			t.Errorf("missing %s in %v", want, set.Selectors())
		}
	}
	if got := values(set, "unix", "supplementary_gid"); len(got) != 2 {
		t.Errorf("supplementary gids %v, want exactly 1002 and 1003", got)
	}
	if _, err := user.LookupId("1001"); err != nil && len(values(set, "unix", "user")) != 0 {
		t.Errorf("uid 1001 has no name, yet got user selectors %v", values(set, "unix", "user"))
	}
	if !set.Matches([]Selector{{"unix", "uid", "1001"}, {"unix", "path", bin}}) {
		t.Error("an entry for uid 1001 and the binary does not match")
	}
	if set.Matches([]Selector{{"unix", "uid", "0"}}) {
		t.Error("child matches uid 0")
	}

	c.stop()
	if p.Alive() {
		t.Fatal("Alive() after the child exited and was reaped")
	}
	for _, k := range []Kind{KindAll, KindUID, KindPath} {
		if set, err := a.Attest(p, k); !errors.Is(err, ErrPeerGone) || set != nil {
			t.Errorf("Attest(%b) of exited peer = %v, %v; want ErrPeerGone", k, set, err)
		}
	}
}

// fakeProc makes a /proc-like tree with one process directory, for p, and
// makes p look as if it had connected running exe (so that Verify, which
// reads the tree too, finds the same executable).
func fakeProc(t *testing.T, p *Peer, status, cgroup, exe string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, strconv.Itoa(int(p.PID)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, from := range map[string]string{"status": status, "cgroup": cgroup} {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
		t.Fatal(err)
	}
	id, err := statExe(filepath.Join(dir, "exe"))
	if err != nil {
		t.Fatal(err)
	}
	p.exe, p.exeErr = id, nil
	return root
}

// TestAttestProcRoot reads every /proc fact from fixtures, for a live peer.
func TestAttestProcRoot(t *testing.T) {
	_, p := selfPeer(t)
	bin := filepath.Join(t.TempDir(), "server")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	root := fakeProc(t, p, "testdata/status/self.txt", "testdata/cgroup/v2-systemd-service.txt", bin)
	set, err := New(Config{ProcRoot: root}).Attest(p, KindAll&^(KindUser|KindGroup))
	if err != nil {
		t.Fatal(err)
	}
	checkValid(t, set)
	sum := sha256.Sum256([]byte("#!/bin/true\n"))
	want := Set{
		{"unix", "uid", strconv.Itoa(os.Getuid())}:     {},
		{"unix", "gid", strconv.Itoa(os.Getgid())}:     {},
		{"unix", "supplementary_gid", "4"}:             {},
		{"unix", "supplementary_gid", "24"}:            {},
		{"unix", "supplementary_gid", "27"}:            {},
		{"unix", "supplementary_gid", "1002"}:          {},
		{"unix", "path", bin}:                          {},
		{"unix", "sha256", hex.EncodeToString(sum[:])}: {},
		{"systemd", "unit", "nginx.service"}:           {},
	}
	if !slices.Equal(set.Selectors(), want.Selectors()) {
		t.Errorf("Attest =\n%v\nwant\n%v", set.Selectors(), want.Selectors())
	}

	// A malformed status file is an error, not an empty group list.
	root = fakeProc(t, p, "testdata/status/missing.txt", "testdata/cgroup/empty.txt", bin)
	if _, err := New(Config{ProcRoot: root}).Attest(p, KindSupplementaryGID); err == nil {
		t.Error("status without Groups line accepted")
	}
	// No cgroup facts: no selectors, no error.
	set, err = New(Config{ProcRoot: root}).Attest(p, KindSystemdUnit|KindDockerContainer)
	if err != nil || len(set) != 0 {
		t.Errorf("Attest(no cgroup facts) = %v, %v", set, err)
	}
}

// TestAttestExePath covers executables a path selector cannot name.
func TestAttestExePath(t *testing.T) {
	_, p := selfPeer(t)
	dir := t.TempDir()
	named := filepath.Join(dir, "x (deleted)")
	for _, name := range []string{named, filepath.Join(dir, "a\nb"), filepath.Join(dir, "a\xffb")} {
		if err := os.WriteFile(name, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, target string
		want         []string
	}{
		// A file really named "... (deleted)" is still a path.
		{"named deleted", named, []string{named}},
		{"control char", filepath.Join(dir, "a\nb"), nil},
		{"not utf8", filepath.Join(dir, "a\xffb"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeProc(t, p, "testdata/status/self.txt", "testdata/cgroup/empty.txt", tt.target)
			set, err := New(Config{ProcRoot: root}).Attest(p, KindPath)
			if err != nil {
				t.Fatal(err)
			}
			if got := values(set, "unix", "path"); !slices.Equal(got, tt.want) {
				t.Errorf("path selectors %q, want %q", got, tt.want)
			}
		})
	}
	// The kernel appends " (deleted)" to the path of an unlinked
	// executable: that path names nothing, or another file. The process
	// still runs the file it connected with, so it is attested, without
	// a path.
	t.Run("deleted", func(t *testing.T) {
		c := startChild(t, nil)
		if err := os.Remove(c.bin); err != nil {
			t.Fatal(err)
		}
		set, err := New(Config{}).Attest(c.peer, KindPath|KindUID)
		if err != nil {
			t.Fatal(err)
		}
		if got := values(set, "unix", "path"); len(got) != 0 {
			t.Errorf("path selectors %q for a deleted executable, want none", got)
		}
	})
}

// TestAttestPIDReuseGuard shows that Attest refuses what it read once the
// peer has exited, even when every read of /proc succeeded, as it would if
// the PID now belonged to another process.
func TestAttestPIDReuseGuard(t *testing.T) {
	c := startChild(t, nil)
	bin := filepath.Join(t.TempDir(), "impostor")
	if err := os.WriteFile(bin, []byte("impostor"), 0o755); err != nil {
		t.Fatal(err)
	}
	root := fakeProc(t, c.peer, "testdata/status/self.txt", "testdata/cgroup/v2-systemd-service.txt", bin)
	a := New(Config{ProcRoot: root})
	if _, err := a.Attest(c.peer, KindAll); err != nil {
		t.Fatalf("Attest of live child: %v", err)
	}
	c.stop()
	set, err := a.Attest(c.peer, KindAll)
	if !errors.Is(err, ErrPeerGone) || set != nil {
		t.Errorf("Attest after exit = %v, %v; want ErrPeerGone", set, err)
	}
}

func TestHashCache(t *testing.T) {
	_, p := selfPeer(t)
	bin := filepath.Join(t.TempDir(), "server")
	if err := os.WriteFile(bin, bytes.Repeat([]byte("a"), 300<<10), 0o755); err != nil {
		t.Fatal(err)
	}
	root := fakeProc(t, p, "testdata/status/self.txt", "testdata/cgroup/empty.txt", bin)
	later := func() time.Time { return time.Now().Add(time.Hour) }

	hash := func(a *Attestor) string {
		t.Helper()
		set, err := a.Attest(p, KindSHA256)
		if err != nil {
			t.Fatal(err)
		}
		v := values(set, "unix", "sha256")
		if len(v) != 1 {
			t.Fatalf("sha256 selectors %v", v)
		}
		return v[0]
	}

	t.Run("settled file is hashed once", func(t *testing.T) {
		a := New(Config{ProcRoot: root, Time: later})
		want := fileSHA256(t, bin)
		for range 3 {
			if got := hash(a); got != want {
				t.Fatalf("hash %s, want %s", got, want)
			}
		}
		if n := a.hashes.computed.Load(); n != 1 {
			t.Errorf("hashed %d times, want 1", n)
		}

		// New content (same size, new mtime and ctime) is a new identity.
		if err := os.WriteFile(bin, bytes.Repeat([]byte("b"), 300<<10), 0o755); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Minute)
		if err := os.Chtimes(bin, old, old); err != nil {
			t.Fatal(err)
		}
		if got, want := hash(a), fileSHA256(t, bin); got != want {
			t.Errorf("after rewrite hash %s, want %s", got, want)
		}
		if n := a.hashes.computed.Load(); n != 2 {
			t.Errorf("hashed %d times, want 2", n)
		}
	})

	t.Run("just-changed file is not cached", func(t *testing.T) {
		a := New(Config{ProcRoot: root}) // the file was written within racyWindow
		hash(a)
		hash(a)
		if n := a.hashes.computed.Load(); n != 2 {
			t.Errorf("hashed %d times, want 2", n)
		}
	})

	t.Run("concurrent first attestations hash once", func(t *testing.T) {
		a := New(Config{ProcRoot: root, Time: later})
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				if _, err := a.Attest(p, KindSHA256); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := a.hashes.computed.Load(); n != 1 {
			t.Errorf("hashed %d times, want 1", n)
		}
	})

	t.Run("too large", func(t *testing.T) {
		a := New(Config{ProcRoot: root, MaxExecutableSize: 1 << 10})
		if _, err := a.Attest(p, KindSHA256); !errors.Is(err, ErrExecutableTooLarge) {
			t.Errorf("Attest: %v, want ErrExecutableTooLarge", err)
		}
	})
}

func TestNameCache(t *testing.T) {
	_, p := selfPeer(t)
	now := time.Now()
	a := New(Config{Time: func() time.Time { return now }})
	attest := func() Set {
		t.Helper()
		set, err := a.Attest(p, KindUser|KindGroup)
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	first := attest()
	second := attest()
	if !slices.Equal(first.Selectors(), second.Selectors()) {
		t.Errorf("cached names differ: %v, %v", first.Selectors(), second.Selectors())
	}
	if u, g := a.users.lookups.Load(), a.groups.lookups.Load(); u != 1 || g != 1 {
		t.Errorf("lookups user %d group %d, want 1 and 1", u, g)
	}
	now = now.Add(defaultNameTTL + time.Second)
	attest()
	if u, g := a.users.lookups.Load(), a.groups.lookups.Load(); u != 2 || g != 2 {
		t.Errorf("after TTL lookups user %d group %d, want 2 and 2", u, g)
	}

	b := New(Config{NameTTL: -1})
	for range 2 {
		if _, err := b.Attest(p, KindUser); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.users.lookups.Load(); n != 2 {
		t.Errorf("uncached lookups %d, want 2", n)
	}
}

// TestPeerCloseWhileAlive is for the race detector.
func TestPeerCloseWhileAlive(t *testing.T) {
	_, p := selfPeer(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				p.Alive()
			}
		})
	}
	wg.Go(func() { p.Close() })
	wg.Wait()
	if p.Alive() {
		t.Error("Alive after Close")
	}
}

// settled treats every file as long unchanged, so that the benchmarks
// measure the cache hit path even for a test binary built a moment ago.
func settled() time.Time { return time.Now().Add(time.Hour) }

func BenchmarkAttest(b *testing.B) {
	for _, bc := range []struct {
		name  string
		kinds Kind
	}{
		{"uid+gid", KindUID | KindGID},
		{"creds+names", KindUID | KindGID | KindUser | KindGroup},
		{"common", KindUID | KindGID | KindUser | KindGroup | KindPath | KindSHA256},
		{"supplementary_gid", KindSupplementaryGID},
		{"path", KindPath},
		{"cgroup", KindSystemdUnit | KindDockerContainer},
		{"all", KindAll},
	} {
		b.Run(bc.name, func(b *testing.B) {
			_, p := selfPeer(b)
			a := New(Config{Time: settled})
			if _, err := a.Attest(p, bc.kinds); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Attest(p, bc.kinds); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAttestHashCacheHit(b *testing.B) {
	_, p := selfPeer(b)
	a := New(Config{Time: settled})
	if _, err := a.Attest(p, KindSHA256); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Attest(p, KindSHA256); err != nil {
			b.Fatal(err)
		}
	}
	if n := a.hashes.computed.Load(); n != 1 {
		b.Fatalf("hashed %d times, want 1", n)
	}
}

func BenchmarkPeerFromConn(b *testing.B) {
	conn, _ := selfPeer(b)
	b.ReportAllocs()
	for b.Loop() {
		p, err := PeerFromConn(conn)
		if err != nil {
			b.Fatal(err)
		}
		p.Close()
	}
}

func BenchmarkParseSelector(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSelector("unix:path:/usr/local/bin/server"); err != nil {
			b.Fatal(err)
		}
	}
}
