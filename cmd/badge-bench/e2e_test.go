package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// runJSON runs badge-bench with args and --json, and decodes its report.
func runJSON(t *testing.T, args ...string) benchReport {
	t.Helper()
	var out, errOut bytes.Buffer
	noEnv := func(string) string { return "" }
	code := run(context.Background(), append(args, "--json"), strings.NewReader(""), &out, &errOut, noEnv)
	if code != exitOK {
		t.Fatalf("badge-bench %q: exit %d, stderr %s", args, code, errOut.String())
	}
	var rep benchReport
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("badge-bench %q --json: %v\n%s", args, err, out.String())
	}
	return rep
}

// samplesRow is one line of a --samples file.
type samplesRow struct {
	start, ns int64
	uid       uint32
	result    string
}

func readSamples(t *testing.T, path string) []samplesRow {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s is not CSV: %v", path, err)
	}
	if len(recs) == 0 || strings.Join(recs[0], ",") != samplesHeader {
		t.Fatalf("%s: header %q, want %q", path, recs[:min(1, len(recs))], samplesHeader)
	}
	var rows []samplesRow
	for i, r := range recs[1:] {
		start, err1 := strconv.ParseInt(r[0], 10, 64)
		ns, err2 := strconv.ParseInt(r[1], 10, 64)
		uid, err3 := strconv.ParseUint(r[2], 10, 32)
		if err1 != nil || err2 != nil || err3 != nil || ns <= 0 || r[3] == "" {
			t.Fatalf("%s line %d: bad row %q", path, i+2, r)
		}
		rows = append(rows, samplesRow{start, ns, uint32(uid), r[3]})
	}
	if !slices.IsSortedFunc(rows, func(a, b samplesRow) int { return int(a.start - b.start) }) {
		t.Errorf("%s: rows are not in start order", path)
	}
	return rows
}

// checkTail checks that the tail figures are there and in order.
func checkTail(t *testing.T, what string, l *latencyStats, n int) {
	t.Helper()
	if l == nil {
		t.Fatalf("%s: no latency figures", what)
	}
	if l.N != n || !(0 < l.Min && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("%s: %+v: want %d samples, 0 < min ≤ p50 ≤ p90 ≤ p99 ≤ p99.9 ≤ max", what, *l, n)
	}
}

// TestBenchModesWithoutAdminAPI runs fetch, jwt and stream against a real
// daemon with an admin socket that does not exist: what a SPIRE agent's
// socket offers is all they need. The daemon is found from the socket's
// peer credentials, and --samples has one row per call or stream.
func TestBenchModesWithoutAdminAPI(t *testing.T) {
	d := startDaemon(t)
	d.entry(t, "spiffe://example.org/bench/self", os.Getuid())
	noAdmin := filepath.Join(t.TempDir(), "no-admin.sock")
	dir := t.TempDir()
	for _, mode := range []string{benchFetch, benchJWT, benchStream} {
		t.Run(mode, func(t *testing.T) {
			samples := filepath.Join(dir, mode+".csv")
			rep := runJSON(t, "--socket", d.socket, "--admin-socket", noAdmin, "--mode", mode,
				"--workers", "3", "--duration", "200ms", "--samples", samples)
			if rep.Server == nil || rep.Server.PID != d.pid {
				t.Errorf("server report %+v, want the daemon's pid %d", rep.Server, d.pid)
			}
			rows := readSamples(t, samples)
			if rep.SamplesFile != samples || rep.SamplesWritten != len(rows) {
				t.Errorf("report names %q with %d samples; the file has %d", rep.SamplesFile, rep.SamplesWritten, len(rows))
			}
			ok := 0
			for _, r := range rows {
				if r.uid != uint32(os.Getuid()) {
					t.Errorf("row %+v: uid, want %d", r, os.Getuid())
				}
				if r.result == "OK" {
					ok++
				}
			}
			var n int
			if mode == benchStream {
				if rep.Streams == nil || rep.Streams.Open != 3 {
					t.Fatalf("streams: %+v, want 3 open", rep.Streams)
				}
				n = rep.Streams.Open
				checkTail(t, "stream opening", rep.Streams.OpenLatencyMS, n)
			} else {
				if rep.Calls == 0 {
					t.Fatalf("no calls: %+v", rep)
				}
				n = rep.Calls
				checkTail(t, mode, rep.LatencyMS, n)
			}
			if ok != n || len(rows) != n+rep.Errors {
				t.Errorf("%d rows, %d OK; want %d OK and %d failed", len(rows), ok, n, rep.Errors)
			}
		})
	}
}

