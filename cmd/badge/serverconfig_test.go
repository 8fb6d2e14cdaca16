package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/storage/bbolt"
)

// checkConfig runs `badge server --check-config` in-process with args and
// the environment vars, and returns stdout, stderr and the exit code.
func checkConfig(t *testing.T, vars map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(k string) string { return vars[k] }}
	code := e.dispatch(context.Background(), append([]string{"server", "--check-config"}, args...))
	return out.String(), errOut.String(), code
}

// TestCheckConfigProblems: --check-config reports every problem of the
// command line, environment and file at once, each naming the setting and
// the file and line (or variable) its value came from, and exits 2.
func TestCheckConfigProblems(t *testing.T) {
	dir := t.TempDir()
	paths := []string{"--data-dir", "/var/lib/badge", "--socket", "/run/badge/w.sock", "--admin-socket", "/run/badge/a.sock"}
	for _, tc := range []struct {
		name string
		file string
		args []string
		vars map[string]string
		want []string // each a line of stderr, in order
	}{
		{
			name: "bad value and unknown key, with their lines",
			file: "# badge\ntrust-domain = \"prod.example.com\"\n\nsvid-ttl = \"forever\"\ntrust_domain = \"x\"\n",
			want: []string{
				`c.toml:4: svid-ttl = "forever": want a duration such as 90s, 5m or 24h`,
				`c.toml:5: trust_domain: unknown setting; did you mean 'trust-domain'?`,
			},
		},
		{
			name: "every source at once",
			file: "max-svid-ttl = \"2m\"\nuid-max-conns = -3\n[server]\nx = 1\n",
			args: []string{"--svid-ttl", "3m"},
			vars: map[string]string{"BADGE_JWT_TTL": "10m", "BADGE_LOG_LEVEL": "loud"},
			want: []string{
				`c.toml:3: server: unknown setting`,
				`c.toml:2: uid-max-conns = "-3": want 0 (no limit) or more`,
				`environment BADGE_LOG_LEVEL: log-level = "loud": want debug, info, warn or error`,
				`command line: svid-ttl = "3m0s": exceeds the maximum SVID lifetime max-svid-ttl = 2m (c.toml:1); raise max-svid-ttl explicitly to allow longer`,
				`environment BADGE_JWT_TTL: jwt-ttl = "10m": must be between 10s and 5m0s`,
			},
		},
		{
			name: "listeners of the metrics and audit issue",
			file: "metrics-listen = \"localhost\"\naudit-retention = \"0s\"\n",
			want: []string{
				`c.toml:2: audit-retention = "0s": must be positive (leave the flag out for the default)`,
				`c.toml:1: metrics-listen = "localhost": want HOST:PORT or :PORT (address localhost: missing port in address)`,
			},
		},
		{
			name: "a file value the command line overrides is still checked",
			file: "svid-ttl = \"soon\"\n",
			args: []string{"--svid-ttl", "1m"},
			want: []string{`c.toml:1: svid-ttl = "soon": want a duration such as 90s, 5m or 24h (overridden by the command line or environment)`},
		},
		{
			name: "syntax error names the line",
			file: "trust-domain = \"a.org\"\nsvid-ttl = \n",
			want: []string{`c.toml:2: not a valid TOML document: expected value but found '\n' instead`},
		},
		{
			name: "a key twice",
			file: "svid-ttl = \"1m\"\nsvid-ttl = \"2m\"\n",
			want: []string{`c.toml:2: not a valid TOML document: Key 'svid-ttl' has already been defined.`},
		},
		{
			name: "wrong type",
			file: "log-level = [\"debug\"]\n",
			want: []string{`c.toml:1: log-level: must be a string, number or boolean, not Array`},
		},
		{
			name: "check-config is no file setting",
			file: "check-config = true\n",
			want: []string{`c.toml:1: check-config: unknown setting`},
		},
		{
			name: "cross-setting rules of the authority",
			file: "intermediate-ttl = \"10m\"\nroot-ttl = \"10m\"\nlisten = \"8443\"\njwt-issuer = \"http://badge.example.org\"\n",
			args: []string{"--socket", "/run/badge/same.sock", "--admin-socket", "/run/badge/same.sock", "--trust-domain", "Bad!"},
			want: []string{
				`command line: admin-socket = "/run/badge/same.sock": is the Workload API socket too (socket = /run/badge/same.sock (command line)): the two need their own paths`,
				`command line: trust-domain = "Bad!": trust domain characters are limited`,
				`c.toml:4: jwt-issuer = "http://badge.example.org": ca: JWT issuer "http://badge.example.org" must be an https URL`,
				`c.toml:3: listen = "8443": want HOST:PORT or :PORT (address 8443: missing port in address)`,
				`c.toml:1: intermediate-ttl = "10m": must be at least four times max-svid-ttl = 5m0s (default)`,
				`c.toml:2: root-ttl = "10m": must be longer than intermediate-ttl = 10m (c.toml:1)`,
			},
		},
		{
			name: "etcd storage URL",
			file: "storage = \"etcd://h1:2379,h2\"\n",
			want: []string{`c.toml:1: storage = "etcd://h1:2379,h2": want bbolt or etcd://HOST:PORT[,HOST:PORT...]: storage URL "etcd://h1:2379,h2": endpoint "h2": want HOST:PORT`},
		},
		{
			name: "etcd storage scheme and port",
			vars: map[string]string{"BADGE_STORAGE": "http://h1:2379"},
			args: []string{"--etcd-ca", "/etc/badge/etcd-ca.pem"},
			want: []string{`environment BADGE_STORAGE: storage = "http://h1:2379": want bbolt or etcd://HOST:PORT[,HOST:PORT...]: storage URL "http://h1:2379": want etcd://`},
		},
		{
			name: "etcd files without etcd",
			args: []string{"--etcd-ca", "/etc/badge/etcd-ca.pem"},
			want: []string{`command line: etcd-ca = "/etc/badge/etcd-ca.pem": applies to an etcd store only, not storage = bbolt (default)`},
		},
		{
			name: "etcd compaction interval too short, or negative",
			file: "etcd-compact-interval = \"-5m\"\n",
			args: []string{"--etcd-compact-interval", "30s"},
			want: []string{
				`c.toml:1: etcd-compact-interval = "-5m": must be 0 (off) or positive (overridden by the command line or environment)`,
				`command line: etcd-compact-interval = "30s": want 0 (never compact) or at least 1m0s`,
			},
		},
		{
			name: "etcd compaction interval not a duration",
			vars: map[string]string{"BADGE_ETCD_COMPACT_INTERVAL": "often"},
			want: []string{`environment BADGE_ETCD_COMPACT_INTERVAL: etcd-compact-interval = "often": want a duration such as 5m or 1h, or 0 (off)`},
		},
		{
			name: "etcd certificate without key",
			args: []string{"--storage", "etcd://127.0.0.1:2379", "--etcd-cert", "/etc/badge/etcd.pem"},
			want: []string{`command line: etcd-cert = "/etc/badge/etcd.pem": needs --etcd-key, the certificate's private key`},
		},
		{
			name: "etcd without a root key-encryption key",
			args: []string{"--storage", "etcd://127.0.0.1:2379"},
			want: []string{`command line: storage = "etcd://127.0.0.1:2379": needs --root-kek, the file of the key that seals the root every server shares (head -c 32 /dev/urandom > FILE; chmod 600; the same file on every server), or --key-manager`},
		},
		{
			name: "root key-encryption key missing",
			args: []string{"--storage", "etcd://127.0.0.1:2379", "--root-kek", "/nonexistent/root.kek"},
			want: []string{`command line: root-kek = "/nonexistent/root.kek": ca: root key-encryption key: open /nonexistent/root.kek: no such file or directory`},
		},
		{
			name: "root key-encryption key without etcd",
			args: []string{"--root-kek", "/etc/badge/root.kek"},
			want: []string{`command line: root-kek = "/etc/badge/root.kek": applies to an etcd store only, not storage = bbolt (default)`},
		},
		{
			name: "etcd CA file missing",
			file: "storage = \"etcd://[::1]:2379\"\netcd-ca = \"/nonexistent/ca.pem\"\nroot-kek = \"/nonexistent/root.kek\"\n",
			want: []string{`c.toml:2: etcd-ca = "/nonexistent/ca.pem": etcd CA: open /nonexistent/ca.pem: no such file or directory`},
		},
		{
			name: "missing file",
			args: []string{"--config", filepath.Join(dir, "missing.toml")},
			want: []string{`command line: config: reading config file: open ` + filepath.Join(dir, "missing.toml") + `: no such file or directory`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{}, paths...)
			if tc.file != "" {
				if err := os.WriteFile(filepath.Join(dir, "c.toml"), []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", "c.toml")
			}
			t.Chdir(dir)
			out, errOut, code := checkConfig(t, tc.vars, append(args, tc.args...)...)
			if code != exitUsage || out != "" {
				t.Fatalf("exit %d, stdout %q; want exit 2 and nothing on stdout\nstderr:\n%s", code, out, errOut)
			}
			lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
			if len(lines) != len(tc.want)+2 {
				t.Fatalf("stderr has %d lines, want %d problems and the summary:\n%s", len(lines), len(tc.want), errOut)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("problem %d:\n got %s\nwant %s", i, lines[i], w)
				}
			}
			if !strings.Contains(lines[len(tc.want)], "the server would refuse to start") {
				t.Errorf("summary line %q", lines[len(tc.want)])
			}
		})
	}
}

