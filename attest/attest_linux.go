package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"os/user"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// procKinds are the kinds that need /proc/<pid>.
const procKinds = KindSupplementaryGID | KindPath | KindSHA256 | KindSystemdUnit | KindDockerContainer

// exeKinds are the kinds that describe the executable.
const exeKinds = KindPath | KindSHA256

// Attest returns the selectors of kinds for p, and verifies afterwards that
// the process that connected is still the one inspected, running the
// executable it ran when it connected (see Verify).
//
// uid and gid come from SO_PEERCRED; user and group names are looked up
// (and cached) for them. Everything else is read from /proc/<pid>, and only
// for the kinds asked for. After the last read, Attest calls Verify: if the
// process is still alive, the PID was never reused, so every file read
// belonged to it; if it still runs the executable it connected with, what
// was read describes it as it was at connect. Otherwise Attest fails with
// ErrPeerGone or ErrPeerChanged. A Peer without a pidfd fails with
// ErrNoPidfd.
//
// Facts a process may lack (a systemd unit, a container, a path that is not
// printable UTF-8 or whose file was deleted) yield no selector. So do facts
// the server may not read (EACCES, EPERM or ENOENT from /proc for a live
// process: a server that is not root may inspect only its own uid's
// processes, and hidepid hides the others), and unix:path and
// unix:sha256 of a process whose executable was unknown at connect: they
// are left out, which can only make fewer entries match (see the package
// documentation), and a rate-limited log line says why. Any other fact that
// was asked for but cannot be established is an error, and no Set is
// returned: a name service failure, an executable larger than
// Config.MaxExecutableSize, a hashing budget spent (ErrHashBudget).
func (a *Attestor) Attest(p *Peer, kinds Kind) (Set, error) {
	if p == nil || !p.hasPidfd() {
		return nil, ErrNoPidfd
	}
	kinds &= KindAll
	set := make(Set, bits.OnesCount16(uint16(kinds))+2)
	if kinds&KindUID != 0 {
		set[Selector{typeUnix, keyUID, formatID(p.UID)}] = struct{}{}
	}
	if kinds&KindGID != 0 {
		set[Selector{typeUnix, keyGID, formatID(p.GID)}] = struct{}{}
	}
	if kinds&(KindUser|KindGroup) != 0 {
		now := a.now()
		if kinds&KindUser != 0 {
			name, ok, err := a.users.get(p.UID, now, a.nameTTL, lookupUser)
			if err != nil {
				return nil, fmt.Errorf("attest: user name of uid %d: %w", p.UID, err)
			}
			if ok {
				set[Selector{typeUnix, keyUser, name}] = struct{}{}
			}
		}
		if kinds&KindGroup != 0 {
			name, ok, err := a.groups.get(p.GID, now, a.nameTTL, lookupGroup)
			if err != nil {
				return nil, fmt.Errorf("attest: group name of gid %d: %w", p.GID, err)
			}
			if ok {
				set[Selector{typeUnix, keyGroup, name}] = struct{}{}
			}
		}
	}
	var miss missing
	if kinds&procKinds != 0 {
		if err := a.inspect(p, kinds, set, &miss); err != nil {
			// A read failing because the process exited (or exec'd) is
			// ErrPeerGone (ErrPeerChanged), not a puzzling ENOENT.
			if cerr := a.Verify(p); cerr != nil {
				return nil, cerr
			}
			return nil, err
		}
	}
	// The PID-reuse and exec guard: see the doc comment.
	if err := a.Verify(p); err != nil {
		return nil, err
	}
	if miss.kinds != 0 {
		a.logMissing(p, miss)
	}
	return set, nil
}

