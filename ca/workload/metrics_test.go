package workload_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca"
	badgeworkload "github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/metrics"
)

// withMetrics gives the server of a fixture real metrics, returned through m.
func withMetrics(m **metrics.Metrics) func(*badgeworkload.Config) {
	return func(c *badgeworkload.Config) {
		*m = metrics.New(metrics.Config{Authority: c.Source.(*ca.WorkloadSource).Authority()})
		c.Metrics = *m
	}
}

// TestMetricsCountCalls makes real Workload API calls and checks what the
// metrics counted: signings, the missing header, an unregistered caller,
// a caller whose process changed, and an open stream.
func TestMetricsCountCalls(t *testing.T) {
	var m *metrics.Metrics
	f := start(t, nil, withMetrics(&m))
	counter := func(name, label, value string) float64 {
		t.Helper()
		mfs, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, s := range mf.GetMetric() {
				for _, lp := range s.GetLabel() {
					if lp.GetName() == label && lp.GetValue() == value {
						if s.Counter != nil {
							return s.GetCounter().GetValue()
						}
						return s.GetGauge().GetValue()
					}
				}
			}
		}
		t.Fatalf("no series %s{%s=%q}", name, label, value)
		return 0
	}
	recv := func(ctx context.Context) error {
		stream, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		return err
	}
	ctx := withHeader(context.Background())

	if err := recv(context.Background()); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("call without the header: %v", err)
	}
	if err := recv(ctx); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("call with no entry: %v", err)
	}
	f.create(t, "spiffe://example.org/w", mySelector())
	sctx, cancel := context.WithCancel(ctx)
	stream, err := f.api.FetchX509SVID(sctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if got := counter("badge_workload_streams_open", "stream", badgeworkload.StreamX509SVID); got != 1 {
		t.Errorf("open X.509-SVID streams = %g, want 1", got)
	}
	cancel()
	f.att.changed.Store(true)
	if err := recv(ctx); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("call from a changed process: %v", err)
	}
	for _, tc := range []struct {
		name, label, value string
		want               float64
	}{
		{"badge_x509_svids_issued_total", "result", badgeworkload.ResultOK, 1},
		{"badge_workload_callers_denied_total", "reason", badgeworkload.DenyNoHeader, 1},
		{"badge_workload_callers_denied_total", "reason", badgeworkload.DenyNotRegistered, 1},
		{"badge_attestation_failures_total", "reason", badgeworkload.ReasonPeerChanged, 1},
	} {
		if got := counter(tc.name, tc.label, tc.value); got != tc.want {
			t.Errorf("%s{%s=%q} = %g, want %g", tc.name, tc.label, tc.value, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.Registry(), "badge_svid_issuance_duration_seconds"); n != 2 {
		t.Errorf("issuance latency histograms: %d, want 2", n)
	}
}
