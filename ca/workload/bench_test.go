package workload_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/badge-dev/badge/attest"
	badgeworkload "github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/metrics"
)

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureCPU reports the process's CPU time per operation as cpu-ns/op:
// client and server together, since both run here.
func measureCPU(b *testing.B) (stop func()) {
	start := cpuTime(b)
	return func() {
		b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkFetchX509SVID is issuance end to end through the Workload API:
// one FetchX509SVID call up to its first message (attestation, matching,
// key generation, signing, the durable serial record, the gRPC response),
// with client and server in this process. Compare it with
// BenchmarkRawCreateCertificate in package ca.
func BenchmarkFetchX509SVID(b *testing.B) {
	fetch := func(b *testing.B, api workload.SpiffeWorkloadAPIClient) {
		ctx, cancel := context.WithCancel(withHeader(context.Background()))
		defer cancel()
		stream, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err != nil {
			b.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil || len(resp.Svids) != 1 {
			b.Fatalf("FetchX509SVID: %v", err)
		}
	}
	b.Run("conn=reused", func(b *testing.B) {
		f := start(b, nil)
		f.create(b, "spiffe://example.org/bench", mySelector())
		b.ReportAllocs()
		defer measureCPU(b)()
		for b.Loop() {
			fetch(b, f.api)
		}
	})
	b.Run("conn=fresh", func(b *testing.B) {
		f := start(b, nil)
		f.create(b, "spiffe://example.org/bench", mySelector())
		b.ReportAllocs()
		defer measureCPU(b)()
		for b.Loop() {
			conn, err := grpc.NewClient("unix://"+f.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			fetch(b, workload.NewSpiffeWorkloadAPIClient(conn))
			conn.Close()
		}
	})
}

// BenchmarkFetchX509SVIDMetrics is BenchmarkFetchX509SVID (conn=reused)
// without and with the Prometheus metrics of internal/metrics: their cost
// on the issuance path.
func BenchmarkFetchX509SVIDMetrics(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "metrics=off"
		var opts []func(*badgeworkload.Config)
		if on {
			name = "metrics=on"
			var m *metrics.Metrics
			opts = append(opts, withMetrics(&m))
		}
		b.Run(name, func(b *testing.B) {
			f := start(b, nil, opts...)
			f.create(b, "spiffe://example.org/bench", mySelector())
			b.ReportAllocs()
			defer measureCPU(b)()
			for b.Loop() {
				ctx, cancel := context.WithCancel(withHeader(context.Background()))
				stream, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := stream.Recv(); err != nil {
					b.Fatal(err)
				}
				cancel()
			}
		})
	}
}

// fetchClientEnv names the socket a fetch client process (see
// TestFetchClientProcess) fetches from.
const fetchClientEnv = "BADGE_BENCH_FETCH_SOCK"

// TestFetchClientProcess is not a test: it is the client process of
// BenchmarkFetchX509SVIDServer, run from this test binary with
// fetchClientEnv set. For every byte read from file descriptor 3 it makes a
// fresh connection, receives the first FetchX509SVID response, closes the
// connection and writes one byte to file descriptor 4.
func TestFetchClientProcess(t *testing.T) {
	sock := os.Getenv(fetchClientEnv)
	if sock == "" {
		t.Skip("the client process of BenchmarkFetchX509SVIDServer; runs only when started by it")
	}
	in, out := os.NewFile(3, "requests"), os.NewFile(4, "responses")
	buf := make([]byte, 1)
	for {
		if _, err := in.Read(buf); err != nil {
			return // the benchmark is done
		}
		conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(withHeader(context.Background()))
		stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := stream.Recv(); err != nil || len(resp.Svids) != 1 {
			t.Fatalf("FetchX509SVID: %v", err)
		}
		cancel()
		conn.Close()
		if _, err := out.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
}

// underValgrindEnv, set, makes BenchmarkFetchX509SVIDServer runnable under
// valgrind --tool=callgrind, which counts instructions whatever else the
// machine runs: valgrind 3.19 does not know pidfd_open(2), so the caller
// gets the selectors the real attestor would give it without /proc being
// read; and callgrind aborts on SIGCHLD and SIGPIPE, so they are ignored
// (the client process is not waited for, and a write to a connection the
// client closed fails with EPIPE).
const underValgrindEnv = "BADGE_BENCH_UNDER_VALGRIND"

// fixedAttestor gives every peer the same selectors.
type fixedAttestor struct{ sel attest.Set }

func (a fixedAttestor) Attest(*attest.Peer, attest.Kind) (attest.Set, error) { return a.sel, nil }
func (a fixedAttestor) Verify(*attest.Peer) error                            { return nil }

// BenchmarkFetchX509SVIDServer is the daemon's side of a fresh-connection
// fetch, with the client in another process (TestFetchClientProcess): the
// accept, the peer credentials and attestation of a real other process
// through /proc, HTTP/2 set-up, matching, signing, the serial binding, the
// response and the end of the stream. Only the server runs in this process,
// so allocs/op and B/op are the server's alone, plus one pipe round trip
// per operation to step the client.
func BenchmarkFetchX509SVIDServer(b *testing.B) {
	valgrind := os.Getenv(underValgrindEnv) != ""
	var opts []func(*badgeworkload.Config)
	if valgrind {
		sel, err := attest.ParseSelector(mySelector())
		if err != nil {
			b.Fatal(err)
		}
		opts = append(opts, func(c *badgeworkload.Config) { c.Attestor = fixedAttestor{attest.Set{sel: {}}} })
		signal.Ignore(syscall.SIGCHLD, syscall.SIGPIPE)
	}
	f := start(b, nil, opts...)
	f.create(b, "spiffe://example.org/bench", mySelector())
	reqR, reqW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestFetchClientProcess$", "-test.count", "1")
	cmd.Env = append(os.Environ(), fetchClientEnv+"="+f.sock)
	cmd.ExtraFiles = []*os.File{reqR, respW}
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	reqR.Close()
	respW.Close()
	b.Cleanup(func() {
		reqW.Close()
		if valgrind {
			return // SIGCHLD is ignored: the kernel reaps the client
		}
		if err := cmd.Wait(); err != nil {
			b.Errorf("fetch client process: %v\n%s", err, output.Bytes())
		}
		respR.Close()
	})
	buf := []byte{1}
	step := func() {
		if _, err := reqW.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(respR, buf); err != nil {
			b.Fatalf("fetch client process: %v", err) // its output comes with Cleanup's error
		}
	}
	step() // the client's start-up is not the server's work
	b.ReportAllocs()
	defer measureCPU(b)()
	for b.Loop() {
		step()
	}
}