// Verify checks that the process that connected to p is still alive (its
// PID still names it, through the pidfd) and still runs the executable it
// ran when the connection was accepted (the same file: device, inode and
// birth time). It returns nil, ErrPeerGone, ErrPeerChanged, ErrNoPidfd, or
// another error when the check itself fails. A zombie (exited, not yet
// reaped) is gone. Where the executable was unknown at connect (the server
// may not inspect the process, or it was a zombie already), only liveness
// is checked, with /proc/<pid>/stat for zombies.
//
// A check costs a statx(2) (or the open, read and close of stat) and, where
// the kernel has SO_PEERPIDFD, three more system calls (getsockopt,
// pidfd_send_signal, close); with a held pidfd, one.
func (a *Attestor) Verify(p *Peer) error {
	if p == nil || !p.hasPidfd() {
		return ErrNoPidfd
	}
	if p.exeErr != nil {
		// No executable to compare; an exited process that its parent
		// has not reaped (a zombie) still passes the pidfd check, so ask
		// /proc, which everyone may read.
		z := a.zombie(p.PID)
		if err := p.check(); err != nil {
			return err
		}
		if z {
			return fmt.Errorf("%w (pid %d is a zombie)", ErrPeerGone, p.PID)
		}
		return nil
	}
	id, err := statExe(a.procRoot + "/" + strconv.Itoa(int(p.PID)) + "/exe")
	// Liveness after the read: if the PID was reused, what was read is
	// another process's, and the answer is ErrPeerGone.
	if cerr := p.check(); cerr != nil {
		return cerr
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		// Alive by its pidfd but without an executable: a zombie.
		return fmt.Errorf("%w (pid %d is a zombie)", ErrPeerGone, p.PID)
	case err != nil:
		return fmt.Errorf("attest: executable of pid %d cannot be verified: %w", p.PID, err)
	case !id.sameFile(p.exe):
		return fmt.Errorf("%w (pid %d)", ErrPeerChanged, p.PID)
	}
	return nil
}

// zombie reports whether /proc/<pid>/stat shows the process exited but not
// yet reaped. If it cannot be read (hidepid), it reports false.
func (a *Attestor) zombie(pid int32) bool {
	bp := bufPool.Get().(*[]byte)
	defer putBuf(bp)
	data, err := readProcFile(a.procRoot+"/"+strconv.Itoa(int(pid))+"/stat", bp)
	if err != nil {
		return false
	}
	state, ok := parseStatState(data)
	return ok && (state == 'Z' || state == 'X')
}

// missing collects the kinds left out because the server may not read them.
type missing struct {
	kinds Kind
	err   error // the first reason
}

func (m *missing) add(k Kind, err error) {
	m.kinds |= k
	if m.err == nil {
		m.err = err
	}
}

// unreadable reports whether err means that the server may not read a /proc
// file: EACCES or EPERM (not root), ENOENT (hidepid=invisible). If instead
// the process has exited, the Verify that ends Attest says so.
func unreadable(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOENT)
}

// inspect adds the selectors that come from /proc/<pid>.
func (a *Attestor) inspect(p *Peer, kinds Kind, set Set, miss *missing) error {
	pid := p.PID
	if pid <= 0 {
		return fmt.Errorf("attest: no process to inspect (pid %d)", pid)
	}
	dir := a.procRoot + "/" + strconv.Itoa(int(pid)) + "/"
	bp := bufPool.Get().(*[]byte)
	defer putBuf(bp)

	if kinds&KindSupplementaryGID != 0 {
		data, err := readProcFile(dir+"status", bp)
		switch {
		case unreadable(err):
			miss.add(KindSupplementaryGID, err)
		case err != nil:
			return err
		default:
			var arr [32]uint32
			gids, err := parseStatusGroups(data, arr[:0])
			if err != nil {
				return fmt.Errorf("attest: %sstatus: %w", dir, err)
			}
			for _, g := range gids {
				set[Selector{typeUnix, keySupplementaryGID, formatID(g)}] = struct{}{}
			}
		}
	}
	if kinds&exeKinds != 0 && p.exeErr != nil {
		// Without the executable of connect time, nothing read now could
		// be tied to it.
		miss.add(kinds&exeKinds, p.exeErr)
		kinds &^= exeKinds
	}
	if kinds&KindPath != 0 {
		path, err := exePath(p, dir, bp)
		switch {
		case unreadable(err):
			miss.add(KindPath, err)
		case err != nil:
			return err
		case path != "":
			set[Selector{typeUnix, keyPath, path}] = struct{}{}
		}
	}
	if kinds&KindSHA256 != 0 {
		sum, err := a.exeHash(p, dir+"exe")
		switch {
		case unreadable(err):
			miss.add(KindSHA256, err)
		case err != nil:
			return err
		default:
			set[Selector{typeUnix, keySHA256, sum}] = struct{}{}
		}
	}
	if kinds&(KindSystemdUnit|KindDockerContainer) != 0 {
		data, err := readProcFile(dir+"cgroup", bp)
		switch {
		case unreadable(err):
			miss.add(kinds&(KindSystemdUnit|KindDockerContainer), err)
		case err != nil:
			return err
		default:
			unit, container := parseCgroup(data)
			if kinds&KindSystemdUnit != 0 && unit != nil {
				set[Selector{typeSystemd, keyUnit, string(unit)}] = struct{}{}
			}
			if kinds&KindDockerContainer != 0 && container != nil {
				set[Selector{typeDocker, keyContainerID, string(container)}] = struct{}{}
			}
		}
	}
	return nil
}

