// Package metrics is what operators see of a running badge server: the
// Prometheus metrics, the /healthz and /readyz probes, and the document
// behind `badge status`.
//
// Metrics come from two places. Events on the issuance path (signings,
// streams, attestation failures, refused callers) are counted as they
// happen through the workload.Metrics interface, which *Metrics
// implements with atomic counters and a histogram: no lock, and one
// small allocation per stream. State (revocations, the revocation list, key expiry,
// entries, the database) is read when Prometheus scrapes, from the
// authority's current snapshot and, at most once per DBStatsInterval,
// from the database.
//
// Names follow the Prometheus conventions: the badge_ prefix, base units
// in the name (_seconds, _bytes), _total on counters. Label values come
// from fixed sets (workload.Results, workload.Streams, ...): no SPIFFE ID,
// uid or pid is ever a label, so the number of series is fixed; every
// series exists from the start, at zero.
//
// Serve Handler on a listener of its own (badge server --metrics-listen,
// plain HTTP) or mount its paths on another (the public HTTPS listener).
package metrics

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/workload"
)

// DBStatsInterval is the longest a scrape or status reuses database
// statistics: counting the serial records walks their pages.
const DBStatsInterval = 5 * time.Second

// DBStats is what the metrics report of the database.
type DBStats struct {
	// SizeBytes is the size of the database file.
	SizeBytes int64
	// Serials is the number of stored serial records.
	Serials int
}

// Config configures Metrics.
type Config struct {
	// Authority is the authority whose state is reported. Required.
	Authority *ca.Authority
	// DBStats returns the database statistics. Nil: none are reported.
	DBStats func(ctx context.Context) (DBStats, error)
	// Compactions, if set, returns how many times this server compacted
	// the history of its etcd store and the revision of the last
	// compaction (see storage/etcd), reported as
	// badge_etcd_compactions_total and badge_etcd_compacted_revision.
	// Nil (a store with no such history): neither is reported.
	Compactions func() (count uint64, revision int64)
	// Readiness, if set, is reported as badge_ready and in the status.
	Readiness *Readiness
	// Errors, if set, supplies the last errors of the status.
	Errors *ErrorLog
	// Version is the badge version, reported by badge_build_info.
	Version string
	// Time returns the current time. Default time.Now.
	Time func() time.Time
}

// Metrics holds badge's Prometheus collectors. It implements
// workload.Metrics. Create it with New.
type Metrics struct {
	cfg   Config
	reg   *prometheus.Registry
	start time.Time

	issued   map[string]map[string]prometheus.Counter // kind → result
	latency  map[string]prometheus.Observer           // kind
	streams  map[string]prometheus.Gauge
	attest   map[string]prometheus.Counter
	denied   map[string]prometheus.Counter
	open     atomic.Int64  // streams open, all methods
	lastMin  [2]rateWindow // successful signings per kind (x509, jwt) over the last minute
	dbMu     sync.Mutex
	dbAt     time.Time
	dbStats  DBStats
	dbErr    error
	dbFlight *dbRead // the read of the statistics in progress, if any
	nodes    nodeMetrics
}

// New returns the metrics of the authority in cfg, registered in a
// registry of their own with the Go runtime and process collectors.
func New(cfg Config) *Metrics {
	if cfg.Time == nil {
		cfg.Time = time.Now
	}
	m := &Metrics{cfg: cfg, reg: prometheus.NewRegistry(), start: cfg.Time()}
	issued := map[string]*prometheus.CounterVec{
		workload.KindX509: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "badge_x509_svids_issued_total",
			Help: "X.509-SVIDs asked of the authority through the Workload API, by result (ok, blocked, limited, invalid, error).",
		}, []string{"result"}),
		workload.KindJWT: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "badge_jwt_svids_issued_total",
			Help: "JWT-SVIDs asked of the authority through the Workload API, by result; ok includes tokens handed out again from the cache.",
		}, []string{"result"}),
	}
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "badge_svid_issuance_duration_seconds",
		Help:    "Time to issue one SVID (key generation, signing, recording its serial), by kind (x509, jwt); successful issuances only.",
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
	}, []string{"kind"})
	streams := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "badge_workload_streams_open",
		Help: "Open Workload API streams, by stream (x509_svid, x509_bundles, jwt_bundles).",
	}, []string{"stream"})
	attest := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "badge_attestation_failures_total",
		Help: "Workload API callers whose process could not be attested or verified, by reason.",
	}, []string{"reason"})
	denied := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "badge_workload_callers_denied_total",
		Help: "Workload API calls refused, by reason (not_registered, blocked, no_header, limited).",
	}, []string{"reason"})
	m.issued = map[string]map[string]prometheus.Counter{}
	m.latency = map[string]prometheus.Observer{}
	for _, kind := range workload.Kinds {
		m.issued[kind] = map[string]prometheus.Counter{}
		for _, r := range workload.Results {
			m.issued[kind][r] = issued[kind].WithLabelValues(r)
		}
		m.latency[kind] = latency.WithLabelValues(kind)
	}
	m.streams = labelled(workload.Streams, streams.WithLabelValues)
	m.attest = labelled(workload.AttestationReasons, attest.WithLabelValues)
	m.denied = labelled(workload.Denials, denied.WithLabelValues)
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "badge_build_info",
		Help: "Always 1; the labels say which badge runs.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(cfg.Version, runtime.Version()).Set(1)
	m.reg.MustRegister(issued[workload.KindX509], issued[workload.KindJWT], latency, streams, attest, denied, build,
		&stateCollector{m: m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.registerNodes()
	return m
}

func labelled[T any](values []string, with func(...string) T) map[string]T {
	out := make(map[string]T, len(values))
	for _, v := range values {
		out[v] = with(v)
	}
	return out
}

// Registry returns the registry holding every badge metric.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4})
}

