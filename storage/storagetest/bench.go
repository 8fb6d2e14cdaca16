package storagetest

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage"
)

// BenchIssuers are the numbers of concurrent issuers BenchSerialRecord
// runs with.
var BenchIssuers = []int{1, 16, 64}

// BenchReservation is how many serials one issuer of BenchSerialRecord's
// BindSerial case reserves at a time, as the authority reserves ahead.
const BenchReservation = 256

// BenchSerialRecord measures how many serial records per second a store
// makes durable while many issuers record at once, as the server's
// concurrent issuance does, so that backends compare under one
// benchmark name (BenchmarkSerialRecord in each backend's package):
//
//   - RecordSerial/issuers=N: each call returns once its record is
//     durable; concurrent calls share a commit.
//   - BindSerial/issuers=N: each issuer reserves BenchReservation serials
//     at a time (ReserveSerials, durable) and binds them one by one
//     (BindSerial, queued); the clock stops once Close has written every
//     queued binding, so records/s counts durable records.
//
// The issuers are goroutines of b.RunParallel, N of them whatever -cpu
// says (rounded up to a multiple of GOMAXPROCS), except that a lone
// issuer runs alone. Reported: records/s, and
// the median and 99th percentile latency of one call. open returns a new,
// empty store; the benchmark closes it.
//
//	go test -run '^$' -bench SerialRecord -benchtime 2s ./storage/...
func BenchSerialRecord(b *testing.B, open func(b *testing.B) Store) {
	for _, issuers := range BenchIssuers {
		b.Run(fmt.Sprintf("RecordSerial/issuers=%d", issuers), func(b *testing.B) {
			s := open(b)
			defer s.Close()
			var n atomic.Int64
			lat := runIssuers(b, issuers, func() func() error {
				return func() error {
					return s.RecordSerial(context.Background(), benchSerial(n.Add(1)))
				}
			})
			b.StopTimer()
			reportRecords(b, lat)
		})
		b.Run(fmt.Sprintf("BindSerial/issuers=%d", issuers), func(b *testing.B) {
			s := open(b)
			var next atomic.Int64
			lat := runIssuers(b, issuers, func() func() error {
				var block []int64
				return func() error {
					if len(block) == 0 {
						first := next.Add(BenchReservation) - BenchReservation + 1
						r := storage.Reservation{NotAfter: time.Now().Add(time.Hour)}
						for i := range int64(BenchReservation) {
							block = append(block, first+i)
							r.Serials = append(r.Serials, benchSerial(first+i).Serial)
						}
						if err := s.ReserveSerials(context.Background(), r); err != nil {
							return err
						}
					}
					n := block[0]
					block = block[1:]
					return s.BindSerial(context.Background(), benchSerial(n))
				}
			})
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			reportRecords(b, lat)
		})
	}
}

// benchSerial returns the n-th record of a benchmark.
func benchSerial(n int64) storage.Serial {
	notAfter := time.Now().Add(5 * time.Minute)
	return storage.Serial{
		// Spread like random serials: the high bits vary.
		Serial:    fmt.Sprintf("%016x%016x", uint64(n)*0x9e3779b97f4a7c15, n),
		SPIFFEID:  fmt.Sprintf("spiffe://example.org/service/%d", n%500),
		EntryID:   fmt.Sprintf("entry-%d", n%500),
		NotBefore: notAfter.Add(-5*time.Minute - 30*time.Second),
		NotAfter:  notAfter,
		IssuedAt:  notAfter.Add(-5 * time.Minute),
	}
}

// runIssuers runs b.N calls from issuers goroutines, each with its own
// call made by newCall, and returns the latency of every call.
func runIssuers(b *testing.B, issuers int, newCall func() func() error) []time.Duration {
	if issuers == 1 {
		call := newCall()
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if err := call(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		return lat
	}
	b.SetParallelism(max(1, (issuers+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0)))
	var mu sync.Mutex
	var all []time.Duration
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		call := newCall()
		var lat []time.Duration
		for pb.Next() {
			start := time.Now()
			if err := call(); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(start))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	return all
}

// reportRecords reports records/s over the timed part, and the latency
// percentiles of one call.
func reportRecords(b *testing.B, lat []time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}
