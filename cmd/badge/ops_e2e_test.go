package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/badge-dev/badge/internal/metrics"
)

var metricsAddr = regexp.MustCompile(`msg="metrics listener ready" address=(http://\S+)`)

// metricsURL is the base URL of the daemon's --metrics-listen, as its
// latest start logged it.
func (d *daemon) metricsURL() string {
	d.t.Helper()
	m := metricsAddr.FindAllStringSubmatch(d.logs(), -1)
	if len(m) == 0 {
		d.t.Fatalf("the daemon did not log its metrics listener:\n%s", d.logs())
	}
	return m[len(m)-1][1]
}

// scrape is one scrape of a /metrics endpoint.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, c *http.Client, url string) scrape {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return mfs
}

// value returns the value of the series of name whose labels include
// labels (name=value pairs); -1 if there is none.
func (s scrape) value(name string, labels ...string) float64 {
	mf, ok := s[name]
	if !ok {
		return -1
	}
series:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			return m.GetUntyped().GetValue()
		}
	}
	return -1
}

// names returns the series names of the scrape, histograms with their
// _bucket, _sum and _count.
func (s scrape) names() map[string]bool {
	out := map[string]bool{}
	for n, mf := range s {
		out[n] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			out[n+"_bucket"], out[n+"_sum"], out[n+"_count"] = true, true, true
		}
	}
	return out
}

