package metrics_test

import (
	"reflect"
	"testing"

	"github.com/badge-dev/badge/internal/metrics"
)

func TestQueryMetrics(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{`badge_entries`, []string{"badge_entries"}},
		{`max(badge_entries{instance=~"$instance"})`, []string{"badge_entries"}},
		{`sum by (result) (rate(badge_x509_svids_issued_total{instance=~"$instance"}[5m]))`, []string{"badge_x509_svids_issued_total"}},
		{`histogram_quantile(0.99, sum by (le, kind) (rate(badge_svid_issuance_duration_seconds_bucket[5m])))`, []string{"badge_svid_issuance_duration_seconds_bucket"}},
		{`a_total / on (kind) b_total > bool 1e3`, []string{"a_total", "b_total"}},
		{`min(badge_key_expiry_timestamp_seconds{kind="x509-root"}) - time()`, []string{"badge_key_expiry_timestamp_seconds"}},
		{`label_values(badge_build_info, instance)`, []string{"badge_build_info"}},
		{`up`, []string{"up"}},
		{`vector(1)`, nil},
	} {
		if got := metrics.QueryMetrics(tc.query); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("QueryMetrics(%q) = %q, want %q", tc.query, got, tc.want)
		}
	}
}

// TestDashboardNamesExportedMetrics checks that every query of the Grafana
// dashboard reads at least one metric, and only metrics that a real
// authority's registry exports.
func TestDashboardNamesExportedMetrics(t *testing.T) {
	m := newTestMetrics(t)
	exported := exportedNames(t, m.Registry())
	queries, err := metrics.DashboardQueries(metrics.Dashboard)
	if err != nil {
		t.Fatal(err)
	}
	if len(queries) < 10 {
		t.Fatalf("the dashboard has %d queries; want its panels' queries", len(queries))
	}
	for _, q := range queries {
		names := metrics.QueryMetrics(q)
		if len(names) == 0 {
			t.Errorf("query %q names no metric", q)
		}
		for _, n := range names {
			if !exported[n] {
				t.Errorf("query %q reads %s, which badge does not export", q, n)
			}
		}
	}
}

func TestDashboardCheckCatchesUnknownMetric(t *testing.T) {
	m := newTestMetrics(t)
	exported := exportedNames(t, m.Registry())
	bad := []byte(`{"panels":[{"targets":[{"expr":"rate(badge_nonexistent_total[5m])"}]}]}`)
	queries, err := metrics.DashboardQueries(bad)
	if err != nil {
		t.Fatal(err)
	}
	if len(queries) != 1 {
		t.Fatalf("DashboardQueries = %q, want the one expr", queries)
	}
	for _, n := range metrics.QueryMetrics(queries[0]) {
		if exported[n] {
			t.Errorf("%s counted as exported", n)
		}
	}
}
