package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/internal/socketpath"
)

// testFlags is a flag set shaped like the server's.
func testFlags(e *env) (*flag.FlagSet, *string, *string, *time.Duration, *string) {
	fs := e.flagSet("server", "")
	fs.SetOutput(io.Discard)
	config := fs.String("config", "", "")
	td := fs.String("trust-domain", "example.org", "")
	ttl := new(time.Duration)
	*ttl = 5 * time.Minute
	fs.Var(durationFlag{ttl}, "svid-ttl", "")
	level := fs.String("log-level", "info", "")
	return fs, config, td, ttl, level
}

func TestFlagPrecedence(t *testing.T) {
	cfg := t.TempDir() + "/c.toml"
	if err := os.WriteFile(cfg, []byte("trust-domain = \"file.org\"\nsvid-ttl = \"2m\"\nlog-level = \"warn\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		envs    map[string]string
		td      string
		ttl     time.Duration
		level   string
		wantErr bool
	}{
		{name: "defaults", td: "example.org", ttl: 5 * time.Minute, level: "info"},
		{name: "file", args: []string{"--config", cfg}, td: "file.org", ttl: 2 * time.Minute, level: "warn"},
		{name: "env beats file", args: []string{"--config", cfg}, envs: map[string]string{"BADGE_TRUST_DOMAIN": "env.org"}, td: "env.org", ttl: 2 * time.Minute, level: "warn"},
		{name: "flag beats env and file", args: []string{"--config", cfg, "--trust-domain", "flag.org", "--svid-ttl", "1m"}, envs: map[string]string{"BADGE_TRUST_DOMAIN": "env.org"}, td: "flag.org", ttl: time.Minute, level: "warn"},
		{name: "config from env", envs: map[string]string{"BADGE_CONFIG": cfg}, td: "file.org", ttl: 2 * time.Minute, level: "warn"},
		{name: "bad env value", envs: map[string]string{"BADGE_SVID_TTL": "soon"}, wantErr: true},
		{name: "negative duration", args: []string{"--svid-ttl", "-1m"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{stderr: io.Discard, getenv: func(k string) string { return tc.envs[k] }}
			fs, config, td, ttl, level := testFlags(e)
			_, err := e.parse(fs, tc.args, config)
			if tc.wantErr {
				var ue usageError
				if !errors.As(err, &ue) {
					t.Fatalf("err = %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *td != tc.td || *ttl != tc.ttl || *level != tc.level {
				t.Fatalf("got %s %s %s, want %s %s %s", *td, *ttl, *level, tc.td, tc.ttl, tc.level)
			}
		})
	}
}

func TestConfigFileFixture(t *testing.T) {
	e := &env{stderr: io.Discard, getenv: func(string) string { return "" }}
	var c serverConfig
	fs := e.flagSet("server", "")
	for _, name := range []string{"trust-domain", "data-dir", "socket", "admin-socket", "log-level", "log-format"} {
		fs.String(name, "", "")
	}
	fs.StringVar(&c.config, "config", "", "")
	fs.Var(durationFlag{&c.svidTTL}, "svid-ttl", "")
	fs.Var(durationFlag{&c.maxSVIDTTL}, "max-svid-ttl", "")
	fs.Var(durationFlag{&c.jwtTTL}, "jwt-ttl", "")
	if _, err := e.parse(fs, []string{"--config", "testdata/server.toml"}, &c.config); err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("trust-domain").Value.String(); got != "prod.example.com" {
		t.Fatalf("trust-domain = %q", got)
	}
	if c.svidTTL != 2*time.Minute || c.maxSVIDTTL != 5*time.Minute {
		t.Fatalf("ttls = %s %s", c.svidTTL, c.maxSVIDTTL)
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"unknown key", `trust_domain = "x"`},
		{"config inside config", `config = "other.toml"`},
		{"table", "[server]\ntrust-domain = \"x\""},
		{"array", `trust-domain = ["a", "b"]`},
		{"syntax", `trust-domain = `},
		{"bad value", `svid-ttl = "forever"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{stderr: io.Discard, getenv: func(string) string { return "" }}
			fs, _, _, _, _ := testFlags(e)
			err := applyConfig(fs, "c.toml", []byte(tc.data), map[string]bool{})
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want a usage error", err)
			}
		})
	}
}

func TestWorkloadSocketPrecedence(t *testing.T) {
	vars := map[string]string{"SPIFFE_ENDPOINT_SOCKET": "unix:///spiffe.sock", "BADGE_SOCKET": "/badge.sock"}
	e := &env{getenv: func(k string) string { return vars[k] }}
	if got, _ := e.workloadSocket("/flag.sock"); got != "/flag.sock" {
		t.Errorf("flag: %s", got)
	}
	if got, _ := e.workloadSocket(""); got != "/spiffe.sock" {
		t.Errorf("SPIFFE_ENDPOINT_SOCKET: %s", got)
	}
	delete(vars, "SPIFFE_ENDPOINT_SOCKET")
	if got, _ := e.workloadSocket(""); got != "/badge.sock" {
		t.Errorf("BADGE_SOCKET: %s", got)
	}
	delete(vars, "BADGE_SOCKET")
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
	if got, _ := e.workloadSocket(""); got != socketpath.ClientDefault(os.Geteuid(), e.getenv, socketpath.WorkloadName, exists) {
		t.Errorf("default: %s", got)
	}
}

// FuzzConfigFile feeds arbitrary bytes to the config file parser: it must
// never panic, and whatever it accepts must leave the flags valid.
func FuzzConfigFile(f *testing.F) {
	if data, err := os.ReadFile("testdata/server.toml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`svid-ttl = "5m"`))
	f.Add([]byte(`trust-domain = 3`))
	f.Add([]byte("[a]\nb = 1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e := &env{stderr: io.Discard, getenv: func(string) string { return "" }}
		fs, _, _, ttl, _ := testFlags(e)
		if err := applyConfig(fs, "fuzz.toml", data, map[string]bool{}); err != nil {
			return
		}
		if *ttl < 0 {
			t.Fatalf("accepted a negative svid-ttl %s", *ttl)
		}
	})
}

// TestDefaultSockets: a server not run as root needs $XDG_RUNTIME_DIR, and
// says so with a usage error. The rules themselves are tested in
// internal/socketpath (TestDefaultDirs).
func TestDefaultSockets(t *testing.T) {
	dir, err := serverSocketDir(1000, func(string) string { return "" })
	var ue usageError
	if !errors.As(err, &ue) || !errors.Is(err, socketpath.ErrNoRuntimeDir) {
		t.Errorf("server socket dir = %q, %v; want a usage error naming XDG_RUNTIME_DIR", dir, err)
	}
}

// TestServerUIDs: BADGE_SERVER_UID adds one numeric uid to root and the
// caller's own; anything else is a usage error.
func TestServerUIDs(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want []uint32 // nil: a usage error
	}{
		{"", localtrust.TrustedServerUIDs()},
		{"1001", localtrust.TrustedServerUIDs(1001)},
		{"0", localtrust.TrustedServerUIDs()},
		{"badge", nil},
		{"-1", nil},
		{"4294967296", nil},
	} {
		e := &env{getenv: func(k string) string {
			if k == "BADGE_SERVER_UID" {
				return tc.env
			}
			return ""
		}}
		got, err := e.serverUIDs()
		var ue usageError
		switch {
		case tc.want == nil && !errors.As(err, &ue):
			t.Errorf("BADGE_SERVER_UID=%q: %v, %v; want a usage error", tc.env, got, err)
		case tc.want != nil && (err != nil || !slices.Equal(got, tc.want)):
			t.Errorf("BADGE_SERVER_UID=%q: %v, %v; want %v", tc.env, got, err, tc.want)
		}
	}
}
