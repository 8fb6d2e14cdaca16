package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startDaemonConfig starts `badge server --config FILE` with FILE holding
// config, and the log level left to the file.
func startDaemonConfig(t *testing.T, config string) (*daemon, string) {
	t.Helper()
	requireRoot(t)
	dir := worldReadableTempDir(t)
	cfg := filepath.Join(dir, "server.toml")
	writeConfig(t, cfg, config)
	d := &daemon{
		t: t, dir: dir, fileLog: true,
		dataDir: filepath.Join(dir, "data"),
		socket:  filepath.Join(dir, "sock", "workload.sock"),
		admin:   filepath.Join(dir, "sock", "admin.sock"),
		args:    []string{"--config", cfg},
	}
	d.start()
	t.Cleanup(d.stop)
	return d, cfg
}

func writeConfig(t *testing.T, path, config string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
}

// hup sends SIGHUP and returns the daemon's log line containing want that
// follows, waiting up to 10s for it.
func (d *daemon) hup(want string) string {
	d.t.Helper()
	d.mu.Lock()
	from := len(d.logLines)
	d.mu.Unlock()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		d.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond) // the log has no event to wait on
	defer tick.Stop()
	for time.Now().Before(deadline) {
		d.mu.Lock()
		for _, l := range d.logLines[from:] {
			if strings.Contains(l, want) {
				d.mu.Unlock()
				return l
			}
		}
		d.mu.Unlock()
		select {
		case <-d.exited:
			d.t.Fatalf("badge server exited on SIGHUP:\n%s", d.logs())
		case <-tick.C:
		}
	}
	d.t.Fatalf("no log line %q within 10s of SIGHUP:\n%s", want, d.logs())
	return ""
}

// svidLife fetches an X.509-SVID as uid 1001 and returns its ID and
// lifetime from issuance (NotAfter - NotBefore less the backdating).
func (d *daemon) svidLife() (string, time.Duration) {
	d.t.Helper()
	r := d.runWorkload(1001, 1001, "fetch")
	if r.Error != "" || len(r.SVIDs) != 1 {
		d.t.Fatalf("fetch: %+v", r)
	}
	c, err := x509.ParseCertificate(r.SVIDs[0].Chain[0])
	if err != nil {
		d.t.Fatal(err)
	}
	return c.URIs[0].String(), c.NotAfter.Sub(c.NotBefore) - 30*time.Second
}

func (d *daemon) logCount(s string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, l := range d.logLines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// TestE2EReloadOnSIGHUP: SIGHUP reads the config file again; the log level
// and the SVID lifetime change live and the log says from what to what; a
// setting that cannot change live is refused with a message and keeps its
// value; a configuration with problems changes nothing and the log names
// the key and line.
func TestE2EReloadOnSIGHUP(t *testing.T) {
	d, cfg := startDaemonConfig(t, "log-level = \"info\"\nsvid-ttl = \"5m\"\n")
	d.createEntry("spiffe://example.org/reload", "unix:uid:1001")
	if id, life := d.svidLife(); id != "spiffe://example.org/reload" || life != 5*time.Minute {
		t.Fatalf("before reload: %s for %s, want 5m", id, life)
	}
	if n := d.logCount("X.509-SVIDs sent"); n != 0 {
		t.Fatalf("a debug line at log level info: %d", n)
	}

	writeConfig(t, cfg, "log-level = \"debug\"\nsvid-ttl = \"1m\"\ntrust-domain = \"other.org\"\n")
	line := d.hup("configuration reloaded")
	for _, want := range []string{"log-level: info -> debug", "svid-ttl: 5m0s -> 1m0s"} {
		if !strings.Contains(line, want) {
			t.Errorf("reload line %q does not say %q", line, want)
		}
	}
	if n := d.logCount("trust-domain: example.org -> other.org"); n != 1 || d.logCount("change only on a restart") != 1 {
		t.Errorf("the trust domain change was not refused with a message:\n%s", d.logs())
	}
	if id, life := d.svidLife(); id != "spiffe://example.org/reload" || life != time.Minute {
		t.Errorf("after reload: %s for %s; want the same trust domain and the new lifetime 1m", id, life)
	}
	if n := d.logCount("X.509-SVIDs sent"); n == 0 {
		t.Errorf("no debug line after the log level became debug")
	}

	writeConfig(t, cfg, "log-level = \"debug\"\n\nsvid-ttl = \"forever\"\n")
	line = d.hup("configuration not reloaded")
	if !strings.Contains(line, "server.toml:3: svid-ttl") {
		t.Errorf("the refusal %q does not name the key and line", line)
	}
	if _, life := d.svidLife(); life != time.Minute {
		t.Errorf("a bad configuration changed the lifetime to %s", life)
	}

	// A longer maximum needs a restart, so a lifetime beyond the running
	// maximum is refused too, and the log says why.
	writeConfig(t, cfg, "log-level = \"debug\"\nmax-svid-ttl = \"10m\"\nsvid-ttl = \"10m\"\nintermediate-ttl = \"24h\"\n")
	line = d.hup("lifetimes not changed")
	if !strings.Contains(line, "exceeds the maximum SVID TTL 5m0s") {
		t.Errorf("the refusal %q does not say why", line)
	}
	if _, life := d.svidLife(); life != time.Minute {
		t.Errorf("a refused lifetime changed it to %s", life)
	}

	// Back to warn: info lines stop.
	writeConfig(t, cfg, "log-level = \"warn\"\nsvid-ttl = \"1m\"\n")
	d.hup("log-level: debug -> warn")
	before := d.logCount("level=INFO")
	d.createEntry("spiffe://example.org/quiet", "unix:uid:1002")
	d.svidLife()
	if after := d.logCount("level=INFO"); after != before {
		t.Errorf("%d info lines at log level warn:\n%s", after-before, d.logs())
	}
}
