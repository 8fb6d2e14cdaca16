package agent

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/nodeapi"
	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/storage/bbolt"
)

// nodeServerEnv names the directory the node server process (see
// TestNodeServerProcess) keeps its state in.
const nodeServerEnv = "BADGE_BENCH_NODE_SERVER_DIR"

// underValgrindEnv, set, makes BenchmarkSourceX509 runnable under valgrind
// --tool=callgrind (without --trace-children: the server process runs
// natively), which counts the agent's instructions whatever else the
// machine runs: callgrind aborts on SIGCHLD and SIGPIPE, so they are
// ignored and the server process is not waited for. Run it with
// GOMAXPROCS=1 and GODEBUG=asyncpreemptoff=1, twice with different
// -test.benchtime=Nx, and divide the difference of the instruction counts
// by the difference of N: that cancels the start-up.
const underValgrindEnv = "BADGE_BENCH_UNDER_VALGRIND"

// nodeServerInfo is what the node server process tells the benchmark.
type nodeServerInfo struct {
	Addr   string   `json:"addr"`
	Token  string   `json:"token"`
	Bundle [][]byte `json:"bundle"`
}

// TestNodeServerProcess is not a test: it is the badge server of
// BenchmarkSourceX509, run from this test binary with nodeServerEnv set. A
// real authority on a bbolt file and its agent listener on 127.0.0.1, with
// a join token for node bench-1 and an entry scoped to it for uid 1001; it
// writes a nodeServerInfo line to stdout and serves until stdin closes.
func TestNodeServerProcess(t *testing.T) {
	dir := os.Getenv(nodeServerEnv)
	if dir == "" {
		t.Skip("the server process of BenchmarkSourceX509; runs only when started by it")
	}
	ctx := context.Background()
	store, err := bbolt.Open(filepath.Join(dir, "badge.db"), &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	auth, err := ca.New(ctx, ca.Config{Store: store, KeyDir: filepath.Join(dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	defer auth.Close()
	srv, err := nodeapi.New(ctx, nodeapi.Config{Authority: auth, Limits: nodeapi.Limits{SignRate: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.CreateEntry(ctx, ca.EntryRequest{SPIFFEID: "spiffe://" + auth.Snapshot().TrustDomain().Name() + "/bench",
		Selectors: []string{"unix:uid:1001"}, Nodes: []string{"bench-1"}}); err != nil {
		t.Fatal(err)
	}
	_, tok, err := auth.CreateJoinToken(ctx, ca.JoinTokenRequest{Node: "bench-1"})
	if err != nil {
		t.Fatal(err)
	}
	info := nodeServerInfo{Token: tok}
	for _, c := range auth.Snapshot().Bundle().X509Authorities() {
		info.Bundle = append(info.Bundle, c.Raw)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	info.Addr = l.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	if err := json.NewEncoder(os.Stdout).Encode(info); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, os.Stdin) // until the benchmark is done
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// startNodeServer starts the server process of TestNodeServerProcess and
// returns what it serves; it stops when the benchmark ends.
func startNodeServer(b *testing.B, valgrind bool) nodeServerInfo {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestNodeServerProcess$", "-test.count", "1")
	cmd.Env = append(os.Environ(), nodeServerEnv+"="+b.TempDir(), "GOMAXPROCS=", underValgrindEnv+"=")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		if !valgrind { // SIGCHLD is ignored: the kernel reaps the server
			cmd.Wait()
		}
	})
	var info nodeServerInfo
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		b.Fatalf("node server process: %v", err)
	}
	if err := json.Unmarshal(line, &info); err != nil {
		b.Fatalf("node server process said %q: %v", line, err)
	}
	return info
}

// BenchmarkSourceX509 is the agent's side of a fresh fetch: Source.X509
// for a caller that holds no SVID (matching, a pooled key, its CSR, the
// SignX509 call to a real badge server over real TLS, the check of what
// it signed). The server runs in another process (TestNodeServerProcess),
// so allocs/op, B/op and the instructions are the agent's alone, with
// the work of its background goroutines (the key pool) included.
func BenchmarkSourceX509(b *testing.B) {
	valgrind := os.Getenv(underValgrindEnv) != ""
	if valgrind {
		signal.Ignore(syscall.SIGCHLD, syscall.SIGPIPE)
	}
	info := startNodeServer(b, valgrind)
	var roots []*x509.Certificate
	for _, der := range info.Bundle {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			b.Fatal(err)
		}
		roots = append(roots, c)
	}
	a, err := New(Config{Servers: []string{info.Addr}, TrustBundle: roots, DataDir: filepath.Join(b.TempDir(), "data"), JoinToken: info.Token})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.Attest(ctx); err != nil {
		b.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			b.Error(err)
		}
	})
	for st := a.State(); !st.Synced() || a.conn.Load() == nil; st = a.State() {
		select {
		case <-st.Done():
		case err := <-ran:
			b.Fatalf("agent: %v", err)
		case <-time.After(10 * time.Second):
			b.Fatal("the agent did not sync within 10s")
		}
	}
	src := a.Source()
	req := workload.X509Request{Caller: caller("1001")}
	fetch := func() {
		u, err := src.X509(ctx, req)
		if err != nil || len(u.SVIDs) != 1 {
			b.Fatalf("X509: %d SVIDs, %v", len(u.SVIDs), err)
		}
	}
	fetch() // the first call's set-up is not a fetch's work
	b.ReportAllocs()
	start := cpuTime(b)
	for b.Loop() {
		fetch()
	}
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time (user and system) this process has used: the
// agent's, background goroutines included, not the server's.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
