package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// agentCheckConfig runs `badge agent --check-config` in-process.
func agentCheckConfig(t *testing.T, vars map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(k string) string { return vars[k] }}
	code := e.dispatch(context.Background(), append([]string{"agent", "--check-config"}, args...))
	return out.String(), errOut.String(), code
}

// TestAgentCheckConfig: the agent's settings come from flags, BADGE_*
// and the config file like the server's; every problem is reported at
// once, naming the setting; the join token is never printed.
func TestAgentCheckConfig(t *testing.T) {
	paths := []string{"--data-dir", "/var/lib/badge-agent", "--socket", "/run/badge/workload.sock"}
	for _, tc := range []struct {
		name string
		file string
		args []string
		vars map[string]string
		code int
		want []string // lines of stderr (failure) or stdout (success), in order
	}{
		{
			name: "nothing given",
			code: exitUsage,
			want: []string{
				"server: is required: the agent listener address of a badge server (badge server --agent-listen)",
				"trust-bundle: is required: the trust domain's root certificates (badge bundle show on the server)",
			},
		},
		{
			name: "bad values from every source",
			file: "server = \"a:1,b\"\nnode-cert = \"/etc/host.pem\"\n",
			args: []string{"--trust-bundle", "bundle.pem", "--uid-sign-burst", "0"},
			vars: map[string]string{"BADGE_JOIN_TOKEN": "secret-token", "BADGE_LOG_FORMAT": "xml"},
			code: exitUsage,
			want: []string{
				`command line: uid-sign-burst = "0": want 1 or more`,
				`c.toml:1: server = "a:1,b": invalid server address "b": want HOST:PORT`,
				`environment BADGE_JOIN_TOKEN: join-token: excludes --node-cert and --node-key: attest with one or the other`,
				`command line: trust-bundle = "bundle.pem": must be an absolute path`,
				`environment BADGE_LOG_FORMAT: log-format = "xml": want text or json`,
			},
		},
		{
			name: "a certificate without its key",
			args: []string{"--server", "s:8443", "--trust-bundle", "/b.pem", "--node-cert", "/c.pem"},
			code: exitUsage,
			want: []string{`node-key: --node-cert and --node-key go together`},
		},
		{
			name: "join token from the environment, not shown",
			args: []string{"--server", "s1:8443,s2:8443", "--trust-bundle", "/etc/badge/bundle.pem"},
			vars: map[string]string{"BADGE_JOIN_TOKEN": "secret-token"},
			code: exitOK,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{}, paths...), tc.args...)
			if tc.file != "" {
				p := filepath.Join(t.TempDir(), "c.toml")
				if err := os.WriteFile(p, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", p)
			}
			out, errOut, code := agentCheckConfig(t, tc.vars, args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", code, tc.code, out, errOut)
			}
			if strings.Contains(out+errOut, "secret-token") {
				t.Errorf("the join token is printed:\n%s%s", out, errOut)
			}
			if code == exitOK {
				for _, want := range []string{"join-token  (set, not shown)  environment BADGE_JOIN_TOKEN", "server  s1:8443,s2:8443  command line",
					"data-dir  /var/lib/badge-agent", "configuration OK"} {
					if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
						t.Errorf("stdout has no %q:\n%s", want, out)
					}
				}
				return
			}
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			for i, want := range tc.want {
				if i >= len(lines) || !strings.HasSuffix(lines[i], want) {
					t.Errorf("stderr line %d: want suffix %q\nstderr:\n%s", i, want, errOut)
				}
			}
			if len(lines) != len(tc.want)+2 || !strings.Contains(lines[len(tc.want)], "the agent would refuse to start") {
				t.Errorf("want %d problems and a last line saying the agent would refuse to start:\n%s", len(tc.want), errOut)
			}
		})
	}
}
