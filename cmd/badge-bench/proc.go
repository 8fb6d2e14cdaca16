package main

// Reading the daemon and the host: the daemon's pid from the socket's peer
// credentials, CPU time and memory from /proc.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// listenerPID returns the pid of the process that listens on the Unix
// socket at path: the peer credentials (SO_PEERCRED) of a connection to it
// are those of the process that called listen(2). This needs no privilege
// and works for any server, a badge daemon or a SPIRE agent alike. It is
// not the daemon when another process created the socket and handed it
// over (systemd socket activation): --server-pid is for that case.
func listenerPID(ctx context.Context, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("peer credentials of %s: %w", path, credErr)
	}
	if cred.Pid <= 0 {
		return 0, fmt.Errorf("the process listening on %s is in another PID namespace", path)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", cred.Pid)); err != nil {
		return 0, fmt.Errorf("pid %d, which listens on %s, is not in /proc: %w", cred.Pid, path, err)
	}
	return int(cred.Pid), nil
}

// procUsage is a process's CPU time and resident memory at one moment.
type procUsage struct {
	utime, stime uint64 // clock ticks in user and kernel mode
	rssKiB       uint64 // VmRSS
	anonKiB      uint64 // RssAnon: VmRSS without mapped files (the database)
}

func (u procUsage) cpuMS() float64 { return ticksMS(u.utime + u.stime) }

func ticksMS(t uint64) float64 { return float64(t) * 1000 / float64(clockTicks()) }

func readProcUsage(pid int) (procUsage, error) {
	if pid == 0 {
		return procUsage{}, errors.New("no daemon pid")
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procUsage{}, err
	}
	ut, st, err := parseProcStat(string(stat))
	if err != nil {
		return procUsage{}, err
	}
	st2, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procUsage{}, err
	}
	rss, anon, err := parseProcStatusRSS(string(st2))
	if err != nil {
		return procUsage{}, err
	}
	return procUsage{utime: ut, stime: st, rssKiB: rss, anonKiB: anon}, nil
}

// daemons returns the daemons' pids, each once, or none if one is
// unknown: a sum without it would pass for all of them.
func (b *bench) daemons() []int {
	var out []int
	for _, pid := range b.pids {
		if pid == 0 {
			return nil
		}
		if !slices.Contains(out, pid) {
			out = append(out, pid)
		}
	}
	return out
}

// usage reads the CPU time and memory of every daemon: their sum, and
// each one's by pid. It fails if there is none or one cannot be read.
func (b *bench) usage() (procUsage, map[int]procUsage, error) {
	pids := b.daemons()
	if len(pids) == 0 {
		return procUsage{}, nil, errors.New("no daemon pid")
	}
	var sum procUsage
	each := make(map[int]procUsage, len(pids))
	for _, pid := range pids {
		u, err := readProcUsage(pid)
		if err != nil {
			return procUsage{}, nil, fmt.Errorf("pid %d: %w", pid, err)
		}
		each[pid] = u
		sum.utime += u.utime
		sum.stime += u.stime
		sum.rssKiB += u.rssKiB
		sum.anonKiB += u.anonKiB
	}
	return sum, each, nil
}

// parseProcStat returns utime and stime (fields 14 and 15, clock ticks) of
// a /proc/PID/stat line. The command name (field 2) may contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseProcStat(s string) (utime, stime uint64, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("/proc stat: no command name")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc stat: %d fields after the command name, want at least 13", len(f))
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("/proc stat: utime: %w", err)
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("/proc stat: stime: %w", err)
	}
	return utime, stime, nil
}

// parseProcStatusRSS returns VmRSS and RssAnon (0 if the kernel does not
// report it) in KiB from /proc/PID/status.
func parseProcStatusRSS(s string) (rss, anon uint64, err error) {
	found := false
	for line := range strings.Lines(s) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "RssAnon") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc status: malformed %s line %q", name, strings.TrimSpace(line))
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc status: %s: %w", name, err)
		}
		if name == "VmRSS" {
			rss, found = v, true
		} else {
			anon = v
		}
	}
	if !found {
		return 0, 0, errors.New("/proc status: no VmRSS (a kernel thread or a zombie?)")
	}
	return rss, anon, nil
}

// parseProcMaxOpenFiles returns the soft "Max open files" of /proc/PID/limits.
func parseProcMaxOpenFiles(s string) (uint64, error) {
	for line := range strings.Lines(s) {
		rest, ok := strings.CutPrefix(line, "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 1 {
			break
		}
		if f[0] == "unlimited" {
			return math.MaxUint64, nil
		}
		return strconv.ParseUint(f[0], 10, 64)
	}
	return 0, errors.New("/proc limits: no Max open files line")
}

var clockTicks = sync.OnceValue(func() uint64 {
	if data, err := os.ReadFile("/proc/self/auxv"); err == nil {
		if t, ok := auxvClockTicks(data); ok {
			return t
		}
	}
	return 100 // USER_HZ on every Linux architecture Go supports
})

// auxvClockTicks finds AT_CLKTCK, the unit of /proc CPU times, in the
// auxiliary vector (pairs of native words).
func auxvClockTicks(auxv []byte) (uint64, bool) {
	const atClkTck = 17
	word := strconv.IntSize / 8
	for len(auxv) >= 2*word {
		var k, v uint64
		if word == 8 {
			k, v = binary.NativeEndian.Uint64(auxv), binary.NativeEndian.Uint64(auxv[8:])
		} else {
			k, v = uint64(binary.NativeEndian.Uint32(auxv)), uint64(binary.NativeEndian.Uint32(auxv[4:]))
		}
		if k == 0 {
			break
		}
		if k == atClkTck && v > 0 {
			return v, true
		}
		auxv = auxv[2*word:]
	}
	return 0, false
}

// hostSample is the busy CPU time of the machine and of badge-bench's own
// processes, in clock ticks.
type hostSample struct{ busy, bench uint64 }

func (b *bench) sampleHost() hostSample {
	var h hostSample
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		h.busy, _ = parseProcStatBusy(string(data))
	}
	pids := []int{os.Getpid()}
	for _, g := range b.groups {
		if c, ok := g.(*childGroup); ok {
			pids = append(pids, c.cmd.Process.Pid)
		}
	}
	for _, pid := range pids {
		if u, err := readProcUsage(pid); err == nil {
			h.bench += u.utime + u.stime
		}
	}
	return h
}

// hostReport says how busy the machine was over a window of d, and with
// what: on a shared machine, other processes skew every figure.
func (b *bench) hostReport(h0, h1 hostSample, d0, d1 procUsage, d time.Duration) *hostReport {
	if h1.busy == 0 || d <= 0 {
		return nil
	}
	cores := func(ticks uint64) float64 { return roundTo(ticksMS(ticks)/float64(d.Milliseconds()), 2) }
	r := &hostReport{CPUs: runtime.NumCPU(), BusyCores: cores(h1.busy - h0.busy), BenchCores: cores(h1.bench - h0.bench)}
	if len(b.daemons()) > 0 && d1.utime != 0 {
		r.DaemonCores = cores(d1.utime + d1.stime - d0.utime - d0.stime)
	}
	r.OtherCores = roundTo(max(r.BusyCores-r.BenchCores-r.DaemonCores, 0), 2)
	return r
}

// parseProcStatBusy returns the busy time of all CPUs (user, nice, system,
// irq, softirq, steal; guest time is part of user) from /proc/stat.
func parseProcStatBusy(s string) (uint64, error) {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: no cpu line")
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // skip idle (4) and iowait (5)
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return busy, nil
}
