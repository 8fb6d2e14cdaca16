package public

import (
	"net/http"
	"testing"
)

// TestReadyzAndMetricsMounted: /readyz and /metrics serve what the
// Config hands in; without them /readyz answers like /healthz and
// /metrics is not found.
func TestReadyzAndMetricsMounted(t *testing.T) {
	plain := start(t, "", nil)
	if resp, body := get(t, plain.client(nil), plain.url+"/readyz"); resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("/readyz without a Readyz handler: %s %q, want 200 ok", resp.Status, body)
	}
	if resp, _ := get(t, plain.client(nil), plain.url+"/metrics"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics without a Metrics handler: %s, want 404", resp.Status)
	}

	f := start(t, "", func(c *Config) {
		c.Readyz = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("fail database: frozen\n"))
		})
		c.Metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("badge_ready 0\n")) })
	})
	if resp, body := get(t, f.client(nil), f.url+"/readyz"); resp.StatusCode != http.StatusServiceUnavailable || string(body) != "fail database: frozen\n" {
		t.Errorf("/readyz: %s %q, want the Readyz handler's 503", resp.Status, body)
	}
	if resp, body := get(t, f.client(nil), f.url+"/metrics"); resp.StatusCode != http.StatusOK || string(body) != "badge_ready 0\n" {
		t.Errorf("/metrics: %s %q, want the Metrics handler's answer", resp.Status, body)
	}
}
