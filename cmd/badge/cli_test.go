package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the CLI in-process with the given environment and returns
// stdout, stderr and the exit code.
func runCLI(t *testing.T, envs map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(k string) string { return envs[k] }}
	code := e.dispatch(context.Background(), args)
	return out.String(), errOut.String(), code
}

// TestUsageErrorsOneLine: a usage error is its cause on one line and a
// pointer to the right -h, never the full usage; typos get a suggestion.
// The server cases end with a relative --socket, a later usage error, so
// that a regression that accepts the value under test fails fast instead
// of starting a daemon on the default paths.
func TestUsageErrorsOneLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		envs map[string]string
		want string // the whole of stderr
	}{
		{"bad duration", []string{"server", "--svid-ttl", "abc", "--socket", "rel.sock"}, nil,
			"badge server: invalid value \"abc\" for flag -svid-ttl: want a duration such as 90s, 5m or 24h\nrun 'badge server -h' for usage\n"},
		{"zero ttl", []string{"server", "--svid-ttl", "0s", "--socket", "rel.sock"}, nil,
			"badge server: invalid value \"0s\" for flag -svid-ttl: must be positive (leave the flag out for the default)\nrun 'badge server -h' for usage\n"},
		{"zero ttl from the environment", []string{"server", "--socket", "rel.sock"}, map[string]string{"BADGE_SVID_TTL": "0s"},
			"badge server: environment BADGE_SVID_TTL: svid-ttl = \"0s\": must be positive (leave the flag out for the default) " +
				"(and 1 more problem: 'badge server --check-config' with the same flags, environment and config file lists them all)\nrun 'badge server -h' for usage\n"},
		{"negative max ttl", []string{"server", "--max-svid-ttl=-5m", "--socket", "rel.sock"}, nil,
			"badge server: invalid value \"-5m\" for flag -max-svid-ttl: must be positive (leave the flag out for the default)\nrun 'badge server -h' for usage\n"},
		{"zero jwt ttl", []string{"server", "--jwt-ttl", "0", "--socket", "rel.sock"}, nil,
			"badge server: invalid value \"0\" for flag -jwt-ttl: must be positive (leave the flag out for the default)\nrun 'badge server -h' for usage\n"},
		{"zero entry ttl", []string{"entry", "create", "--id", "spiffe://example.org/a", "--selector", "unix:uid:1", "--ttl", "0s"}, nil,
			"badge entry create: invalid value \"0s\" for flag -ttl: must be positive (leave the flag out for the default)\nrun 'badge entry create -h' for usage\n"},
		{"zero fetch timeout", []string{"svid", "fetch", "--timeout", "0s"}, nil,
			"badge svid fetch: invalid value \"0s\" for flag -timeout: must be positive (leave the flag out for the default)\nrun 'badge svid fetch -h' for usage\n"},
		{"negative healthcheck timeout", []string{"healthcheck", "--timeout=-1s"}, nil,
			"badge healthcheck: invalid value \"-1s\" for flag -timeout: must be positive (leave the flag out for the default)\nrun 'badge healthcheck -h' for usage\n"},
		{"unknown flag", []string{"revoke", "--frobnicate"}, nil,
			"badge revoke: flag provided but not defined: -frobnicate\nrun 'badge revoke -h' for usage\n"},
		{"missing flag", []string{"revoke"}, nil,
			"badge revoke: one of --id or --serial is required\nrun 'badge revoke -h' for usage\n"},
		{"key rotation without a kind", []string{"keys", "rotate"}, nil,
			"badge keys rotate: --kind is required: root, intermediate or jwt\nrun 'badge keys rotate -h' for usage\n"},
		{"key rotation of an unknown kind", []string{"keys", "rotate", "--kind", "leaf"}, nil,
			"badge keys rotate: --kind \"leaf\": want root, intermediate or jwt\nrun 'badge keys rotate -h' for usage\n"},
		{"group without subcommand", []string{"entry"}, nil,
			"badge entry: missing subcommand: want create, delete, list or show\nrun 'badge help' for the list of commands\n"},
		{"group with a flag", []string{"entry", "--json"}, nil,
			"badge entry: missing subcommand before --json: want create, delete, list or show\nrun 'badge help' for the list of commands\n"},
		{"typo", []string{"sevrer"}, nil,
			"badge: unknown command \"sevrer\"; did you mean 'server'?\nrun 'badge help' for the list of commands\n"},
		{"typo in a subcommand", []string{"entry", "craete", "--id", "x"}, nil,
			"badge: unknown command \"entry craete\"; did you mean 'entry create'?\nrun 'badge help' for the list of commands\n"},
		{"missing letter", []string{"revok"}, nil,
			"badge: unknown command \"revok\"; did you mean 'revoke'?\nrun 'badge help' for the list of commands\n"},
		{"nothing close", []string{"frobnicate"}, nil,
			"badge: unknown command \"frobnicate\"\nrun 'badge help' for the list of commands\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := runCLI(t, tc.envs, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if errOut != tc.want {
				t.Errorf("stderr:\n%s\nwant:\n%s", errOut, tc.want)
			}
		})
	}
}

