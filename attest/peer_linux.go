package attest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Peer is the process on the other end of a Unix-socket connection, as the
// kernel reported it when the connection was accepted.
//
// PID, UID and GID are those of the connecting process at connect(2) time
// (SO_PEERCRED). The PID is in the PID namespace of the process that
// called PeerFromConn. A Peer reaches that very process through a pidfd, a
// handle that stays valid if the PID is reused. Where the kernel has
// SO_PEERPIDFD (Linux 6.5), the socket itself names the process for its
// whole life, so a pidfd is asked for at each check and closed at once:
// a connection then costs one descriptor, not two, and ten thousand open
// streams fit in a default limit of twenty thousand. On older kernels the
// Peer holds the pidfd it opened at accept time. Release it with Close.
// A Peer must not be copied; pass *Peer. It is safe for concurrent use.
//
// A Peer also records which executable the process ran when the connection
// was accepted (the file /proc/<pid>/exe leads to: device, inode and birth
// time), so that a later exec(2) is seen: see Attestor.Verify.
type Peer struct {
	PID int32
	UID uint32
	GID uint32

	mu    sync.RWMutex // write-held by Close so checks never use a closed, reused descriptor
	pidfd int          // held pidfd (pidfd_open fallback), or -1
	sock  syscall.RawConn
	open  bool

	// exe is the executable at accept time; exeErr says why it is
	// unknown (the server may not inspect that process), else nil.
	exe    exeID
	exeErr error
}

// exeID identifies an executable file: a file system object, not its
// content. The birth time tells a new file from an old one whose inode
// number it reuses, where the file system records it.
type exeID struct {
	dev, ino uint64
	btime    unix.StatxTimestamp
	hasBtime bool
}

// procExe is where PeerFromConn finds the executable of a peer: always the
// real procfs, since the connection is a real one.
const procExe = "/proc"

// statExe returns the identity of the file the magic link names (for
// /proc/<pid>/exe: the executable the process runs, even if unlinked).
func statExe(link string) (exeID, error) {
	return statxID(unix.AT_FDCWD, link, 0)
}

// statExeFD returns the identity of the open file fd.
func statExeFD(fd int) (exeID, error) {
	return statxID(fd, "", unix.AT_EMPTY_PATH)
}

func statxID(dirfd int, path string, flags int) (exeID, error) {
	var stx unix.Statx_t
	for {
		err := unix.Statx(dirfd, path, flags, unix.STATX_INO|unix.STATX_BTIME, &stx)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return exeID{}, err
		}
		break
	}
	id := exeID{dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), ino: stx.Ino}
	if stx.Mask&unix.STATX_BTIME != 0 {
		id.btime, id.hasBtime = stx.Btime, true
	}
	return id, nil
}

// sameFile reports whether two identities name the same file.
func (a exeID) sameFile(b exeID) bool {
	if a.dev != b.dev || a.ino != b.ino {
		return false
	}
	return !a.hasBtime || !b.hasBtime || a.btime == b.btime
}

// PeerFromConn reads the peer credentials (SO_PEERCRED) and a pidfd
// (SO_PEERPIDFD, else pidfd_open) of an accepted Unix-socket connection.
//
// SO_PEERPIDFD (Linux 6.5) names the process that called connect(2), so it
// cannot be fooled by PID reuse. On older kernels pidfd_open(2) is used
// instead; it names whichever process holds the PID when it runs, which
// leaves a short window (between connect and this call) in which a peer
// that exited could have its PID reused.
//
// The caller must Close the Peer.
func PeerFromConn(c *net.UnixConn) (*Peer, error) {
	if c == nil {
		return nil, errors.New("attest: nil connection")
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("attest: raw connection: %w", err)
	}
	var (
		cred         *unix.Ucred
		pidfd        = -1
		credErr, pfE error
	)
	ctlErr := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil {
			pidfd, pfE = peerPidfd(int(fd))
		}
	})
	if ctlErr != nil {
		return nil, fmt.Errorf("attest: raw connection: %w", ctlErr)
	}
	if credErr != nil {
		return nil, fmt.Errorf("attest: SO_PEERCRED: %w", credErr)
	}
	p, err := newPeer(cred, pidfd, pfE)
	if err == nil {
		p.recordExe(procExe)
	}
	if pfE == nil && pidfd >= 0 {
		// From SO_PEERPIDFD: it proved the peer alive and the option
		// supported; checks ask the socket for a fresh one.
		unix.Close(pidfd)
		if err == nil {
			p.pidfd, p.sock = -1, rc
		}
	}
	return p, err
}

// peerPidfd asks the socket for a pidfd of its peer. It returns -1 and no
// error when the kernel does not know SO_PEERPIDFD.
func peerPidfd(sock int) (int, error) {
	fd, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	switch {
	case errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EINVAL):
		return -1, nil
	case err != nil:
		// No descriptor was created (EMFILE, for one): never hand back the
		// zero value, which a caller would close as if it were ours.
		return -1, err
	}
	return fd, nil
}