// TestE2EMetricsAfterIssuance scrapes the real daemon over HTTP after real
// workloads were issued SVIDs, refused and revoked: the metrics show what
// happened, on --metrics-listen and on the public listener, and every
// query of the Grafana dashboard reads metrics the daemon exports.
func TestE2EMetricsAfterIssuance(t *testing.T) {
	d := startDaemon(t, "--metrics-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0")
	c := &http.Client{Timeout: 10 * time.Second}
	url := d.metricsURL() + "/metrics"
	const id = "spiffe://example.org/web"

	s := scrapeMetrics(t, c, url)
	for _, name := range []string{"badge_x509_svids_issued_total", "badge_workload_callers_denied_total", "badge_revocations_in_force"} {
		if _, ok := s[name]; !ok {
			t.Fatalf("%s missing from a fresh daemon's metrics", name)
		}
	}
	if v := s.value("badge_x509_svids_issued_total", "result", "ok"); v != 0 {
		t.Errorf("X.509-SVIDs issued by a fresh daemon = %g, want 0", v)
	}
	if v := s.value("badge_ready"); v != 1 {
		t.Errorf("badge_ready = %g, want 1", v)
	}

	d.createEntry(id, "unix:uid:1001")
	for range 3 {
		if r := d.runWorkload(1001, 1001, "fetch"); r.Error != "" {
			t.Fatalf("fetch as uid 1001: %s", r.Error)
		}
	}
	if r := d.runWorkload(1002, 1002, "fetch"); r.Code != "PermissionDenied" {
		t.Fatalf("fetch as unregistered uid 1002: %+v, want PermissionDenied", r)
	}
	d.fetchJWT(1001, "spiffe://example.org/db")
	stream := d.startStream(1001, 1001)
	if r := stream.next(t, 15*time.Second); r.Error != "" {
		t.Fatalf("stream: %s", r.Error)
	}

	s = scrapeMetrics(t, c, url)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"badge_x509_svids_issued_total", []string{"result", "ok"}, 4},
		{"badge_x509_svids_issued_total", []string{"result", "error"}, 0},
		{"badge_jwt_svids_issued_total", []string{"result", "ok"}, 1},
		{"badge_svid_issuance_duration_seconds", []string{"kind", "x509"}, 4},
		{"badge_workload_streams_open", []string{"stream", "x509_svid"}, 1},
		{"badge_entries", nil, 1},
		{"badge_revocations_in_force", []string{"kind", "spiffe_id"}, 0},
	} {
		if got := s.value(tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %g, want %g", tc.name, tc.labels, got, tc.want)
		}
	}
	if got := s.value("badge_workload_callers_denied_total", "reason", "not_registered"); got < 1 {
		t.Errorf("callers denied as not registered = %g, want at least 1", got)
	}
	if got := s.value("badge_database_size_bytes"); got <= 0 {
		t.Errorf("badge_database_size_bytes = %g", got)
	}
	for _, kind := range []string{"x509-root", "x509-intermediate", "jwt"} {
		if exp := s.value("badge_key_expiry_timestamp_seconds", "kind", kind); exp < float64(time.Now().Unix()) {
			t.Errorf("expiry of the %s key = %g, want in the future", kind, exp)
		}
	}
	crlBefore := s.value("badge_crl_number")

	d.mustBadge("revoke", "--id", id, "--reason", "test")
	// The stream's revoked SVID is replaced at once: the fifth.
	if r := stream.next(t, 15*time.Second); r.Error != "" {
		t.Fatalf("stream after the revocation: %s", r.Error)
	}
	s = scrapeMetrics(t, c, url)
	if got := s.value("badge_x509_svids_issued_total", "result", "ok"); got != 5 {
		t.Errorf("X.509-SVIDs issued after the stream's was replaced = %g, want 5", got)
	}
	if got := s.value("badge_revocations_in_force", "kind", "spiffe_id"); got != 1 {
		t.Errorf("revocations by SPIFFE ID after a revocation = %g, want 1", got)
	}
	if got := s.value("badge_revocations_in_force", "kind", "serial"); got < 4 {
		t.Errorf("revoked serials after revoking an ID with 4 unexpired SVIDs = %g, want at least 4", got)
	}
	if got := s.value("badge_crl_number"); got <= crlBefore {
		t.Errorf("CRL number %g after a revocation, want more than %g", got, crlBefore)
	}

	stream.stop()
	deadline := time.Now().Add(10 * time.Second)
	for scrapeMetrics(t, c, url).value("badge_workload_streams_open", "stream", "x509_svid") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the open stream gauge did not go back to 0 after the stream ended")
		}
		time.Sleep(50 * time.Millisecond) // polling: the scrape is the only way to see it
	}

	// Every query of the dashboard reads metrics the daemon exports.
	exported := s.names()
	queries, err := metrics.DashboardQueries(metrics.Dashboard)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queries {
		for _, n := range metrics.QueryMetrics(q) {
			if !exported[n] {
				t.Errorf("dashboard query %q reads %s, which the daemon does not export", q, n)
			}
		}
	}

	// The public listener serves the same metrics, and the probes.
	pc := d.httpsClient(nil)
	ps := scrapeMetrics(t, pc, d.publicURL()+"/metrics")
	if got := ps.value("badge_x509_svids_issued_total", "result", "ok"); got != 5 {
		t.Errorf("public /metrics: X.509-SVIDs issued = %g, want 5", got)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		for _, base := range []string{d.publicURL(), d.metricsURL()} {
			client := c
			if strings.HasPrefix(base, "https") {
				client = pc
			}
			resp, err := client.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s%s: %s %s", base, path, resp.Status, body)
			}
		}
	}

	// badge status reads the same state.
	var st metrics.Status
	if err := json.Unmarshal([]byte(d.mustBadge("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Ready || st.Entries != 1 || st.IssuedLastMinute.X509 != 5 || st.IssuedLastMinute.JWT != 1 ||
		st.Revocations.SPIFFEIDs != 1 || st.TrustDomain != "example.org" || len(st.Keys) != 3 || st.OpenStreams != 0 {
		t.Errorf("badge status --json = %+v", st)
	}
	text := d.mustBadge("status")
	for _, want := range []string{"trust domain          example.org", "ready                 yes", "5 X.509-SVIDs, 1 JWT-SVIDs", "1 SPIFFE IDs", "x509-intermediate"} {
		if !strings.Contains(text, want) {
			t.Errorf("badge status lacks %q:\n%s", want, text)
		}
	}
}

// loopDataDir mounts a fresh 32 MiB ext4 filesystem on the daemon's data
// directory (a loop device), so that the test can freeze it and fill it.
func loopDataDir(t *testing.T) func(*daemon) {
	return func(d *daemon) {
		for _, tool := range []string{"mkfs.ext4", "mount", "umount", "fsfreeze"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("%s not installed (e2fsprogs, util-linux): the readiness test freezes a real filesystem", tool)
			}
		}
		img := filepath.Join(t.TempDir(), "data.img")
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "32M").CombinedOutput(); err != nil {
			t.Skipf("mkfs.ext4: %v: %s", err, out)
		}
		if err := os.MkdirAll(d.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-o", "loop", img, d.dataDir).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a loop device (%v: %s): the readiness test needs one", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", "-l", d.dataDir).Run() })
		if err := os.Chmod(d.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

// TestE2EReadyzFollowsDatabase freezes the data directory's filesystem
// under the running daemon, so that no write to the database completes,
// then fills it past the free-space reserve: /readyz, badge_ready and
// badge healthcheck report not ready each time, and ready again once the
// filesystem is thawed and the space freed.
func TestE2EReadyzFollowsDatabase(t *testing.T) {
	d := startDaemonWith(t, nil, loopDataDir(t), "--metrics-listen", "127.0.0.1:0", "--min-free-mib", "8")
	frozen := false
	t.Cleanup(func() { // before the daemon stops: it must be able to write
		if frozen {
			exec.Command("fsfreeze", "-u", d.dataDir).Run()
		}
	})
	c := &http.Client{Timeout: 10 * time.Second}
	readyz := func() (int, string) {
		resp, err := c.Get(d.metricsURL() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	waitReady := func(wantCode int, wantBody string) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			code, body := readyz()
			if code == wantCode && strings.Contains(body, wantBody) {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz = %d %q, want %d with %q", code, body, wantCode, wantBody)
			}
			time.Sleep(100 * time.Millisecond) // polling: readiness is probed, not pushed
		}
	}
	healthcheck := func() (int, string) {
		_, errOut, code := d.badge("healthcheck")
		return code, errOut
	}
	waitReady(http.StatusOK, "ok database")
	if code, errOut := healthcheck(); code != 0 {
		t.Fatalf("badge healthcheck on a ready server: exit %d: %s", code, errOut)
	}

	// A frozen filesystem: writes block.
	if out, err := exec.Command("fsfreeze", "-f", d.dataDir).CombinedOutput(); err != nil {
		t.Skipf("fsfreeze: %v: %s", err, out)
	}
	frozen = true
	body := waitReady(http.StatusServiceUnavailable, "fail database: no answer within")
	if !strings.Contains(body, "ok signing_key") || !strings.Contains(body, "ok crl") {
		t.Errorf("/readyz with a frozen database: %q, want the other checks ok", body)
	}
	if code, errOut := healthcheck(); code != exitFailure || !strings.Contains(errOut, "database") {
		t.Errorf("badge healthcheck with a frozen database: exit %d, %q; want 1 naming the database", code, errOut)
	}
	if v := scrapeMetrics(t, c, d.metricsURL()+"/metrics").value("badge_ready"); v != 0 {
		t.Errorf("badge_ready with a frozen database = %g, want 0", v)
	}
	if out, err := exec.Command("fsfreeze", "-u", d.dataDir).CombinedOutput(); err != nil {
		t.Fatalf("fsfreeze -u: %v: %s", err, out)
	}
	frozen = false
	waitReady(http.StatusOK, "ok database")

	// A full filesystem: below the reserve, new SVIDs are refused.
	filler, err := os.Create(filepath.Join(d.dataDir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := filler.Write(chunk); err != nil {
			break
		}
	}
	filler.Close()
	waitReady(http.StatusServiceUnavailable, "less than the 8.0 MiB reserve")
	if code, _ := healthcheck(); code != exitFailure {
		t.Errorf("badge healthcheck on a full disk: exit %d, want 1", code)
	}
	os.Remove(filler.Name())
	waitReady(http.StatusOK, "ok database")
	if code, errOut := healthcheck(); code != 0 {
		t.Errorf("badge healthcheck after the space was freed: exit %d: %s", code, errOut)
	}
}
