package workload_test

import (
	"context"
	"crypto/x509"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/badge-dev/badge/ca"
)

// BenchmarkRevocationPropagation measures, per revocation, the time from
// the revoke call until the new revocation list has reached every one of
// 1,000 open FetchX509SVID streams (each on its own connection, as 1,000
// workloads would hold them). It reports the p50 and p99 of the per-stream
// delivery times and the time until the last stream had it.
func BenchmarkRevocationPropagation(b *testing.B) {
	const streams = 1000
	f := start(b, nil)
	f.create(b, "spiffe://example.org/holder", mySelector())
	ctx, cancel := context.WithCancel(withHeader(context.Background()))
	defer cancel()

	type delivery struct {
		number uint64
		at     time.Time
	}
	arrivals := make(chan delivery, streams*4)
	var wg sync.WaitGroup
	ready := make(chan struct{}, streams)
	for range streams {
		conn, err := grpc.NewClient("unix://"+f.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		// FetchX509Bundles carries the same CRL and does not re-sign
		// SVIDs, so the figure isolates revocation delivery.
		stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for {
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				if first {
					first = false
					ready <- struct{}{}
					continue
				}
				if len(resp.Crl) == 1 {
					arrivals <- delivery{at: time.Now(), number: crlNumber(resp.Crl[0])}
				}
			}
		}()
	}
	for range streams {
		<-ready
	}
	var all []time.Duration
	var last time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := f.auth.RevokeID(context.Background(), ca.RevokeRequest{SPIFFEID: "spiffe://example.org/stolen/" + string(rune('a'+i%26)) + time.Now().Format("150405.000000000")}); err != nil {
			b.Fatal(err)
		}
		_, want := f.auth.Snapshot().CRL()
		got := 0
		timeout := time.After(10 * time.Second)
		for got < streams {
			select {
			case d := <-arrivals:
				if d.number != want {
					continue // an earlier list arriving late
				}
				got++
				lat := d.at.Sub(start)
				all = append(all, lat)
				last = max(last, lat)
			case <-timeout:
				b.Fatalf("only %d of %d streams got revocation list %d within 10s", got, streams, want)
			}
		}
	}
	b.StopTimer()
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(last.Microseconds())/1000, "max-ms")
	cancel()
	wg.Wait()
}

func crlNumber(der []byte) uint64 {
	crl, err := x509.ParseRevocationList(der)
	if err != nil || crl.Number == nil {
		return 0
	}
	return crl.Number.Uint64()
}