// logMissing says, at most once per missingLogEvery, which selectors were
// left out and why.
func (a *Attestor) logMissing(p *Peer, m missing) {
	now := a.now().UnixNano()
	last := a.missLogged.Load()
	if last != 0 && now-last < int64(missingLogEvery) || !a.missLogged.CompareAndSwap(last, now) {
		return
	}
	a.log.Warn("selectors left out: the server may not read them (such selectors never match; run the server as root to attest other users' processes)",
		slog.Int("pid", int(p.PID)), slog.Int("uid", int(p.UID)), slog.String("kinds", m.kinds.String()), slog.Any("error", m.err))
}

const deletedSuffix = " (deleted)"

// exePath returns the path of the executable, or "" if it has none that a
// selector could name: the file was deleted (or replaced) since it was
// executed, or its path is not a valid path selector value.
//
// The path is read from a descriptor of the executable, after checking
// that it is the file p ran at connect, so that the path names that file
// even if the process execs (and execs back) meanwhile. Like readlink of
// /proc/<pid>/exe it is the path as the server sees it.
func exePath(p *Peer, dir string, bp *[]byte) (string, error) {
	buf := (*bp)[:cap(*bp)]
	if len(buf) < maxPath+1 {
		buf = make([]byte, maxPath+1)
		*bp = buf
	}
	link := dir + "exe"
	fd, err := openFlags(link, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("attest: open %s: %w", link, err)
	}
	defer unix.Close(fd)
	id, err := statExeFD(fd)
	if err != nil {
		return "", fmt.Errorf("attest: stat %s: %w", link, err)
	}
	if !id.sameFile(p.exe) {
		return "", fmt.Errorf("%w (pid %d)", ErrPeerChanged, p.PID)
	}
	n, err := readlink("/proc/self/fd/"+strconv.Itoa(fd), buf)
	if err != nil {
		return "", fmt.Errorf("attest: readlink of %s: %w", link, err)
	}
	if n >= len(buf) {
		return "", nil // longer than PATH_MAX: not a path we can name
	}
	target := buf[:n]
	if bytes.HasSuffix(target, []byte(deletedSuffix)) {
		// Either the file is gone (the kernel appended the suffix), or it
		// really has that name. Only the same inode at that very name
		// tells the second case apart.
		var named unix.Stat_t
		if unix.Stat(string(target), &named) != nil || uint64(named.Dev) != id.dev || named.Ino != id.ino {
			return "", nil
		}
	}
	path := string(target)
	if path == "" || pathProblem(path) != "" {
		return "", nil
	}
	return path, nil
}

