package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/internal/socketpath"
)

func TestUIDRangeParse(t *testing.T) {
	good := []struct {
		in          string
		first, last uint32
	}{
		{"1001-1016", 1001, 1016},
		{"0-0", 0, 0},
		{"1001", 1001, 1001},
		{"0", 0, 0},
		{"4294967294", 4294967294, 4294967294},
		{"1000-2023", 1000, 2023}, // benchMaxUIDs exactly
	}
	for _, tt := range good {
		t.Run(tt.in, func(t *testing.T) {
			r, err := parseUIDRange(tt.in)
			if err != nil {
				t.Fatalf("parseUIDRange(%q): %v", tt.in, err)
			}
			if !r.set || r.first != tt.first || r.last != tt.last {
				t.Fatalf("parseUIDRange(%q) = %+v, want %d-%d", tt.in, r, tt.first, tt.last)
			}
			if r.len() != int(tt.last-tt.first)+1 {
				t.Errorf("len = %d", r.len())
			}
			again, err := parseUIDRange(r.String())
			if err != nil || again != r {
				t.Errorf("round trip through %q: %+v, %v", r.String(), again, err)
			}
		})
	}
	bad := []string{
		"", "-", "1001-", "-1016", "-5", "1016-1001", "a-b", "1001-10x6", "10 01", " 1001", "1001-1016 ",
		"1001-1016-1020", "+1001", "1001--1016", "4294967295", "1-4294967295", "4294967296", "99999999999999999999",
		"1000-2024", // one uid over benchMaxUIDs
		"0-4294967294",
		"0x10", "1e3",
	}
	for _, in := range bad {
		t.Run("bad/"+in, func(t *testing.T) {
			if r, err := parseUIDRange(in); err == nil {
				t.Fatalf("parseUIDRange(%q) = %+v, want an error", in, r)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	hundred := make([]int64, 100)
	for i := range hundred {
		hundred[i] = int64(i + 1)
	}
	thousand := make([]int64, 1000)
	for i := range thousand {
		thousand[i] = int64(i + 1)
	}
	tests := []struct {
		name   string
		sorted []int64
		p      float64
		want   int64
	}{
		{"empty", nil, 50, 0},
		{"one", []int64{7}, 50, 7},
		{"one p99", []int64{7}, 99, 7},
		{"one p0", []int64{7}, 0, 7},
		{"two p50", []int64{1, 2}, 50, 1},
		{"two p51", []int64{1, 2}, 51, 2},
		{"two p100", []int64{1, 2}, 100, 2},
		{"hundred p50", hundred, 50, 50},
		{"hundred p90", hundred, 90, 90},
		{"hundred p99", hundred, 99, 99},
		{"hundred p99.9", hundred, 99.9, 100},
		{"thousand p99.9", thousand, 99.9, 999}, // 99.9/100*1000 is 999.0000000000001 in floating point
		{"thousand p99", thousand, 99, 990},
		{"thousand p90", thousand, 90, 900},
		{"hundred p100", hundred, 100, 100},
		{"hundred p1", hundred, 1, 1},
		{"ten p99", []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99, 10},
		{"negative values", []int64{-5, -1, 3}, 50, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %d, want %d", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestPercentileSummarize(t *testing.T) {
	if s := summarize(nil); s != nil {
		t.Fatalf("summarize(nil) = %+v, want nil", s)
	}
	// 1..1000 µs, shuffled: summarize must sort a copy.
	ns := make([]int64, 1000)
	for i := range ns {
		ns[i] = int64((i*7919)%1000+1) * int64(time.Microsecond)
	}
	orig := slices.Clone(ns)
	s := summarize(ns)
	if !slices.Equal(ns, orig) {
		t.Error("summarize reordered its input")
	}
	want := latencyStats{N: 1000, Min: 0.001, Mean: 0.5005, P50: 0.5, P90: 0.9, P99: 0.99, P999: 0.999, Max: 1}
	if *s != want {
		t.Errorf("summarize = %+v, want %+v", *s, want)
	}
}

// A /proc/PID/stat line whose command name has spaces and parentheses.
const procStatFixture = "32535 (badge (x) srv) S 1 32535 32535 0 -1 4194560 5188 0 0 0 812 197 0 0 20 0 7 0 3660 2509885440 9761 18446744073709551615 4194304 14157093 140722891519488 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0 26152960 26597264 40730624 140722891522271 140722891522388 140722891522388 140722891522019 0\n"

func TestProcStat(t *testing.T) {
	ut, st, err := parseProcStat(procStatFixture)
	if err != nil {
		t.Fatal(err)
	}
	if ut != 812 || st != 197 {
		t.Errorf("parseProcStat = %d, %d, want 812, 197", ut, st)
	}
	for _, bad := range []string{
		"",
		"32535 badge S 1",       // no parentheses
		"32535 (badge) S 1 2 3", // truncated
		"32535 (badge) S 1 2 3 4 5 6 7 8 9 10 x 197 0",  // utime not a number
		"32535 (badge) S 1 2 3 4 5 6 7 8 9 10 812 -1 0", // stime negative
	} {
		if _, _, err := parseProcStat(bad); err == nil {
			t.Errorf("parseProcStat(%q): no error", bad)
		}
	}
}

func TestProcStatOfThisProcess(t *testing.T) {
	u, err := readProcUsage(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if u.rssKiB == 0 {
		t.Errorf("RSS of this process is 0: %+v", u)
	}
	if _, err := readProcUsage(0); err == nil {
		t.Error("readProcUsage(0): no error")
	}
}

func TestProcStatusRSS(t *testing.T) {
	const status = "Name:\tbadge\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 2451504 kB\nVmHWM:\t   40000 kB\nVmRSS:\t   39044 kB\nRssAnon:\t   20000 kB\nThreads:\t7\n"
	rss, anon, err := parseProcStatusRSS(status)
	if err != nil || rss != 39044 || anon != 20000 {
		t.Errorf("parseProcStatusRSS = %d, %d, %v, want 39044, 20000", rss, anon, err)
	}
	// Kernels before 4.5 have no RssAnon.
	rss, anon, err = parseProcStatusRSS("VmRSS:\t  1234 kB\n")
	if err != nil || rss != 1234 || anon != 0 {
		t.Errorf("without RssAnon: %d, %d, %v", rss, anon, err)
	}
	for _, bad := range []string{
		"", "Name:\tkworker\nThreads:\t1\n", "VmRSS:\t12 MB\n", "VmRSS:\tlots kB\n", "VmRSS:\n",
		"RssAnon:\t20000 kB\n", "VmRSS:\t1 kB\nRssAnon:\t-1 kB\n",
	} {
		if _, _, err := parseProcStatusRSS(bad); err == nil {
			t.Errorf("parseProcStatusRSS(%q): no error", bad)
		}
	}
}

func TestProcMaxOpenFiles(t *testing.T) {
	const limits = "Limit                     Soft Limit           Hard Limit           Units     \n" +
		"Max cpu time              unlimited            unlimited            seconds   \n" +
		"Max open files            20000                524288               files     \n" +
		"Max locked memory         8388608              8388608              bytes     \n"
	got, err := parseProcMaxOpenFiles(limits)
	if err != nil || got != 20000 {
		t.Errorf("parseProcMaxOpenFiles = %d, %v, want 20000", got, err)
	}
	got, err = parseProcMaxOpenFiles("Max open files            unlimited            unlimited            files\n")
	if err != nil || got != math.MaxUint64 {
		t.Errorf("unlimited: %d, %v", got, err)
	}
	for _, bad := range []string{"", "Max cpu time unlimited unlimited seconds\n", "Max open files\n", "Max open files  many  many files\n"} {
		if _, err := parseProcMaxOpenFiles(bad); err == nil {
			t.Errorf("parseProcMaxOpenFiles(%q): no error", bad)
		}
	}
}

func TestProcStatBusy(t *testing.T) {
	const stat = "cpu  100 5 30 9000 40 1 2 3 7 0\ncpu0 50 2 15 4500 20 1 1 2 3 0\nintr 1 2 3\n"
	got, err := parseProcStatBusy(stat)
	if want := uint64(100 + 5 + 30 + 1 + 2 + 3); err != nil || got != want {
		t.Errorf("parseProcStatBusy = %d, %v, want %d", got, err, want)
	}
	for _, bad := range []string{"", "intr 1 2 3\n", "cpu 1 2 3\n", "cpu a 5 30 9000 40 1 2 3 0 0\n"} {
		if _, err := parseProcStatBusy(bad); err == nil {
			t.Errorf("parseProcStatBusy(%q): no error", bad)
		}
	}
}

func TestProcAuxvClockTicks(t *testing.T) {
	word := strconv.IntSize / 8
	auxv := func(pairs ...uint64) []byte {
		var b []byte
		for _, v := range pairs {
			if word == 8 {
				b = binary.NativeEndian.AppendUint64(b, v)
			} else {
				b = binary.NativeEndian.AppendUint32(b, uint32(v))
			}
		}
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want uint64
		ok   bool
	}{
		{"found", auxv(33, 0x7fff, 6, 4096, 17, 100, 3, 0x400040, 0, 0), 100, true},
		{"other rate", auxv(17, 250, 0, 0), 250, true},
		{"after terminator", auxv(6, 4096, 0, 0, 17, 100), 0, false},
		{"missing", auxv(6, 4096, 0, 0), 0, false},
		{"zero rate", auxv(17, 0, 0, 0), 0, false},
		{"truncated", auxv(6, 4096, 17)[:3*word+1], 0, false},
		{"empty", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := auxvClockTicks(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("auxvClockTicks = %d, %v, want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if data, err := os.ReadFile("/proc/self/auxv"); err == nil {
		if _, ok := auxvClockTicks(data); !ok {
			t.Error("no AT_CLKTCK in /proc/self/auxv")
		}
	}
}

func TestBenchFlags(t *testing.T) {
	noEnv := func(string) string { return "" }
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, getenv: noEnv}
	c, err := e.parseBench(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.mode != benchFetch || c.workers != 4 || c.duration != 10*time.Second || !slices.Equal(c.sockets, []string{socketpath.DefaultWorkload}) ||
		c.adminSocket != socketpath.DefaultAdmin || c.uids.set || c.samples != "" {
		t.Errorf("defaults: %+v", c)
	}
	c, err = e.parseBench([]string{"--mode", "stream", "--workers", "32", "--uids", "1001-1016", "--duration", "2s",
		"--socket", "unix:///run/w.sock", "--samples", "/tmp/s.csv", "--json"})
	if err != nil {
		t.Fatal(err)
	}
	if c.mode != benchStream || c.workers != 32 || c.uids.len() != 16 || !slices.Equal(c.sockets, []string{"/run/w.sock"}) || !c.asJSON || c.samples != "/tmp/s.csv" {
		t.Errorf("parsed: %+v", c)
	}
	// Fleet: a minute to get ready, four rotations of every workload.
	c, err = e.parseBench([]string{"--mode", "fleet", "--server", "127.0.0.1:8443", "--svid-ttl", "30s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.agents != 100 || c.workloads != 100 || c.svidTTL != 30*time.Second || c.duration != time.Minute || c.timeout != time.Minute {
		t.Errorf("fleet defaults: %+v", c)
	}
	c, err = e.parseBench([]string{"--mode", "fleet", "--server", "127.0.0.1:8443", "--agents", "2", "--workloads", "3", "--duration", "0", "--timeout", "5s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.agents != 2 || c.workloads != 3 || c.svidTTL != time.Minute || c.duration != 0 || c.timeout != 5*time.Second {
		t.Errorf("fleet: %+v", c)
	}
	if c, err = e.parseBench([]string{"--mode", "propagation", "--node", "web-1"}); err != nil || c.node != "web-1" {
		t.Errorf("propagation --node web-1: %+v, %v", c, err)
	}
	// The sockets come from the environment as in the badge CLI.
	e.getenv = func(k string) string {
		return map[string]string{"SPIFFE_ENDPOINT_SOCKET": "unix:///spire/api.sock", "BADGE_SOCKET": "/b.sock", "BADGE_ADMIN_SOCKET": "/a.sock"}[k]
	}
	if c, err = e.parseBench(nil); err != nil || !slices.Equal(c.sockets, []string{"/spire/api.sock"}) || c.adminSocket != "/a.sock" {
		t.Errorf("from the environment: %q, %q, %v", c.sockets, c.adminSocket, err)
	}
	e.getenv = noEnv
	for _, args := range [][]string{
		{"--mode", "bogus"},
		{"--workers", "0"},
		{"--workers", "-3"},
		{"--workers", "many"},
		{"--uids", "1016-1001"},
		{"--uids", "1001-1016", "--workers", "4"},
		{"--duration", "0s"},
		{"--duration", "-1s"},
		{"--timeout", "0s"},
		{"--count", "0"},
		{"--mode", "jwt", "--audience", ""},
		{"--trust-domain", "Not A Domain"},
		{"--server-pid", "-1"},
		{"--socket", "relative.sock"},
		{"--admin-socket", "relative.sock"},
		{"--nope"},
		{"extra"},
		{"--mode", "fleet"}, // no --server
		{"--mode", "fleet", "--server", "no-port"},
		{"--mode", "fleet", "--server", "h:1", "--agents", "0"},
		{"--mode", "fleet", "--server", "h:1", "--workloads", "0"},
		{"--mode", "fleet", "--server", "h:1", "--agents", "1000", "--workloads", "10000"},
		{"--mode", "fleet", "--server", "h:1", "--svid-ttl", "5s"},
		{"--mode", "fleet", "--server", "h:1", "--node-entries", "0"},
		{"--mode", "stream", "--node-entries", "2"},
		{"--mode", "fleet", "--server", "h:1", "--workers", "8"},
		{"--mode", "fleet", "--server", "h:1", "--uids", "1001-1002"},
		{"--mode", "fleet", "--server", "h:1", "--node", "web-1"},
		{"--mode", "stream", "--agents", "3"},
		{"--mode", "fetch", "--server", "h:1"},
		{"--mode", "fetch", "--node", "web-1"},
	} {
		_, err := e.parseBench(args)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseBench(%q) = %v, want a usage error", args, err)
		}
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--mode", "bogus"}, strings.NewReader(""), &out, &errOut, noEnv); code != exitUsage {
		t.Errorf("badge-bench --mode bogus: exit %d, want %d", code, exitUsage)
	}
	if n := strings.Count(errOut.String(), "\n"); n != 1 || !strings.Contains(errOut.String(), `"bogus"`) {
		t.Errorf("badge-bench --mode bogus printed %q, want one line naming the value", errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"-h"}, strings.NewReader(""), &out, &errOut, noEnv); code != exitOK {
		t.Errorf("badge-bench -h: exit %d, want %d", code, exitOK)
	}
	for _, f := range []string{"--samples", "--server-pid", "--uids", "--mode", "--agents", "--workloads", "--node-entries", "--server", "--svid-ttl", "--node"} {
		if !strings.Contains(errOut.String(), "  -"+strings.TrimPrefix(f, "--")) {
			t.Errorf("badge-bench -h does not list %s:\n%s", f, errOut.String())
		}
	}
}

// TestBenchSocketsFlags: --socket takes several servers' sockets, and
// --server-pid then one pid for each.
func TestBenchSocketsFlags(t *testing.T) {
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	good := []struct {
		args    []string
		sockets []string
		pids    []int
	}{
		{[]string{"--socket", "/a.sock"}, []string{"/a.sock"}, nil},
		{[]string{"--socket", "/a.sock", "--server-pid", "0"}, []string{"/a.sock"}, nil},
		{[]string{"--socket", "/a.sock", "--server-pid", "42"}, []string{"/a.sock"}, []int{42}},
		{[]string{"--socket", "/a.sock,unix:///b.sock,/c/../c.sock"}, []string{"/a.sock", "/b.sock", "/c.sock"}, nil},
		{[]string{"--socket", "/a.sock,/b.sock", "--server-pid", "7,8"}, []string{"/a.sock", "/b.sock"}, []int{7, 8}},
		{[]string{"--socket", "/a,/b,/c,/d", "--workers", "4", "--uids", "1001-1002"}, []string{"/a", "/b", "/c", "/d"}, nil},
		{[]string{"--mode", "fleet", "--server", "h:1", "--server-pid", "9"}, []string{socketpath.DefaultWorkload}, []int{9}},
	}
	for _, tt := range good {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			c, err := e.parseBench(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.sockets, tt.sockets) || !slices.Equal(c.serverPIDs, tt.pids) {
				t.Errorf("sockets %q, pids %v; want %q, %v", c.sockets, c.serverPIDs, tt.sockets, tt.pids)
			}
		})
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--socket", "/a.sock,"}, "an empty path"},
		{[]string{"--socket", ",/a.sock"}, "an empty path"},
		{[]string{"--socket", "/a.sock,rel.sock"}, `"rel.sock"`},
		{[]string{"--socket", "/a.sock,/b.sock,/a.sock"}, "/a.sock is given twice"},
		{[]string{"--socket", "/a.sock,unix:///a.sock"}, "/a.sock is given twice"},
		{[]string{"--socket", "/a,/b,/c,/d,/e"}, "--workers 4 is fewer than the 5 sockets"},
		{[]string{"--socket", "/a.sock,/b.sock", "--server-pid", "7"}, "1 pids for 2 sockets"},
		{[]string{"--socket", "/a.sock", "--server-pid", "7,8"}, "2 pids for 1 sockets"},
		{[]string{"--socket", "/a.sock,/b.sock", "--server-pid", "7,"}, `"" is not a pid`},
		{[]string{"--socket", "/a.sock,/b.sock", "--server-pid", "7,-8"}, `"-8" is not a pid`},
		{[]string{"--socket", "/a.sock,/b.sock", "--server-pid", "7,+8"}, `"+8" is not a pid`},
		{[]string{"--socket", "/a.sock,/b.sock", "--server-pid", "7,0"}, `"0" is not a pid`},
		{[]string{"--server-pid", "99999999999"}, `"99999999999" is not a pid`},
		{[]string{"--server-pid", "-1"}, `"-1" is not a pid`},
		{[]string{"--mode", "fleet", "--server", "h:1", "--server-pid", "7,8"}, "--server-pid takes one pid"},
		{[]string{"--mode", "fleet", "--server", "h:1", "--socket", "/a,/b"}, "--socket is not for --mode fleet"},
	}
	for _, tt := range bad {
		t.Run("bad/"+strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := e.parseBench(tt.args)
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseBench(%q) = %v, want a usage error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestBenchMissingSocket(t *testing.T) {
	var out, errOut bytes.Buffer
	sock := filepath.Join(t.TempDir(), "none.sock")
	code := run(context.Background(), []string{"--socket", sock, "--duration", "1s"}, strings.NewReader(""), &out, &errOut, os.Getenv)
	if code != exitFailure || !strings.Contains(errOut.String(), sock) {
		t.Errorf("exit %d, stderr %q: want failure naming the socket", code, errOut.String())
	}
}

func TestBenchStreamSetRecord(t *testing.T) {
	s := newStreamSet([]string{"/nonexistent"}, 0)
	s.nOpen = 2
	const a, b = "spiffe://example.org/a", "spiffe://example.org/new"
	s.recordLocked(nil, []string{a}, 10)
	s.recordLocked(nil, []string{a}, 11)
	s.recordLocked([]string{a}, []string{a, b}, 20)
	s.recordLocked([]string{a}, []string{a}, 21) // a rotation: nothing new
	ctx := context.Background()
	if got := s.wait(ctx, a, false, time.Second); !slices.Equal(got, []int64{10, 11}) {
		t.Errorf("wait(a) = %v", got)
	}
	// Only one of two streams has b: wait gives up after its timeout.
	start := time.Now()
	if got := s.wait(ctx, b, false, 50*time.Millisecond); !slices.Equal(got, []int64{20}) {
		t.Errorf("wait(b) = %v, want [20]", got)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Error("wait returned before its timeout")
	}
	// The second stream gets b while someone may be waiting: whether the
	// waiter is already blocked or checks afterwards, it must see both.
	done := make(chan []int64)
	go func() { done <- s.wait(ctx, b, false, 10*time.Second) }()
	s.mu.Lock()
	s.recordLocked([]string{a}, []string{b, a}, 30)
	s.mu.Unlock()
	if got := <-done; !slices.Equal(got, []int64{20, 30}) {
		t.Errorf("wait(b) = %v, want [20 30]", got)
	}
	s.recordLocked([]string{a, b}, []string{a}, 40)
	s.recordLocked([]string{b, a}, []string{a}, 41)
	if got := s.wait(ctx, b, true, time.Second); !slices.Equal(got, []int64{40, 41}) {
		t.Errorf("wait(b gone) = %v", got)
	}
	s.close() // never opened: nothing to do
}

func TestBenchChildProtocol(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- runChild(context.Background(), inR, outW); outW.Close() }()
	enc, dec := json.NewEncoder(inW), json.NewDecoder(outR)
	roundTrip := func(m childMsg) childMsg {
		t.Helper()
		if err := enc.Encode(m); err != nil {
			t.Fatal(err)
		}
		var r childMsg
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	spec := benchSpec{Mode: benchStream, Sockets: []string{"/nonexistent.sock"}, Workers: 1, Duration: time.Second, Timeout: time.Second}
	if r := roundTrip(childMsg{Spec: &spec}); !r.Ready {
		t.Fatalf("after the spec: %+v, want ready", r)
	}
	if r := roundTrip(childMsg{Cmd: "wait", ID: "spiffe://example.org/x"}); r.Err == "" {
		t.Errorf("wait before go: %+v, want an error", r)
	}
	if r := roundTrip(childMsg{Cmd: "dance"}); r.Err == "" {
		t.Errorf("unknown command: %+v, want an error", r)
	}
	if r := roundTrip(childMsg{Cmd: "close"}); !r.Ready {
		t.Errorf("close: %+v", r)
	}
	if err := <-done; err != nil {
		t.Errorf("runChild: %v", err)
	}
	inW.Close()

	// Anything but a spec first is a usage error.
	var out bytes.Buffer
	err := runChild(context.Background(), strings.NewReader(`{"cmd":"go"}`+"\n"), &out)
	var ue usageError
	if !errors.As(err, &ue) {
		t.Errorf("runChild without a spec: %v, want a usage error", err)
	}
	// So is a spec without a socket.
	err = runChild(context.Background(), strings.NewReader(`{"spec":{"mode":"fetch","workers":1}}`+"\n"), &out)
	if !errors.As(err, &ue) {
		t.Errorf("runChild with a spec without sockets: %v, want a usage error", err)
	}
}

func TestBenchWorldExecutable(t *testing.T) {
	dir := t.TempDir()
	// Open up the directories above that the test created (the rest of
	// the path is the system's temporary directory).
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p := os.TempDir(); ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o001 == 0 {
			t.Skipf("%s is not searchable by others", p)
		}
		if p == filepath.Dir(p) {
			break
		}
	}
	exe := filepath.Join(dir, "badge-bench")
	if err := os.WriteFile(exe, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !worldExecutable(exe) {
		t.Errorf("%s (0755 in 0755 directories) is not world-executable", exe)
	}
	if err := os.Chmod(exe, 0o750); err != nil {
		t.Fatal(err)
	}
	if worldExecutable(exe) {
		t.Error("a 0750 file is world-executable")
	}
	if err := os.Chmod(exe, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if worldExecutable(exe) {
		t.Error("a file in a 0750 directory is world-executable")
	}
	if worldExecutable(dir) {
		t.Error("a directory is world-executable")
	}
	if worldExecutable(filepath.Join(dir, "missing")) {
		t.Error("a missing file is world-executable")
	}
	os.Chmod(dir, 0o755)

	// copyFile keeps the content and applies the mode.
	cp := filepath.Join(dir, "copy")
	if err := copyFile(cp, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(cp); string(data) != "#!/bin/true\n" {
		t.Errorf("copy holds %q", data)
	}
	if err := copyFile(cp, exe, 0o755); err == nil {
		t.Error("copyFile overwrote an existing file")
	}
}
