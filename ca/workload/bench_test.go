package workload_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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