// TestHelpPrintsUsage: -h still prints the full usage, once, and exits 0.
func TestHelpPrintsUsage(t *testing.T) {
	_, errOut, code := runCLI(t, nil, "server", "-h")
	if code != exitOK {
		t.Errorf("exit %d, want 0", code)
	}
	if !strings.HasPrefix(errOut, "Usage: badge server [flags]\n") || strings.Count(errOut, "Usage:") != 1 || !strings.Contains(errOut, "-svid-ttl") {
		t.Errorf("server -h printed:\n%s", errOut)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"server", "server", 0},
		{"sevrer", "server", 1},
		{"srever", "server", 1},
		{"servr", "server", 1},
		{"serverr", "server", 1},
		{"xerver", "server", 1},
		{"entry craete", "entry create", 1},
		{"abc", "", 3},
		{"", "abc", 3},
		{"kitten", "sitting", 3},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestSVIDFetchNoServer: with nothing listening, svid fetch says that the
// server may not be running and how to point it elsewhere.
func TestSVIDFetchNoServer(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	if err := os.WriteFile(stale, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sock := range []string{filepath.Join(dir, "missing.sock"), stale} {
		_, errOut, code := runCLI(t, map[string]string{"SPIFFE_ENDPOINT_SOCKET": "unix://" + sock}, "svid", "fetch")
		want := "badge svid fetch: cannot reach the Workload API at " + sock +
			": is badge server or badge agent running? (if it listens elsewhere, set --socket or SPIFFE_ENDPOINT_SOCKET)\n"
		if code != exitFailure || errOut != want {
			t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and:\n%s", code, errOut, want)
		}
	}
}

func TestDefaultDataDir(t *testing.T) {
	for _, tc := range []struct {
		name string
		euid int
		envs map[string]string
		want string // "" for an error
	}{
		{"root", 0, map[string]string{"XDG_STATE_HOME": "/x", "HOME": "/root"}, "/var/lib/badge"},
		{"xdg", 1000, map[string]string{"XDG_STATE_HOME": "/x/state", "HOME": "/home/u"}, "/x/state/badge"},
		{"relative xdg is ignored", 1000, map[string]string{"XDG_STATE_HOME": "state", "HOME": "/home/u"}, "/home/u/.local/state/badge"},
		{"home", 1000, map[string]string{"HOME": "/home/u"}, "/home/u/.local/state/badge"},
		{"neither", 1000, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := defaultDataDir(tc.euid, func(k string) string { return tc.envs[k] })
			if got != tc.want || (err != nil) != (tc.want == "") {
				t.Errorf("defaultDataDir = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestDataDirDefaultDocumented: `badge server -h` and the README's table
// give the same default for --data-dir.
func TestDataDirDefaultDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cell string
	for _, line := range strings.Split(string(readme), "\n") {
		if rest, ok := strings.CutPrefix(line, "| `--data-dir DIR` | "); ok {
			cell, _, _ = strings.Cut(rest, " |")
		}
	}
	if got := strings.ReplaceAll(cell, "`", ""); got != dataDirDefault {
		t.Errorf("README says the --data-dir default is %q, badge server -h says %q", got, dataDirDefault)
	}
	_, help, _ := runCLI(t, nil, "server", "-h")
	if !strings.Contains(help, "(default "+dataDirDefault+")") {
		t.Errorf("server -h does not give the data-dir default %q:\n%s", dataDirDefault, help)
	}
}