func readlink(path string, buf []byte) (int, error) {
	for {
		n, err := unix.Readlink(path, buf)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// exeHash returns the SHA-256 of the executable behind the /proc/<pid>/exe
// link, as lowercase hex. The link leads to the inode the process runs,
// even when its path now names another file; it must be the one p ran at
// connect. A cache hit costs one stat. A miss is charged to p's uid (see
// Config.HashBudget) and waits for any other hashing to finish: one
// executable is hashed at a time.
func (a *Attestor) exeHash(p *Peer, link string) (string, error) {
	var st unix.Stat_t
	if err := statRetry(link, &st); err != nil {
		return "", fmt.Errorf("attest: stat %s: %w", link, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("attest: %s is not a regular file", link)
	}
	id := fileIDOf(&st)
	if id.dev != p.exe.dev || id.ino != p.exe.ino {
		return "", fmt.Errorf("%w (pid %d)", ErrPeerChanged, p.PID)
	}
	charge := func() error {
		if id.size > a.maxExe {
			return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrExecutableTooLarge, link, id.size, a.maxExe)
		}
		return a.budget.take(p.UID, id.size, a.now(), link)
	}
	compute := func() (string, error) {
		a.hashing <- struct{}{}
		defer func() { <-a.hashing }()
		fd, err := openRead(link)
		if err != nil {
			return "", fmt.Errorf("attest: open %s: %w", link, err)
		}
		defer unix.Close(fd)
		return hashFile(fd, link, id)
	}
	cacheable := func() bool {
		// Racy-git rule: the content may still change within the
		// timestamp granularity without changing the key.
		settled := a.now().Add(-racyWindow).UnixNano()
		return id.ctimeNs < settled && id.mtimeNs < settled
	}
	return a.hashes.get(id, charge, compute, cacheable)
}

func statRetry(path string, st *unix.Stat_t) error {
	for {
		if err := unix.Stat(path, st); err != unix.EINTR {
			return err
		}
	}
}

func fileIDOf(st *unix.Stat_t) fileID {
	return fileID{
		dev:     uint64(st.Dev),
		ino:     uint64(st.Ino),
		size:    st.Size,
		mtimeNs: st.Mtim.Nano(),
		ctimeNs: st.Ctim.Nano(),
	}
}

// hashFile hashes the open file fd, checking that it is the file id
// (the process may have called execve since it was looked at) and that it
// did not change meanwhile.
func hashFile(fd int, name string, id fileID) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("attest: stat %s: %w", name, err)
	}
	if fileIDOf(&st) != id {
		return "", fmt.Errorf("attest: %s changed during attestation", name)
	}
	bp := hashBufPool.Get().(*[]byte)
	defer hashBufPool.Put(bp)
	buf := *bp
	h := sha256.New()
	var off int64
	for {
		n, err := unix.Pread(fd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("attest: read %s: %w", name, err)
		}
		if n == 0 {
			break
		}
		h.Write(buf[:n])
		off += int64(n)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("attest: stat %s: %w", name, err)
	}
	if fileIDOf(&st) != id || off != id.size {
		return "", fmt.Errorf("attest: %s changed while it was hashed", name)
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])), nil
}

var hashBufPool = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// bufPool holds buffers for /proc files and readlink.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func putBuf(bp *[]byte) {
	if cap(*bp) <= 64<<10 {
		bufPool.Put(bp)
	}
}

// maxProcFile bounds what readProcFile reads. A status file of a process in
// 65536 groups is about 720 KiB.
const maxProcFile = 1 << 20

func openRead(path string) (int, error) {
	return openFlags(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY)
}

func openFlags(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// readProcFile reads a whole (small) file into *bp, growing it if needed.
func readProcFile(path string, bp *[]byte) ([]byte, error) {
	fd, err := openRead(path)
	if err != nil {
		return nil, fmt.Errorf("attest: open %s: %w", path, err)
	}
	defer unix.Close(fd)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			if cap(b) == 0 {
				b = make([]byte, 0, 4096)
			} else if cap(b) >= maxProcFile {
				return nil, fmt.Errorf("attest: %s is larger than %d bytes", path, maxProcFile)
			} else {
				b = append(b, make([]byte, cap(b))...)[:len(b)]
			}
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("attest: read %s: %w", path, err)
		}
		if n == 0 {
			break
		}
		b = b[:len(b)+n]
	}
	*bp = b
	return b, nil
}

func lookupUser(uid uint32) (string, bool, error) {
	u, err := user.LookupId(formatID(uid))
	var unknown user.UnknownUserIdError
	if errors.As(err, &unknown) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return u.Username, true, nil
}

func lookupGroup(gid uint32) (string, bool, error) {
	g, err := user.LookupGroupId(formatID(gid))
	var unknown user.UnknownGroupIdError
	if errors.As(err, &unknown) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return g.Name, true, nil
}
