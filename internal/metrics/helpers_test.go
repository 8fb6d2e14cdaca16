package metrics_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/metrics"
	"github.com/badge-dev/badge/storage/bbolt"
)

// newAuthority opens a real authority on a bbolt store in a temporary
// directory.
func newAuthority(t testing.TB) (*ca.Authority, *bbolt.Store) {
	t.Helper()
	dir := t.TempDir()
	store, err := bbolt.Open(filepath.Join(dir, "badge.db"), &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	a, err := ca.New(context.Background(), ca.Config{Store: store, KeyDir: filepath.Join(dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, store
}

func newTestMetrics(t testing.TB) *metrics.Metrics {
	a, store := newAuthority(t)
	return metrics.New(metrics.Config{
		Authority: a,
		DBStats: func(ctx context.Context) (metrics.DBStats, error) {
			st, err := store.Stats(ctx)
			return metrics.DBStats{SizeBytes: st.FileBytes, Serials: st.Serials}, err
		},
		Readiness: metrics.NewReadiness(0, metrics.Check{Name: "database", Run: store.Ping}),
		Version:   "test",
	})
}

// exportedNames returns the names of the series the registry exports
// (histograms as their _bucket, _sum and _count series).
func exportedNames(t *testing.T, reg *prometheus.Registry) map[string]bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		out[mf.GetName()] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				out[mf.GetName()+s] = true
			}
		}
	}
	return out
}