// newPeer builds a Peer from SO_PEERCRED and the outcome of SO_PEERPIDFD
// (pidfd < 0 and no error: not supported, fall back to pidfd_open).
func newPeer(cred *unix.Ucred, pidfd int, pidfdErr error) (*Peer, error) {
	if cred.Pid <= 0 {
		// The peer's PID namespace is not below ours (or it is not a
		// connected socket): there is no process we could inspect.
		return nil, fmt.Errorf("attest: SO_PEERCRED reports pid %d: peer is not visible in this PID namespace", cred.Pid)
	}
	if cred.Uid == 1<<32-1 || cred.Gid == 1<<32-1 {
		return nil, errors.New("attest: SO_PEERCRED reports no credentials (socket not connected?)")
	}
	switch {
	case errors.Is(pidfdErr, unix.ESRCH):
		return nil, fmt.Errorf("%w (pid %d, SO_PEERPIDFD)", ErrPeerGone, cred.Pid)
	case pidfdErr != nil:
		return nil, fmt.Errorf("attest: SO_PEERPIDFD: %w", pidfdErr)
	case pidfd < 0:
		fd, err := unix.PidfdOpen(int(cred.Pid), 0)
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("%w (pid %d, pidfd_open)", ErrPeerGone, cred.Pid)
		}
		if err != nil {
			return nil, fmt.Errorf("attest: pidfd_open(%d): %w", cred.Pid, err)
		}
		pidfd = fd
	}
	return &Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, pidfd: pidfd, open: true}, nil
}

// recordExe notes the executable the peer runs now. It needs no liveness
// check of its own: if the PID already names another process, every later
// check through the pidfd fails with ErrPeerGone.
func (p *Peer) recordExe(root string) {
	id, err := statExe(root + "/" + strconv.Itoa(int(p.PID)) + "/exe")
	if err != nil {
		// EACCES: a server that is not root may inspect only its own
		// uid's processes. ENOENT: a zombie or a kernel thread.
		p.exeErr = fmt.Errorf("executable of pid %d unknown at connect: %w", p.PID, err)
		return
	}
	p.exe = id
}

// Close releases the pidfd. It is safe to call more than once; after Close
// the Peer is no longer Alive and cannot be attested.
func (p *Peer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.open {
		return nil
	}
	p.open = false
	if p.pidfd < 0 {
		return nil
	}
	if err := unix.Close(p.pidfd); err != nil {
		return fmt.Errorf("attest: close pidfd: %w", err)
	}
	return nil
}

// withPidfd calls fn with a pidfd of the peer: the held one, or a fresh one
// from SO_PEERPIDFD, closed after fn. The caller holds p.mu (read).
func (p *Peer) withPidfd(fn func(pidfd int) error) error {
	if p.sock == nil {
		return fn(p.pidfd)
	}
	fd, err := -1, error(nil)
	if cerr := p.sock.Control(func(s uintptr) { fd, err = peerPidfd(int(s)) }); cerr != nil {
		return fmt.Errorf("%w (pid %d: connection closed: %v)", ErrNoPidfd, p.PID, cerr)
	}
	switch {
	case errors.Is(err, unix.ESRCH):
		return fmt.Errorf("%w (pid %d, SO_PEERPIDFD)", ErrPeerGone, p.PID)
	case err != nil:
		return fmt.Errorf("attest: SO_PEERPIDFD (pid %d): %w", p.PID, err)
	case fd < 0:
		return fmt.Errorf("attest: SO_PEERPIDFD (pid %d) is no longer supported", p.PID)
	}
	defer unix.Close(fd)
	return fn(fd)
}

// Alive reports whether the process that connected is still running, that
// is whether its PID still belongs to it. An exited process that its parent
// has not reaped yet (a zombie) still holds its PID and counts as alive.
func (p *Peer) Alive() bool { return p.check() == nil }

// check returns nil if the peer is alive, else ErrNoPidfd, ErrPeerGone, or
// another error from pidfd_send_signal.
func (p *Peer) check() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.open {
		return ErrNoPidfd
	}
	return p.withPidfd(func(pidfd int) error {
		// Signal 0 checks existence only. EPERM means the process exists
		// but we may not signal it (the daemon does not run as root).
		switch err := unix.PidfdSendSignal(pidfd, 0, nil, 0); {
		case err == nil, errors.Is(err, unix.EPERM):
			return nil
		case errors.Is(err, unix.ESRCH):
			return fmt.Errorf("%w (pid %d)", ErrPeerGone, p.PID)
		default:
			return fmt.Errorf("attest: pidfd_send_signal(pid %d): %w", p.PID, err)
		}
	})
}

func (p *Peer) hasPidfd() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.open
}
