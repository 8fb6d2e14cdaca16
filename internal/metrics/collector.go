package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/badge-dev/badge/ca"
)

// The metrics read from state when Prometheus scrapes.
var (
	descRevocations = prometheus.NewDesc("badge_revocations_in_force",
		"Revocations in force, by kind: spiffe_id (blocked IDs included) or serial.", []string{"kind"}, nil)
	descEntries = prometheus.NewDesc("badge_entries",
		"Registration entries.", nil, nil)
	descCRLNumber = prometheus.NewDesc("badge_crl_number",
		"Number of the current revocation list; it grows with every new list.", nil, nil)
	descCRLAge = prometheus.NewDesc("badge_crl_age_seconds",
		"Seconds since the current revocation list was signed; it is re-signed every 5 minutes and on every change.", nil, nil)
	descCRLNext = prometheus.NewDesc("badge_crl_next_update_timestamp_seconds",
		"NextUpdate of the current revocation list, in Unix seconds: verifiers refuse it after this.", nil, nil)
	descKeyExpiry = prometheus.NewDesc("badge_key_expiry_timestamp_seconds",
		"NotAfter of the signing key of each kind (x509-root, x509-intermediate, jwt), in Unix seconds.", []string{"kind"}, nil)
	descDBSize = prometheus.NewDesc("badge_database_size_bytes",
		"Size of the database file.", nil, nil)
	descSerials = prometheus.NewDesc("badge_serial_records",
		"Stored serial records: certificates issued and not yet pruned (pruned 30s after expiry).", nil, nil)
	descDBErrors = prometheus.NewDesc("badge_database_stats_errors",
		"1 when the last reading of the database statistics failed, else 0.", nil, nil)
	descCompactions = prometheus.NewDesc("badge_etcd_compactions_total",
		"Compactions of the etcd store's history this server made while it led its trust domain's servers.", nil, nil)
	descCompacted = prometheus.NewDesc("badge_etcd_compacted_revision",
		"The etcd revision this server's last compaction went to; 0 before the first.", nil, nil)
	descReady = prometheus.NewDesc("badge_ready",
		"1 when every readiness check passes (see /readyz), else 0.", nil, nil)
	descStart = prometheus.NewDesc("badge_start_time_seconds",
		"When the server started, in Unix seconds.", nil, nil)
)

// stateCollector reads the state metrics at scrape time.
type stateCollector struct{ m *Metrics }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRevocations, descEntries, descCRLNumber, descCRLAge, descCRLNext,
		descKeyExpiry, descDBSize, descSerials, descDBErrors, descCompactions, descCompacted, descReady, descStart} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	now := m.cfg.Time()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descStart, unixSeconds(m.start))
	if a := m.cfg.Authority; a != nil {
		snap := a.Snapshot()
		ids, serials := snap.RevocationCounts()
		gauge(descRevocations, float64(ids), "spiffe_id")
		gauge(descRevocations, float64(serials), "serial")
		gauge(descEntries, float64(len(snap.Entries())))
		_, number := snap.CRL()
		this, next := snap.CRLValidity()
		gauge(descCRLNumber, float64(number))
		gauge(descCRLAge, now.Sub(this.Add(ca.Backdate)).Seconds()) // ThisUpdate is backdated
		gauge(descCRLNext, unixSeconds(next))
		for _, k := range a.Keys() {
			if k.Signing {
				gauge(descKeyExpiry, unixSeconds(k.NotAfter), k.Kind)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if st, ok, err := m.dbStatistics(ctx); ok {
		failed := 0.0
		if err != nil {
			failed = 1
		} else {
			gauge(descDBSize, float64(st.SizeBytes))
			gauge(descSerials, float64(st.Serials))
		}
		gauge(descDBErrors, failed)
	}
	if f := m.cfg.Compactions; f != nil {
		n, rev := f()
		ch <- prometheus.MustNewConstMetric(descCompactions, prometheus.CounterValue, float64(n))
		gauge(descCompacted, float64(rev))
	}
	if r := m.cfg.Readiness; r != nil {
		ready := 0.0
		if r.Check(ctx).Ready {
			ready = 1
		}
		gauge(descReady, ready)
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
