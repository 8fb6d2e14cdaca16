package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.step.sm/crypto/pemutil"

	"github.com/badge-dev/badge/agent"
	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/socketpath"
)

// agentDataDirDefault says what the agent's default data dir is, for -h.
const agentDataDirDefault = "/var/lib/badge-agent as root, else $XDG_STATE_HOME/badge-agent, else ~/.local/state/badge-agent"

// agentConfig is everything `badge agent` is configured with.
type agentConfig struct {
	config      string
	checkConfig bool
	servers     string
	trustBundle string
	joinToken   string
	nodeCert    string
	nodeKey     string
	dataDir     string
	socket      string
	logLevel    string
	logFormat   string
	limits      limitFlags
}

// agentSettings is the configuration of `badge agent` from the command
// line, the environment and the config file, checked as a whole.
type agentSettings struct {
	*settings
	c       agentConfig
	fs      *flag.FlagSet
	servers []string
	level   slog.Level
}

// agentFlags defines the flags of `badge agent` on c, with their defaults.
func (e *env) agentFlags(c *agentConfig) *flag.FlagSet {
	*c = agentConfig{logLevel: "info", logFormat: "text"}
	fs := e.flagSet("agent", "--server ADDR[,ADDR...] --trust-bundle FILE [--join-token T | --node-cert FILE --node-key FILE] [flags]")
	fs.StringVar(&c.config, "config", "", "TOML `file` whose keys are these flag names (env BADGE_CONFIG)")
	fs.BoolVar(&c.checkConfig, "check-config", false, "check the command line, environment and config file as a whole, print the settings and where each came from, and exit")
	fs.StringVar(&c.servers, "server", "", "agent listener `addresses` of the badge servers, HOST:PORT comma-separated, tried in turn")
	fs.StringVar(&c.trustBundle, "trust-bundle", "", "PEM `file` of the trust domain's root certificates, to verify the server until the node is attested "+
		"(badge bundle show on the server); then the bundle the server sends is used")
	fs.StringVar(&c.joinToken, "join-token", "", "one-time `token` of 'badge token create --node NAME', to attest a new node; "+
		"sent once, never again, and never logged (prefer BADGE_JOIN_TOKEN or the config file to the command line)")
	fs.StringVar(&c.nodeCert, "node-cert", "", "PEM `file` of this host's certificate, from the PKI of the server's --node-ca, to attest by x509pop")
	fs.StringVar(&c.nodeKey, "node-key", "", "PEM `file` of the key of --node-cert")
	fs.StringVar(&c.dataDir, "data-dir", "", "state `directory`: the node key and node SVID (default "+agentDataDirDefault+"); "+
		"it must be owned by the agent's uid and not writable by group or others, nor any directory above it unless sticky")
	fs.StringVar(&c.socket, "socket", "", "Workload API socket `path` (default "+socketpath.ServerDefaultHelp(socketpath.WorkloadName)+"); "+
		"its directory must be owned by root or the agent's uid and not writable by group or others")
	fs.StringVar(&c.logLevel, "log-level", c.logLevel, "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", c.logFormat, "text or json")
	c.limits.registerWorkload(fs)
	return fs
}

// loadAgent reads the agent's configuration from args, the environment
// and the config file, and checks it as a whole. The error is only
// flag.ErrHelp; the problems are in the result.
func (e *env) loadAgent(args []string) (*agentSettings, error) {
	st := &agentSettings{}
	st.fs = e.agentFlags(&st.c)
	var scratch agentConfig
	var err error
	if st.settings, err = e.load(st.fs, e.agentFlags(&scratch), args, &st.c.config, "check-config"); err != nil {
		return nil, err
	}
	if st.parsed && st.fs.NArg() > 0 {
		st.problems = append(st.problems, problem{msg: fmt.Sprintf("unexpected argument %q", st.fs.Arg(0))})
	}
	st.check(e.getenv)
	return st, nil
}

// check resolves the default paths and adds a problem for every value, or
// combination of values, the agent would refuse.
func (st *agentSettings) check(getenv func(string) string) {
	c := &st.c
	bad := func(key, value, format string, args ...any) {
		st.problems = append(st.problems, problem{key: key, value: value, msg: fmt.Sprintf(format, args...), at: st.at(key)})
	}
	for _, p := range c.limits.check() {
		p.at = st.at(p.key)
		st.problems = append(st.problems, p)
	}
	if c.servers == "" {
		bad("server", "", "is required: the agent listener address of a badge server (badge server --agent-listen)")
	} else if s, err := agent.ParseServers(c.servers); err != nil {
		bad("server", c.servers, "%v", err)
	} else {
		st.servers = s
	}
	if c.trustBundle == "" {
		bad("trust-bundle", "", "is required: the trust domain's root certificates (badge bundle show on the server)")
	}
	switch {
	case c.joinToken != "" && (c.nodeCert != "" || c.nodeKey != ""):
		bad("join-token", "", "excludes --node-cert and --node-key: attest with one or the other")
	case (c.nodeCert == "") != (c.nodeKey == ""):
		bad("node-key", c.nodeKey, "--node-cert and --node-key go together")
	}
	if c.dataDir == "" {
		d, err := stateDir(os.Geteuid(), getenv, "badge-agent")
		if err != nil {
			bad("data-dir", "", "%v", err)
		}
		c.dataDir = d
	}
	if c.socket == "" {
		dir, err := socketpath.ServerDir(os.Geteuid(), getenv)
		if err != nil {
			bad("socket", "", "%v", err)
		} else {
			c.socket = filepath.Join(dir, socketpath.WorkloadName)
		}
	}
	for _, p := range []struct{ key, path string }{{"data-dir", c.dataDir}, {"socket", c.socket}, {"trust-bundle", c.trustBundle},
		{"node-cert", c.nodeCert}, {"node-key", c.nodeKey}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			bad(p.key, p.path, "must be an absolute path")
		}
	}
	if err := st.level.UnmarshalText([]byte(c.logLevel)); err != nil {
		bad("log-level", c.logLevel, "want debug, info, warn or error")
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		bad("log-format", c.logFormat, "want text or json")
	}
}

