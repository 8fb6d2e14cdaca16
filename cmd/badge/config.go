package main

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/internal/socketpath"
)

// serverSocketDir is socketpath.ServerDir, whose error is a usage error.
func serverSocketDir(euid int, getenv func(string) string) (string, error) {
	d, err := socketpath.ServerDir(euid, getenv)
	if err != nil {
		return "", usageError{err}
	}
	return d, nil
}

// serverUIDs returns the uids a client trusts to serve the sockets: root,
// its own uid and BADGE_SERVER_UID, if set. A socket served by another
// uid is refused (see localtrust.DialUnix).
func (e *env) serverUIDs() ([]uint32, error) {
	v := e.getenv("BADGE_SERVER_UID")
	if v == "" {
		return localtrust.TrustedServerUIDs(), nil
	}
	u, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return nil, usagef("invalid BADGE_SERVER_UID %q: want a numeric uid", v)
	}
	return localtrust.TrustedServerUIDs(uint32(u)), nil
}

// flagSet returns a flag set for a command that reports errors instead of
// exiting. Its Usage prints the full usage, for -h only: parse keeps the
// flag package from printing a parse error and the usage, since dispatch
// prints the error once with a pointer to -h.
func (e *env) flagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("badge "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: badge %s %s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and then fills every flag the command line did not set:
// first from its BADGE_* environment variable (--svid-ttl from
// BADGE_SVID_TTL), then from the TOML file named by *configFile, if any.
// Every value goes through the flag's own Set, so all three sources are
// validated alike. It returns the names set on the command line, or the
// first problem (see load) as a usage error.
func (e *env) parse(fs *flag.FlagSet, args []string, configFile *string, noEnv ...string) (map[string]bool, error) {
	st, err := e.load(fs, nil, args, configFile, noEnv...)
	if err != nil {
		return nil, err
	}
	if len(st.problems) > 0 {
		return nil, usageError{st.problems[0]}
	}
	return st.cmdline, nil
}

// parseNoArgs is parse for a command that takes flags only: a positional
// argument is a usage error.
func (e *env) parseNoArgs(fs *flag.FlagSet, args []string, noEnv ...string) error {
	if _, err := e.parse(fs, args, nil, noEnv...); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func envName(flagName string) string {
	return "BADGE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// applyConfig sets flags from the TOML document data, read from path (see
// configProblems), and returns its first problem as a usage error.
func applyConfig(fs *flag.FlagSet, path string, data []byte, set map[string]bool) error {
	if probs := configProblems(fs, nil, path, data, set, map[string]origin{}, nil); len(probs) > 0 {
		return usageError{probs[0]}
	}
	return nil
}

// dataDirDefault says what defaultDataDir does, for `badge server -h`; the
// README's table says the same (TestDataDirDefaultDocumented).
const dataDirDefault = "/var/lib/badge as root, else $XDG_STATE_HOME/badge, else ~/.local/state/badge"

// defaultDataDir is /var/lib/badge for root, else the XDG state directory:
// $XDG_STATE_HOME/badge, else $HOME/.local/state/badge. With neither
// variable set there is no default: guessing a shared directory such as
// /tmp would put the CA keys where another user may reach them.
func defaultDataDir(euid int, getenv func(string) string) (string, error) {
	return stateDir(euid, getenv, "badge")
}

// stateDir is the data dir named name: /var/lib/NAME for root, else
// $XDG_STATE_HOME/NAME, else $HOME/.local/state/NAME (see defaultDataDir).
func stateDir(euid int, getenv func(string) string, name string) (string, error) {
	if euid == 0 {
		return filepath.Join("/var/lib", name), nil
	}
	if d := getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, name), nil
	}
	if home := getenv("HOME"); home != "" && filepath.IsAbs(home) {
		return filepath.Join(home, ".local", "state", name), nil
	}
	return "", usagef("no default data directory: neither $XDG_STATE_HOME nor $HOME is an absolute path; set --data-dir")
}

// workloadSocket resolves the Workload API socket path: --socket, then
// SPIFFE_ENDPOINT_SOCKET, then BADGE_SOCKET, then the client default (see
// socketpath.Workload). Values may be a path or a unix:// URL.
func (e *env) workloadSocket(flagValue string) (string, error) {
	p, err := socketpath.Workload(flagValue, e.getenv)
	if err != nil {
		return "", usageError{err}
	}
	return p, nil
}

// durationFlag is a time.Duration flag (lifetimes, timeouts) that accepts
// only positive values: zero is never a way to ask for the default, which
// is what leaving the flag out is for.
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 90s, 5m or 24h")
	}
	if d <= 0 {
		return errors.New("must be positive (leave the flag out for the default)")
	}
	*f.d = d
	return nil
}

// intervalFlag is a time.Duration flag of something done periodically,
// where 0 turns it off; a negative value is refused.
type intervalFlag struct{ d *time.Duration }

func (f intervalFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f intervalFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 5m or 1h, or 0 (off)")
	}
	if d < 0 {
		return errors.New("must be 0 (off) or positive")
	}
	*f.d = d
	return nil
}

// durationVar defines a durationFlag with a default value.
func durationVar(fs *flag.FlagSet, name string, value time.Duration, usage string) *time.Duration {
	d := value
	fs.Var(durationFlag{&d}, name, usage)
	return &d
}

// stringsFlag collects a repeatable flag.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }
