package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/badge-dev/badge/ca/public"
	"github.com/badge-dev/badge/ca/workload"
)

// fdReserve is the descriptors kept out of the listeners' connection caps:
// for the admin socket, the store, key files and /proc reads, so that root
// can always reach the admin API, whatever the load on the other sockets.
const fdReserve = 128

// limitFlags are the server's flags that bound what one caller can take.
type limitFlags struct {
	uidMaxConns      int
	uidSignRate      float64
	uidSignBurst     int
	listenMaxPerAddr int
	handshake        time.Duration
	minFreeMiB       uint64
}

func (l *limitFlags) register(fs *flag.FlagSet) {
	l.registerWorkload(fs)
	l.listenMaxPerAddr, l.minFreeMiB = public.DefaultMaxConnsPerAddr, 128
	fs.IntVar(&l.listenMaxPerAddr, "listen-max-conns-per-addr", l.listenMaxPerAddr, "connections one client IP address may hold to --listen (0: no limit)")
	fs.Uint64Var(&l.minFreeMiB, "min-free-mib", l.minFreeMiB, "MiB kept free on the data directory's filesystem for revocations: no new X.509-SVIDs below it, and a ballast file of a quarter of it (at most 16 MiB) released for a revocation on a full disk (0: neither)")
}

// registerWorkload registers the limits of the Workload API alone, those
// of `badge agent` too.
func (l *limitFlags) registerWorkload(fs *flag.FlagSet) {
	*l = limitFlags{
		uidMaxConns: workload.DefaultConnsPerUID, uidSignRate: workload.DefaultSignRate, uidSignBurst: workload.DefaultSignBurst,
		handshake: workload.DefaultHandshakeTimeout,
	}
	fs.IntVar(&l.uidMaxConns, "uid-max-conns", l.uidMaxConns, "Workload API connections, and calls in progress, one uid may hold (root exempt; 0: no limit)")
	fs.Float64Var(&l.uidSignRate, "uid-sign-rate", l.uidSignRate, "SVIDs (X.509 and JWT) signed per second for one uid, on average (root exempt; 0: no limit)")
	fs.IntVar(&l.uidSignBurst, "uid-sign-burst", l.uidSignBurst, "SVIDs signed at once for one uid before --uid-sign-rate applies")
	fs.Var(durationFlag{&l.handshake}, "handshake-timeout", "time a new connection has to complete its handshake (HTTP/2 preface; TLS and request header on --listen)")
}

// validate returns the first problem of check as a usage error.
func (l *limitFlags) validate() error {
	if probs := l.check(); len(probs) > 0 {
		p := probs[0]
		return usagef("invalid --%s %s: %s", p.key, p.value, p.msg)
	}
	return nil
}

// check returns a problem for every limit out of bounds, naming its flag
// and value (their origin is the caller's to fill in).
func (l *limitFlags) check() []problem {
	var probs []problem
	add := func(bad bool, key string, value any, msg string) {
		if bad {
			probs = append(probs, problem{key: key, value: fmt.Sprint(value), msg: msg})
		}
	}
	add(l.uidMaxConns < 0, "uid-max-conns", l.uidMaxConns, "want 0 (no limit) or more")
	add(l.uidSignRate < 0, "uid-sign-rate", l.uidSignRate, "want 0 (no limit) or more")
	add(l.uidSignBurst < 1, "uid-sign-burst", l.uidSignBurst, "want 1 or more")
	add(l.listenMaxPerAddr < 0, "listen-max-conns-per-addr", l.listenMaxPerAddr, "want 0 (no limit) or more")
	add(l.handshake < 100*time.Millisecond || l.handshake > 10*time.Minute, "handshake-timeout", l.handshake, "want between 100ms and 10m")
	add(l.minFreeMiB > 1<<30, "min-free-mib", l.minFreeMiB, fmt.Sprintf("want at most %d", 1<<30))
	return probs
}

// workload returns the Workload API's limits, with maxConns connections
// in all and freeSpace reporting the data directory's free bytes.
func (l *limitFlags) workload(maxConns int, freeSpace func() (uint64, error)) workload.Limits {
	lim := workload.Limits{
		ConnsPerUID: l.uidMaxConns, MaxConns: maxConns, SignRate: l.uidSignRate, SignBurst: l.uidSignBurst,
		HandshakeTimeout: l.handshake, MinFreeSpace: l.minFreeMiB << 20, FreeSpace: freeSpace,
	}
	if lim.ConnsPerUID == 0 {
		lim.ConnsPerUID = -1
	}
	if lim.SignRate == 0 {
		lim.SignRate = -1
	}
	return lim
}

// publicPerAddr is public.Config.MaxConnsPerAddr: negative for no limit.
func (l *limitFlags) publicPerAddr() int {
	if l.listenMaxPerAddr == 0 {
		return -1
	}
	return l.listenMaxPerAddr
}

// connBudget splits the descriptors the process may open, less fdReserve,
// between the Workload API (what is left), the public listener and the
// agent listener (a quarter each when on), in connections.
func connBudget(withPublic, withAgents bool, log *slog.Logger) (workloadConns, publicConns, agentConns int) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("reading the open-file limit failed; connections are not capped in all", slog.Any("error", err))
		return 0, 0, 0
	}
	limit := int(min(rl.Cur, 1<<30))
	n := limit - fdReserve
	if n < 32 {
		n = limit / 2
		log.Warn("the open-file limit leaves few descriptors for connections: raise it (ulimit -n, LimitNOFILE=)",
			slog.Int("limit", limit), slog.Int("connections", n))
	}
	quarter := max(n/4, 1)
	if withPublic {
		publicConns = quarter
		n -= quarter
	}
	if withAgents {
		agentConns = quarter
		n -= quarter
	}
	if !peerPidfdSupported() {
		n /= 2 // each Workload API connection holds a pidfd besides its socket
	}
	return max(n, 1), publicConns, agentConns
}

// peerPidfdSupported reports whether the kernel has SO_PEERPIDFD (Linux
// 6.5), with which a Workload API connection costs one descriptor.
func peerPidfdSupported() bool {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	pidfd, err := unix.GetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	if err != nil {
		return false
	}
	unix.Close(pidfd)
	return true
}

// ballastName is the file kept in the data directory as space to release
// for a revocation when the filesystem is full.
const ballastName = "ballast"

// ballastSize is the ballast for a reserve of minFree bytes: a quarter of
// it, at most 16 MiB.
func ballastSize(minFree uint64) int64 { return int64(min(minFree/4, 16<<20)) }

// ensureBallast makes sure dir holds a ballast file of size bytes, with
// its blocks allocated, and returns the function that deletes it to free
// its space (true if it did). A ballast that cannot be made is logged and
// not an error: the daemon must start on a full disk too.
func ensureBallast(dir string, size int64, log *slog.Logger) func() bool {
	if size <= 0 {
		return nil
	}
	path := filepath.Join(dir, ballastName)
	var mu sync.Mutex
	release := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if err := os.Remove(path); err != nil {
			return false
		}
		log.Error("disk full: released the ballast file for a revocation; free space in the data directory and restart to restore it",
			slog.String("path", path), slog.Int64("bytes", size))
		return true
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Size() >= size {
		return release
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o600)
	if err == nil {
		err = unix.Fallocate(int(f.Fd()), 0, 0, size)
		if errors.Is(err, unix.EOPNOTSUPP) {
			_, err = f.WriteAt(make([]byte, size), 0)
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		os.Remove(path)
		log.Warn("could not make the ballast file that keeps space for revocations on a full disk", slog.String("path", path), slog.Any("error", err))
		return nil
	}
	return release
}