// TestBenchPropagation times new and deleted entries on open streams
// through the admin API, and cleans up what it created.
func TestBenchPropagation(t *testing.T) {
	d := startDaemon(t)
	d.entry(t, "spiffe://example.org/bench/self", os.Getuid())
	samples := filepath.Join(t.TempDir(), "prop.csv")
	rep := runJSON(t, "--socket", d.socket, "--admin-socket", d.admin, "--mode", "propagation",
		"--workers", "2", "--count", "2", "--samples", samples)
	p := rep.Propagation
	if p == nil || p.Streams != 2 || p.Repetitions != 2 || p.Missed != 0 || p.MissedDelete != 0 {
		t.Fatalf("propagation: %+v, want 2 streams, 2 repetitions, none missed", p)
	}
	checkTail(t, "from create start", p.FromCreateStartMS, 4)
	checkTail(t, "delete", p.DeleteMS, 4)
	count := map[string]int{}
	for _, r := range readSamples(t, samples) {
		count[r.result]++
	}
	if count[sampleCreate] != 4 || count[sampleDelete] != 4 || len(count) != 2 {
		t.Errorf("samples by result: %v, want 4 create and 4 delete", count)
	}
	es, err := d.client.ListEntries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 {
		t.Errorf("after the run %d entries are left, want the 1 the test made: %+v", len(es), es)
	}
}

// TestBenchUIDs runs the workers as uids 1001 and 1002 in child processes
// of a copy of this binary, with entries made by --setup and deleted
// afterwards.
func TestBenchUIDs(t *testing.T) {
	requireRoot(t)
	d := startDaemon(t)
	samples := filepath.Join(t.TempDir(), "uids.csv")
	rep := runJSON(t, "--socket", d.socket, "--admin-socket", d.admin, "--uids", "1001-1002", "--workers", "2",
		"--setup", "--duration", "300ms", "--samples", samples)
	if rep.UIDs != "1001-1002" || rep.Calls == 0 {
		t.Fatalf("report: %+v, want calls as uids 1001-1002", rep)
	}
	checkTail(t, "fetch", rep.LatencyMS, rep.Calls)
	byUID := map[uint32]int{}
	for _, r := range readSamples(t, samples) {
		byUID[r.uid]++
	}
	if byUID[1001] == 0 || byUID[1002] == 0 || len(byUID) != 2 {
		t.Errorf("samples by uid: %v, want both 1001 and 1002 and no other", byUID)
	}
	if rep.Host == nil || rep.Host.BenchCores < 0 {
		t.Errorf("host report: %+v", rep.Host)
	}
	es, err := d.client.ListEntries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 0 {
		t.Errorf("--setup left %d entries behind: %+v", len(es), es)
	}
}

func TestListenerPID(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	pid, err := listenerPID(ctx, d.socket)
	if err != nil || pid != d.pid {
		t.Errorf("listenerPID(workload socket) = %d, %v, want the daemon %d", pid, err, d.pid)
	}
	if pid, err := listenerPID(ctx, d.admin); err != nil || pid != d.pid {
		t.Errorf("listenerPID(admin socket) = %d, %v, want the daemon %d", pid, err, d.pid)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing.sock"), file} {
		if pid, err := listenerPID(ctx, path); err == nil {
			t.Errorf("listenerPID(%s) = %d, want an error", path, pid)
		}
	}
}

