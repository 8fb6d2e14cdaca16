package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
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
