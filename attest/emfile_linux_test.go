package attest

import (
	"errors"
	"net"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPeerFromConnOutOfDescriptors: when the kernel cannot create the
// pidfd (EMFILE), PeerFromConn fails cleanly and closes no descriptor that
// is not its own. It once closed descriptor 0, which a later pidfd or
// socket reuses, breaking attestation of unrelated callers.
func TestPeerFromConnOutOfDescriptors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	// The lowest free descriptor number: with the limit set to it, the
	// next descriptor the kernel would create fails with EMFILE.
	lowest, err := unix.Dup(0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(lowest)
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(lowest)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	p, perr := PeerFromConn(server)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if perr == nil {
		p.Close()
		t.Skip("the kernel created a pidfd beyond the descriptor limit; nothing to check")
	}
	if !errors.Is(perr, unix.EMFILE) {
		t.Fatalf("PeerFromConn out of descriptors = %v, want EMFILE", perr)
	}
	if _, err := unix.FcntlInt(0, unix.F_GETFD, 0); err != nil {
		t.Fatalf("descriptor 0 was closed by a failed PeerFromConn: %v", err)
	}
	// And with descriptors again, the same connection attests.
	p, err = PeerFromConn(server)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !p.Alive() {
		t.Fatal("peer not alive")
	}
}