// values returns the value in force of every setting, by name; the join
// token is not shown.
func (st *agentSettings) values() map[string]string {
	out := map[string]string{}
	st.fs.VisitAll(func(f *flag.Flag) { out[f.Name] = f.Value.String() })
	out["data-dir"], out["socket"] = st.c.dataDir, st.c.socket
	if st.c.joinToken != "" {
		out["join-token"] = "(set, not shown)"
	}
	return out
}

func runAgent(ctx context.Context, e *env, args []string) error {
	st, err := e.loadAgent(args)
	if err != nil {
		return err
	}
	if st.c.checkConfig {
		return st.report(e, "agent", st.fs, st.values(), st.c.config)
	}
	if err := st.settings.err("agent"); err != nil {
		return err
	}
	level := new(slog.LevelVar)
	level.Set(st.level)
	log := newLogger(e, level, st.c.logFormat)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serveAgent(ctx, st, log)
}

// serveAgent runs the agent until ctx is done: it takes the socket first,
// then checks the data dir and the files it is given, serves the Workload
// API (which answers Unavailable until the server has sent the node's
// state), attests the node if it must, and keeps the channel to a server.
func serveAgent(ctx context.Context, st *agentSettings, log *slog.Logger) error {
	c := &st.c
	wl, err := workload.Listen(c.socket)
	if err != nil {
		return fmt.Errorf("workload API socket: %w", err)
	}
	serving := false
	defer func() {
		if !serving {
			wl.Close()
		}
	}()
	if err := prepareDataDir(c.dataDir, log); err != nil {
		return err
	}
	cfg := agent.Config{Servers: st.servers, DataDir: c.dataDir, JoinToken: c.joinToken, Logger: log}
	if cfg.TrustBundle, err = readTrustBundle(c.trustBundle); err != nil {
		return err
	}
	if c.nodeCert != "" {
		if cfg.NodeCert, err = readNodeCert(c.nodeCert, c.nodeKey); err != nil {
			return err
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	src := a.Source()
	wlConns, _, _ := connBudget(false, false, log)
	wsrv, err := workload.New(workload.Config{Source: src, JWT: src, Attestor: attest.New(attest.Config{Logger: log}), Logger: log,
		Limits: c.limits.workload(wlConns, nil), Node: a.Node})
	if err != nil {
		return err
	}
	serving = true
	errc := make(chan error, 2)
	go func() { errc <- wsrv.Serve(wl) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		wsrv.Shutdown(sctx)
	}()
	if err := a.Attest(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	go func() { errc <- a.Run(ctx) }()
	log.Info("badge agent ready", slog.String(logkey.Node, a.Node()),
		slog.String("socket", c.socket), slog.String("data_dir", c.dataDir), slog.String("servers", strings.Join(st.servers, ",")),
		slog.Int("max_workload_conns", wlConns))
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case err := <-errc:
		if err != nil {
			log.Error("agent failed", slog.Any(logkey.Error, err))
		}
		return err
	}
}

// readTrustBundle reads the PEM root certificates of --trust-bundle, a
// file nobody but root and this uid can change.
func readTrustBundle(path string) ([]*x509.Certificate, error) {
	if err := localtrust.CheckPath(path, uint32(os.Geteuid()), localtrust.RootOrUID); err != nil {
		return nil, fmt.Errorf("--trust-bundle %w", err)
	}
	certs, err := pemutil.ReadCertificateBundle(path)
	if err != nil {
		return nil, fmt.Errorf("--trust-bundle %s: %w", path, err)
	}
	return certs, nil
}

// readNodeCert reads the host certificate and key of x509pop; the key
// file must be one nobody but root and this uid can change.
func readNodeCert(certPath, keyPath string) (*tls.Certificate, error) {
	for _, p := range []string{certPath, keyPath} {
		if err := localtrust.CheckPath(p, uint32(os.Geteuid()), localtrust.RootOrUID); err != nil {
			return nil, fmt.Errorf("node certificate %w", err)
		}
	}
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("--node-cert %s, --node-key %s: %w", certPath, keyPath, err)
	}
	return &c, nil
}