// TestCheckConfigOK: a valid configuration prints every setting, its
// value and where it came from, and exits 0 without starting anything.
func TestCheckConfigOK(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "server.toml")
	if err := os.WriteFile(cfg, []byte("trust-domain = \"prod.example.com\"\n# comment\nsvid-ttl = \"2m\"\nlog-format = \"json\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	out, errOut, code := checkConfig(t, map[string]string{"BADGE_LOG_LEVEL": "debug", "BADGE_CONFIG": cfg},
		"--data-dir", data, "--socket", filepath.Join(dir, "w.sock"), "--admin-socket", filepath.Join(dir, "a.sock"), "--log-format", "text")
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range [][]string{
		{"SETTING", "VALUE", "FROM"},
		{"config", cfg, "environment BADGE_CONFIG"},
		{"trust-domain", "prod.example.com", cfg + ":1"},
		{"svid-ttl", "2m0s", cfg + ":3"},
		{"log-format", "text", "command line"},
		{"log-level", "debug", "environment BADGE_LOG_LEVEL"},
		{"data-dir", data, "command line"},
		{"max-svid-ttl", "5m0s", "default"},
		{"etcd-compact-interval", "5m0s", "(ignored:", "bbolt)", "default"},
	} {
		if !containsFields(out, want) {
			t.Errorf("no line %q in:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, "configuration OK ("+cfg+")\n") {
		t.Errorf("no closing OK line:\n%s", out)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("--check-config created the data dir: %v", err)
	}
}

// TestCheckConfigEtcdCompact: --etcd-compact-interval, from each source,
// is printed as in force with an etcd store; 0 turns compaction off.
func TestCheckConfigEtcdCompact(t *testing.T) {
	dir := t.TempDir()
	base := []string{"--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "w.sock"), "--admin-socket", filepath.Join(dir, "a.sock"),
		"--storage", "etcd://127.0.0.1:2379", "--root-kek", writeKEK(t, dir)}
	cfg := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(cfg, []byte("etcd-compact-interval = \"1h\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		vars map[string]string
		want []string
	}{
		{"default", nil, nil, []string{"etcd-compact-interval", "5m0s", "default"}},
		{"off", []string{"--etcd-compact-interval", "0"}, nil, []string{"etcd-compact-interval", "0s", "command line"}},
		{"the minimum", []string{"--etcd-compact-interval", "1m"}, nil, []string{"etcd-compact-interval", "1m0s", "command line"}},
		{"environment", nil, map[string]string{"BADGE_ETCD_COMPACT_INTERVAL": "10m"}, []string{"etcd-compact-interval", "10m0s", "environment BADGE_ETCD_COMPACT_INTERVAL"}},
		{"config file", []string{"--config", cfg}, nil, []string{"etcd-compact-interval", "1h0m0s", cfg + ":1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := checkConfig(t, tc.vars, append(base, tc.args...)...)
			if code != exitOK || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if !containsFields(out, tc.want) {
				t.Errorf("no line %q in:\n%s", tc.want, out)
			}
		})
	}
}

// containsFields reports whether a line of out has exactly the fields want.
func containsFields(out string, want []string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(l), " ") == strings.Join(want, " ") {
			return true
		}
	}
	return false
}

// TestCheckConfigAgreesWithAuthority: for lifetimes around every bound,
// --check-config accepts exactly what ca.New accepts, so that a
// configuration it passes never fails when the server starts.
func TestCheckConfigAgreesWithAuthority(t *testing.T) {
	for _, tc := range [][]string{
		{},
		{"--svid-ttl", "10s"},
		{"--svid-ttl", "9s"},
		{"--svid-ttl", "6m"},
		{"--svid-ttl", "6m", "--max-svid-ttl", "6m"},
		{"--max-svid-ttl", "9s", "--svid-ttl", "9s"},
		{"--jwt-ttl", "5m1s"},
		{"--jwt-ttl", "10s"},
		{"--intermediate-ttl", "20m"},
		{"--intermediate-ttl", "19m59s"},
		{"--max-svid-ttl", "1h", "--intermediate-ttl", "3h"},
		{"--root-ttl", "48h"},
		{"--root-ttl", "47h"},
		{"--root-ttl", "1h", "--intermediate-ttl", "30m"},
		{"--root-ttl", "24h"},
		{"--root-ttl", "24h1s"},
		{"--root-ttl", "90s", "--intermediate-ttl", "60s", "--max-svid-ttl", "10s", "--svid-ttl", "10s"},
		{"--root-ttl", "3h", "--intermediate-ttl", "1h", "--root-prepare-lead", "2h"},
		{"--root-ttl", "3h", "--intermediate-ttl", "1h", "--root-prepare-lead", "2h1s"},
		{"--jwt-key-ttl", "5m"},
		{"--jwt-key-ttl", "4m59s"},
		{"--jwt-key-ttl", "4m59s", "--jwt-ttl", "1m"},
		{"--jwt-prepare-lead", "4m59s"},
		{"--jwt-prepare-lead", "4m59s", "--jwt-ttl", "1m"},
		{"--jwt-key-ttl", "1h", "--jwt-prepare-lead", "1h1s"},
		{"--jwt-key-ttl", "10s", "--jwt-prepare-lead", "10s", "--jwt-ttl", "10s"},
		{"--root-ttl", "175320h"},
		{"--root-ttl", "175321h"},
	} {
		t.Run(strings.Join(tc, " "), func(t *testing.T) {
			dir := t.TempDir()
			e := &env{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
			st, err := e.loadServer(append([]string{"--data-dir", dir, "--socket", dir + "/w.sock", "--admin-socket", dir + "/a.sock"}, tc...))
			if err != nil {
				t.Fatal(err)
			}
			store, err := bbolt.Open(filepath.Join(dir, "badge.db"), &bbolt.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			c := st.c
			auth, caErr := ca.New(context.Background(), ca.Config{Store: store, KeyDir: filepath.Join(dir, "keys"),
				SVIDTTL: c.svidTTL, MaxSVIDTTL: c.maxSVIDTTL, JWTTTL: c.jwtTTL, RootTTL: c.rootTTL, IntermediateTTL: c.intermediateTTL,
				RootPrepareLead: c.rootLead, JWTKeyTTL: c.jwtKeyTTL, JWTPrepareLead: c.jwtLead})
			if caErr == nil {
				auth.Close()
			}
			if (len(st.problems) == 0) != (caErr == nil) {
				t.Errorf("--check-config problems %v, ca.New error %v: they disagree", st.problems, caErr)
			}
		})
	}
}

// TestCheckConfigKeyManager: --key-manager is checked as the authority
// checks it, and its PIN (or a cloud credential, which is refused) is
// never printed, whether the URI is accepted or refused.
func TestCheckConfigKeyManager(t *testing.T) {
	dir := t.TempDir()
	paths := []string{"--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "w.sock"), "--admin-socket", filepath.Join(dir, "a.sock")}
	const good = "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge?pin-value=s3cret"
	out, errOut, code := checkConfig(t, map[string]string{"BADGE_KEY_MANAGER": good}, paths...)
	if code != exitOK || !containsFields(out, []string{"key-manager", "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge?(redacted)", "environment", "BADGE_KEY_MANAGER"}) {
		t.Errorf("exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}
	for _, bad := range []string{"awskms:key-id=1?pin-value=s3cret", "pkcs11:token=badge;object=root?pin-value=s3cret", "pkcs11:?pin-value=s3cret",
		"azurekms:vault=badge-keys;tenant-id=t;client-id=c;client-secret=s3cret"} {
		out, errOut, code := checkConfig(t, nil, append(paths, "--key-manager", bad)...)
		if code != exitUsage || !strings.Contains(errOut, "command line: key-manager: ca: key manager") {
			t.Errorf("--key-manager %s: exit %d, stderr %q; want exit 2 naming key-manager", bad, code, errOut)
		}
		if strings.Contains(out+errOut, "s3cret") {
			t.Errorf("--key-manager %s: the PIN or secret is printed:\n%s%s", bad, out, errOut)
		}
	}
}
