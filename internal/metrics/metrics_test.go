package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/metrics"
)

// Metrics must satisfy the interface the Workload API server reports to.
var _ workload.Metrics = (*metrics.Metrics)(nil)

func TestCountsAndGauges(t *testing.T) {
	m := newTestMetrics(t)
	for range 3 {
		m.SVIDIssued(workload.KindX509, workload.ResultOK, time.Millisecond)
	}
	m.SVIDIssued(workload.KindX509, workload.ResultLimited, 0)
	m.SVIDIssued(workload.KindJWT, workload.ResultOK, time.Millisecond)
	m.SVIDIssued("bogus", "bogus", 0) // ignored: no new series
	closeStream := m.StreamOpened(workload.StreamX509SVID)
	m.StreamOpened(workload.StreamJWTBundles)
	m.AttestationFailed(workload.ReasonPeerGone)
	m.CallerDenied(workload.DenyNotRegistered)
	m.CallerDenied(workload.DenyNotRegistered)

	want := `
# HELP badge_x509_svids_issued_total X.509-SVIDs asked of the authority through the Workload API, by result (ok, blocked, limited, invalid, error).
# TYPE badge_x509_svids_issued_total counter
badge_x509_svids_issued_total{result="blocked"} 0
badge_x509_svids_issued_total{result="error"} 0
badge_x509_svids_issued_total{result="invalid"} 0
badge_x509_svids_issued_total{result="limited"} 1
badge_x509_svids_issued_total{result="ok"} 3
# HELP badge_workload_streams_open Open Workload API streams, by stream (x509_svid, x509_bundles, jwt_bundles).
# TYPE badge_workload_streams_open gauge
badge_workload_streams_open{stream="jwt_bundles"} 1
badge_workload_streams_open{stream="x509_bundles"} 0
badge_workload_streams_open{stream="x509_svid"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "badge_x509_svids_issued_total", "badge_workload_streams_open"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.Registry(), "badge_svid_issuance_duration_seconds"); n != 2 {
		t.Errorf("issuance histograms: %d series, want 2 (x509, jwt)", n)
	}
	st := m.Status(context.Background())
	if st.OpenStreams != 2 || st.IssuedLastMinute.X509 != 3 || st.IssuedLastMinute.JWT != 1 {
		t.Errorf("status: %d open streams, issued %+v; want 2 and 3 X.509, 1 JWT", st.OpenStreams, st.IssuedLastMinute)
	}
	closeStream()
	if st := m.Status(context.Background()); st.OpenStreams != 1 {
		t.Errorf("after a stream closed: %d open streams, want 1", st.OpenStreams)
	}
	if !st.Ready || len(st.Keys) != 3 || st.TrustDomain != "example.org" || st.Database.SizeBytes == 0 {
		t.Errorf("status = %+v; want ready, 3 keys, example.org, a database size", st)
	}
}

func TestIssuedLastMinuteForgetsOldSeconds(t *testing.T) {
	a, _ := newAuthority(t)
	var now atomic.Pointer[time.Time]
	set := func(t time.Time) { now.Store(&t) }
	set(time.Unix(1_000_000, 0))
	m := metrics.New(metrics.Config{Authority: a, Time: func() time.Time { return *now.Load() }})
	m.SVIDIssued(workload.KindX509, workload.ResultOK, 0)
	set(time.Unix(1_000_030, 0))
	m.SVIDIssued(workload.KindX509, workload.ResultOK, 0)
	if n := m.Status(context.Background()).IssuedLastMinute.X509; n != 2 {
		t.Errorf("after 30s: %d in the last minute, want 2", n)
	}
	set(time.Unix(1_000_065, 0))
	if n := m.Status(context.Background()).IssuedLastMinute.X509; n != 1 {
		t.Errorf("after 65s: %d in the last minute, want 1", n)
	}
	set(time.Unix(1_000_060, 0)) // the slot of the first second, a minute later
	m.SVIDIssued(workload.KindX509, workload.ResultOK, 0)
	if n := m.Status(context.Background()).IssuedLastMinute.X509; n != 2 {
		t.Errorf("a minute after the first: %d in the last minute, want 2 (the old count reset)", n)
	}
}

func TestErrorLogKeepsLastErrors(t *testing.T) {
	var out bytes.Buffer
	el := metrics.NewErrorLog(2)
	log := slog.New(el.Handler(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})))
	log.Info("not kept, not printed")
	log.Warn("printed, not kept")
	log.With("component", "ca").Error("first", "error", "disk on fire")
	log.Error("second")
	log.WithGroup("g").Error("third", "k", 1)
	got := el.Last()
	if len(got) != 2 || got[0].Message != "second" || got[1].Message != "third" || got[1].Attrs != "g.k=1" {
		t.Errorf("Last() = %+v, want second and third (with g.k=1)", got)
	}
	if !strings.Contains(out.String(), "printed, not kept") || strings.Contains(out.String(), "not kept, not printed") {
		t.Errorf("the wrapped handler's level was not kept:\n%s", out.String())
	}
	// The level filter of the wrapped handler still applies to errors
	// logged through a handler that only wants higher levels.
	el2 := metrics.NewErrorLog(0)
	log2 := slog.New(el2.Handler(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError + 4})))
	log2.Error("kept though not printed", "component", "x")
	if got := el2.Last(); len(got) != 1 || got[0].Attrs != "component=x" {
		t.Errorf("Last() = %+v, want the error kept", got)
	}
}

func TestReadiness(t *testing.T) {
	ctx := context.Background()
	var fail atomic.Bool
	var runs atomic.Int32
	r := metrics.NewReadiness(time.Second, metrics.Check{Name: "flaky", Run: func(context.Context) error {
		runs.Add(1)
		if fail.Load() {
			return errors.New("broken")
		}
		return nil
	}})
	if rep := r.Check(ctx); !rep.Ready || rep.Err() != nil {
		t.Fatalf("Check = %+v, want ready", rep)
	}
	fail.Store(true)
	if rep := r.Check(ctx); !rep.Ready || runs.Load() != 1 {
		t.Errorf("a second Check within ReadyCacheFor ran the checks again (%d runs) or changed: %+v", runs.Load(), rep)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Check(ctx).Ready {
		if time.Now().After(deadline) {
			t.Fatal("the failing check was not seen after the cache expired")
		}
		time.Sleep(100 * time.Millisecond) // polling: the cache expiry is the only event
	}
	rep := r.Check(ctx)
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "flaky: broken") {
		t.Errorf("Err() = %v, want it to name the check and its error", err)
	}
}

func TestReadinessHungCheck(t *testing.T) {
	release := make(chan struct{})
	var runs atomic.Int32
	r := metrics.NewReadiness(200*time.Millisecond,
		metrics.Check{Name: "fast", Run: func(context.Context) error { return nil }},
		metrics.Check{Name: "hung", Run: func(context.Context) error { runs.Add(1); <-release; return nil }})
	for range 3 {
		rep := r.Check(context.Background())
		if rep.Ready || len(rep.Checks) != 2 || !rep.Checks[0].OK || rep.Checks[1].OK || !strings.Contains(rep.Checks[1].Error, "no answer within") {
			t.Fatalf("Check with a hung check = %+v, want fast ok and hung failed", rep)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the hung check was started %d times, want once", n)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for !r.Check(context.Background()).Ready {
		if time.Now().After(deadline) {
			t.Fatal("not ready after the hung check returned")
		}
		time.Sleep(50 * time.Millisecond) // polling: the cache expiry is the only event
	}
}

// TestEtcdCompactions: with Config.Compactions set, the compactions of
// the etcd store's history are reported as a counter and the revision of
// the last as a gauge; without it (bbolt), neither series exists.
func TestEtcdCompactions(t *testing.T) {
	a, _ := newAuthority(t)
	var n atomic.Uint64
	var rev atomic.Int64
	m := metrics.New(metrics.Config{Authority: a, Compactions: func() (uint64, int64) { return n.Load(), rev.Load() }})
	names := []string{"badge_etcd_compactions_total", "badge_etcd_compacted_revision"}
	want := func(count, revision int) string {
		return fmt.Sprintf(`
# HELP badge_etcd_compacted_revision The etcd revision this server's last compaction went to; 0 before the first.
# TYPE badge_etcd_compacted_revision gauge
badge_etcd_compacted_revision %d
# HELP badge_etcd_compactions_total Compactions of the etcd store's history this server made while it led its trust domain's servers.
# TYPE badge_etcd_compactions_total counter
badge_etcd_compactions_total %d
`, revision, count)
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want(0, 0)), names...); err != nil {
		t.Errorf("before any compaction: %v", err)
	}
	n.Store(3)
	rev.Store(12345)
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want(3, 12345)), names...); err != nil {
		t.Errorf("after three compactions: %v", err)
	}
	bolt := metrics.New(metrics.Config{Authority: a})
	if c := testutil.CollectAndCount(bolt.Registry(), names...); c != 0 {
		t.Errorf("without Compactions: %d series, want none", c)
	}
}

// TestDBStatisticsStuckStore: a store that does not answer (bbolt under
// a commit on a frozen filesystem holds the lock every read takes) costs
// a status or a scrape no more than its own deadline, and one read in
// progress, however many ask; once the store answers, its figures serve.
func TestDBStatisticsStuckStore(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	m := metrics.New(metrics.Config{
		DBStats: func(ctx context.Context) (metrics.DBStats, error) {
			calls.Add(1)
			<-release
			return metrics.DBStats{SizeBytes: 4096, Serials: 7}, nil
		},
		Version: "test",
	})
	for i := range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		start := time.Now()
		st := m.Status(ctx)
		cancel()
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("status %d took %s with the store stuck", i, took)
		}
		if !strings.Contains(st.Database.Error, "did not answer") {
			t.Errorf("status %d: database error %q, want one saying the store did not answer", i, st.Database.Error)
		}
	}
	// A scrape, too, answers: badge_database_stats_errors is 1.
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := gaugeValue(mfs, "badge_database_stats_errors"); !ok || v != 1 {
		t.Errorf("badge_database_stats_errors = %g (present %v), want 1", v, ok)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d reads of the stuck store, want 1", n)
	}
	close(release)
	st := m.Status(t.Context())
	if st.Database.Error != "" || st.Database.Serials != 7 {
		t.Errorf("after the store answered: %+v, want 7 serials and no error", st.Database)
	}
}

func gaugeValue(mfs []*dto.MetricFamily, name string) (float64, bool) {
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue(), true
		}
	}
	return 0, false
}