// SVIDIssued implements workload.Metrics.
func (m *Metrics) SVIDIssued(kind, result string, d time.Duration) {
	c, ok := m.issued[kind][result]
	if !ok {
		return
	}
	c.Inc()
	if result == workload.ResultOK {
		m.latency[kind].Observe(d.Seconds())
		i := 0
		if kind == workload.KindJWT {
			i = 1
		}
		m.lastMin[i].add(m.cfg.Time().Unix())
	}
}

// StreamOpened implements workload.Metrics.
func (m *Metrics) StreamOpened(stream string) func() {
	g, ok := m.streams[stream]
	if !ok {
		return func() {}
	}
	g.Inc()
	m.open.Add(1)
	return func() {
		g.Dec()
		m.open.Add(-1)
	}
}

// AttestationFailed implements workload.Metrics.
func (m *Metrics) AttestationFailed(reason string) {
	if c, ok := m.attest[reason]; ok {
		c.Inc()
	}
}

// CallerDenied implements workload.Metrics.
func (m *Metrics) CallerDenied(reason string) {
	if c, ok := m.denied[reason]; ok {
		c.Inc()
	}
}

// dbRead is one read of the database statistics; done is closed once st
// and err are set.
type dbRead struct {
	done chan struct{}
	st   DBStats
	err  error
}

// dbStatistics returns the database statistics, read at most once per
// DBStatsInterval; ok is false when the Config has no DBStats.
//
// A scrape never waits on the database beyond ctx: a store that does not
// answer (a filesystem frozen or hung under a commit, whose bbolt then
// holds the lock every read takes) gives an error naming the wait, and
// the figures last read. One read at a time is in progress, whoever
// waits on it, so a stuck store holds one goroutine, not one per scrape;
// when it answers, the figures it read serve the next scrape.
func (m *Metrics) dbStatistics(ctx context.Context) (st DBStats, ok bool, err error) {
	if m.cfg.DBStats == nil {
		return DBStats{}, false, nil
	}
	m.dbMu.Lock()
	if now := m.cfg.Time(); m.dbFlight == nil && (m.dbAt.IsZero() || now.Sub(m.dbAt) >= DBStatsInterval || now.Before(m.dbAt)) {
		r := &dbRead{done: make(chan struct{})}
		m.dbFlight = r
		go func() {
			// Not ctx: a late answer still refreshes the figures.
			st, err := m.cfg.DBStats(context.Background())
			m.dbMu.Lock()
			m.dbStats, m.dbErr, m.dbAt, m.dbFlight = st, err, m.cfg.Time(), nil
			m.dbMu.Unlock()
			r.st, r.err = st, err
			close(r.done)
		}()
	}
	r, st, err := m.dbFlight, m.dbStats, m.dbErr
	m.dbMu.Unlock()
	if r == nil {
		return st, true, err
	}
	select {
	case <-r.done:
		return r.st, true, r.err
	case <-ctx.Done():
		return st, true, fmt.Errorf("metrics: the database did not answer for its statistics: %w", ctx.Err())
	}
}

// rateWindow counts events in each of the last 60 seconds. Counting is
// two atomic operations; an event at the turn of a second may be lost
// to a concurrent reset, which a status display can afford.
type rateWindow struct {
	slots [60]struct {
		sec atomic.Int64
		n   atomic.Int64
	}
}

func (w *rateWindow) add(sec int64) {
	s := &w.slots[sec%60]
	if s.sec.Load() != sec {
		if old := s.sec.Swap(sec); old != sec {
			s.n.Store(0)
		}
	}
	s.n.Add(1)
}

// lastMinute returns the events of the 60 seconds up to and including sec.
func (w *rateWindow) lastMinute(sec int64) int64 {
	var n int64
	for i := range w.slots {
		s := &w.slots[i]
		if t := s.sec.Load(); t <= sec && t > sec-60 {
			n += s.n.Load()
		}
	}
	return n
}