func TestWriteSamples(t *testing.T) {
	raw := []rawSample{
		{sample{Start: 300, NS: 5}, 1002},
		{sample{Start: 100, NS: 7_000_000, Code: "Unavailable"}, 1001},
		{sample{Start: 200, NS: 1}, 0},
		{sample{Start: 100, NS: 9, Code: sampleCreate}, 1003},
	}
	var b bytes.Buffer
	if err := writeSamples(&b, raw); err != nil {
		t.Fatal(err)
	}
	want := samplesHeader + "\n" +
		"100,7000000,1001,Unavailable\n" +
		"100,9,1003,create\n" +
		"200,1,0,OK\n" +
		"300,5,1002,OK\n"
	if b.String() != want {
		t.Errorf("writeSamples wrote\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	if err := writeSamples(&b, nil); err != nil || b.String() != samplesHeader+"\n" {
		t.Errorf("no samples: %q, %v, want the header alone", b.String(), err)
	}
}

// A --samples file that cannot be created fails the run before it starts.
func TestBenchSamplesFileError(t *testing.T) {
	d := startDaemon(t)
	var out, errOut bytes.Buffer
	bad := filepath.Join(t.TempDir(), "missing-dir", "s.csv")
	code := run(context.Background(), []string{"--socket", d.socket, "--duration", "1h", "--samples", bad},
		strings.NewReader(""), &out, &errOut, func(string) string { return "" })
	if code != exitFailure || !strings.Contains(errOut.String(), "--samples") || !strings.Contains(errOut.String(), bad) {
		t.Errorf("exit %d, stderr %q: want a failure naming --samples and the path", code, errOut.String())
	}
}

// TestBenchSeveralSockets spreads the workers over two real daemons, as
// over the replicas of one trust domain: the report has the totals, each
// socket's part, and the CPU of both daemons, summed and each one's;
// with one socket the report has no such part.
func TestBenchSeveralSockets(t *testing.T) {
	d1, d2 := startDaemon(t), startDaemon(t)
	d1.entry(t, "spiffe://example.org/bench/one", os.Getuid())
	d2.entry(t, "spiffe://example.org/bench/two", os.Getuid())
	both := d1.socket + "," + d2.socket
	pids := []int{d1.pid, d2.pid}

	t.Run("fetch", func(t *testing.T) {
		rep := runJSON(t, "--socket", both, "--workers", "3", "--duration", "300ms")
		if rep.Socket != both || len(rep.Sockets) != 2 {
			t.Fatalf("socket %q, %d socket reports; want %q and 2", rep.Socket, len(rep.Sockets), both)
		}
		count, errs := 0, 0
		for i, k := range rep.Sockets {
			if k.Socket != []string{d1.socket, d2.socket}[i] || k.Workers != []int{2, 1}[i] || k.Count == 0 {
				t.Errorf("socket %d: %+v, want its path, %d workers and calls", i, k, []int{2, 1}[i])
			}
			checkTail(t, k.Socket, k.LatencyMS, k.Count)
			if k.Server == nil || k.Server.PID != pids[i] || k.Server.PIDs != nil {
				t.Errorf("socket %d's daemon: %+v, want pid %d", i, k.Server, pids[i])
			}
			count += k.Count
			errs += k.Errors
		}
		if count != rep.Calls || errs != rep.Errors {
			t.Errorf("sockets' calls %d and errors %d, totals %d and %d", count, errs, rep.Calls, rep.Errors)
		}
		s := rep.Server
		if s == nil || s.PID != 0 || !slices.Equal(s.PIDs, pids) {
			t.Fatalf("server report %+v, want both daemons %v", s, pids)
		}
		if sum := rep.Sockets[0].Server.CPUMS + rep.Sockets[1].Server.CPUMS; math.Abs(s.CPUMS-sum) > 1e-6 || s.CPUMSPerCall <= 0 {
			t.Errorf("daemons' CPU %.3f ms (%.4f per call), want the sum of each one's %.3f ms", s.CPUMS, s.CPUMSPerCall, sum)
		}
	})

	t.Run("stream", func(t *testing.T) {
		rep := runJSON(t, "--socket", both, "--server-pid", fmt.Sprintf("%d,%d", d1.pid, d2.pid), "--mode", "stream",
			"--workers", "4", "--duration", "100ms")
		if rep.Streams == nil || rep.Streams.Open != 4 || len(rep.Sockets) != 2 {
			t.Fatalf("streams %+v, %d socket reports; want 4 open over 2", rep.Streams, len(rep.Sockets))
		}
		for i, k := range rep.Sockets {
			if k.Count != 2 || k.Workers != 2 || k.Errors != 0 {
				t.Errorf("socket %d: %+v, want 2 of 2 streams open", i, k)
			}
		}
		if rep.Server == nil || !slices.Equal(rep.Server.PIDs, pids) {
			t.Errorf("server report %+v, want both daemons %v", rep.Server, pids)
		}
	})

	t.Run("text", func(t *testing.T) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"--socket", both, "--workers", "2", "--duration", "200ms"},
			strings.NewReader(""), &out, &errOut, func(string) string { return "" })
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		t.Logf("badge-bench printed:\n%s", out.String())
		for _, want := range []string{
			"2 workers as uid " + strconv.Itoa(os.Getuid()) + " over 2 sockets,",
			fmt.Sprintf("  daemons:  pids %d+%d, CPU ", d1.pid, d2.pid),
			"  socket " + d1.socket + ": ",
			"  socket " + d2.socket + ": ",
			"/s by 1 worker, errors 0, p99 ",
			fmt.Sprintf("daemon pid %d, CPU", d2.pid),
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
	})

	// With --uids the workers of all uids take the sockets in turn: the
	// one worker of uid 1001 calls the first, that of 1002 the second.
	t.Run("uids", func(t *testing.T) {
		requireRoot(t)
		for _, d := range []*daemon{d1, d2} {
			for _, uid := range []int{1001, 1002} {
				d.entry(t, fmt.Sprintf("spiffe://example.org/bench/uid-%d", uid), uid)
			}
		}
		rep := runJSON(t, "--socket", both, "--uids", "1001-1002", "--workers", "2", "--duration", "300ms")
		if len(rep.Sockets) != 2 {
			t.Fatalf("%d socket reports, want 2", len(rep.Sockets))
		}
		for i, k := range rep.Sockets {
			if k.Workers != 1 || k.Count == 0 {
				t.Errorf("socket %d: %+v, want 1 worker and calls", i, k)
			}
		}
		if rep.Sockets[0].Count+rep.Sockets[1].Count != rep.Calls {
			t.Errorf("sockets' calls %d + %d, total %d", rep.Sockets[0].Count, rep.Sockets[1].Count, rep.Calls)
		}
	})

	// The second worker calls the second socket: a daemon there with no
	// entry for the uid fails the run, naming that socket.
	t.Run("refused", func(t *testing.T) {
		d3 := startDaemon(t)
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"--socket", d1.socket + "," + d3.socket, "--workers", "2", "--duration", "5s"},
			strings.NewReader(""), &out, &errOut, func(string) string { return "" })
		want := fmt.Sprintf("the Workload API at %s refused uid %d (PermissionDenied", d3.socket, os.Getuid())
		if code != exitFailure || !strings.Contains(errOut.String(), want) {
			t.Errorf("exit %d, stderr %q: want a failure containing %q", code, errOut.String(), want)
		}
	})

	t.Run("one socket", func(t *testing.T) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"--socket", d1.socket, "--workers", "2", "--duration", "200ms", "--json"},
			strings.NewReader(""), &out, &errOut, func(string) string { return "" })
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		var doc map[string]any
		if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		server, _ := doc["server"].(map[string]any)
		if _, ok := doc["sockets"]; ok || server == nil || server["pid"] != float64(d1.pid) || server["pids"] != nil {
			t.Errorf("one socket's report: sockets %v, server %v; want no sockets, the daemon's pid and no pids", doc["sockets"], server)
		}
	})
}
