package metrics_test

import (
	"testing"
	"time"

	"github.com/badge-dev/badge/ca/workload"
)

// BenchmarkIssuanceMetrics is what the metrics add to one X.509-SVID
// fetched on a new stream: the stream gauge up and down, the counter, the
// latency histogram and the last-minute window.
func BenchmarkIssuanceMetrics(b *testing.B) {
	m := newTestMetrics(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			done := m.StreamOpened(workload.StreamX509SVID)
			m.SVIDIssued(workload.KindX509, workload.ResultOK, 150*time.Microsecond)
			done()
		}
	})
}
