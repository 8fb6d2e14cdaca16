package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	_ "go.step.sm/crypto/kms/pkcs11" // --key-manager pkcs11:... (needs cgo; without it the URI is refused when the server starts)

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/ca/nodeapi"
	"github.com/badge-dev/badge/ca/public"
	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/metrics"
	"github.com/badge-dev/badge/internal/unixsock"
	"github.com/badge-dev/badge/storage"
)

// serverConfig is everything `badge server` is configured with.
type serverConfig struct {
	config          string
	dataDir         string
	storage         string
	etcdCA          string
	etcdCert        string
	etcdKey         string
	etcdCompact     time.Duration
	rootKEK         string
	trustDomain     string
	socket          string
	adminSocket     string
	listen          string
	metricsListen   string
	listenHosts     stringsFlag
	jwtIssuer       string
	svidTTL         time.Duration
	maxSVIDTTL      time.Duration
	jwtTTL          time.Duration
	rootTTL         time.Duration
	rootLead        time.Duration
	intermediateTTL time.Duration
	jwtKeyTTL       time.Duration
	jwtLead         time.Duration
	keyManager      string
	auditRetention  time.Duration
	logLevel        string
	logFormat       string
	limits          limitFlags
	agents          agentFlags
	checkConfig     bool
	upstream        upstreamFlags

	// level is the logger's level, which a reload may change.
	level *slog.LevelVar
	// reload reads the configuration again, on each signal from hup.
	reload func() *serverSettings
	// onReload applies a valid configuration read on SIGHUP to what
	// reload does not know of (the agent listener's node CAs).
	onReload func(*serverSettings)
	hup      chan os.Signal
	// started is the value of every setting the server started with
	// (serverSettings.values).
	started map[string]string
}

func runServer(ctx context.Context, e *env, args []string) error {
	st, err := e.loadServer(args)
	if err != nil {
		return err
	}
	if st.checkConfig {
		return st.report(e)
	}
	if err := st.err(); err != nil {
		return err
	}
	c := st.c
	c.level = new(slog.LevelVar)
	c.level.Set(st.level)
	log := newLogger(e, c.level, c.logFormat)
	c.started = st.values()
	c.reload = func() *serverSettings {
		st, err := e.loadServer(args)
		if err != nil { // -h cannot come back: args were parsed once already
			return &serverSettings{settings: &settings{problems: []problem{{msg: err.Error()}}}}
		}
		return st
	}
	// SIGHUP is taken from here on: before the server is ready it waits,
	// rather than end the process as it would by default.
	c.hup = make(chan os.Signal, 1)
	signal.Notify(c.hup, syscall.SIGHUP)
	defer signal.Stop(c.hup)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serve(ctx, c, st.td, log)
}

// newLogger returns the daemon's logger writing in format (text or json,
// checked by serverSettings) at level, which SIGHUP may change.
func newLogger(e *env, level *slog.LevelVar, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(e.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(e.stderr, opts))
}

// serve runs the daemon until ctx is done. It takes both sockets first,
// so that a server refused for its sockets (in use, or in a directory
// another user controls) has created nothing in its data dir; then it
// checks the data dir, the database and the key directory, and only then
// may the authority create keys.
func serve(ctx context.Context, c serverConfig, td spiffeid.TrustDomain, log *slog.Logger) error {
	errLog := metrics.NewErrorLog(0)
	log = slog.New(errLog.Handler(log.Handler()))
	wl, err := workload.Listen(c.socket)
	if err != nil {
		return fmt.Errorf("workload API socket: %w", err)
	}
	al, err := unixsock.Listen(c.adminSocket, 0o600)
	if err != nil {
		wl.Close()
		return fmt.Errorf("admin socket: %w", err)
	}
	serving := false
	defer func() {
		if !serving {
			wl.Close()
			al.Close()
		}
	}()
	if err := prepareDataDir(c.dataDir, log); err != nil {
		return err
	}
	keyDir := filepath.Join(c.dataDir, "keys")
	if err := localtrust.CheckPrivatePath(keyDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("key directory %w", err) // ca.New checks it too; this is before the database opens
	}
	var rootKEK []byte
	if c.rootKEK != "" {
		if rootKEK, err = ca.ReadRootKEK(c.rootKEK); err != nil {
			return err
		}
	}
	store, sops, err := openStore(ctx, c, td.Name(), log)
	if err != nil {
		return err
	}
	defer store.Close()

	up, err := c.upstream.open()
	if err != nil {
		return err
	}
	auth, err := ca.New(ctx, ca.Config{
		TrustDomain:     td,
		Store:           store,
		KeyDir:          keyDir,
		SVIDTTL:         c.svidTTL,
		MaxSVIDTTL:      c.maxSVIDTTL,
		RootTTL:         c.rootTTL,
		RootPrepareLead: c.rootLead,
		IntermediateTTL: c.intermediateTTL,
		JWTKeyTTL:       c.jwtKeyTTL,
		JWTPrepareLead:  c.jwtLead,
		KeyManager:      c.keyManager,
		ReplicaID:       sops.replica,
		RootKEK:         rootKEK,
		JWTTTL:          c.jwtTTL,
		JWTIssuer:       c.jwtIssuer,
		AuditRetention:  c.auditRetention,
		Upstream:        up,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	defer auth.Close()

	ops := newOps(auth, sops, c.limits.minFreeMiB<<20, errLog)
	wlConns, pubConns, agentConns := connBudget(c.listen != "", c.agents.listen != "", log)
	src := auth.WorkloadSource()
	wsrv, err := workload.New(workload.Config{Source: src, Attestor: attest.New(attest.Config{Logger: log}), JWT: src, Logger: log,
		Limits: c.limits.workload(wlConns, sops.freeSpace), Metrics: ops.metrics})
	if err != nil {
		return err
	}
	asrv, err := admin.New(admin.Config{Authority: auth, Logger: log,
		OnNoSpace: ensureBallast(c.dataDir, ballastSize(c.limits.minFreeMiB<<20), log),
		Ready:     ops.ready, Status: ops.status, NodeConnections: ops.nodeConnections})
	if err != nil {
		return err
	}
	errc := make(chan error, 4)
	serving = true // the servers close the listeners from here on
	go func() { errc <- wsrv.Serve(wl) }()
	go func() { errc <- asrv.Serve(al) }()

	var pub *public.Server
	if c.listen != "" {
		pub, err = startPublic(ctx, c, auth, ops, log, errc, pubConns)
		if err != nil {
			wsrv.Shutdown(ctx)
			asrv.Shutdown(ctx)
			return err
		}
	}
	var msrv *http.Server
	if c.metricsListen != "" {
		if msrv, err = startMetricsListener(c.metricsListen, ops, log, errc); err != nil {
			wsrv.Shutdown(ctx)
			asrv.Shutdown(ctx)
			if pub != nil {
				pub.Shutdown(ctx)
			}
			return err
		}
	}
	var agents *nodeapi.Server
	if c.agents.listen != "" {
		if agents, err = startAgents(ctx, c, auth, ops, log, errc, agentConns); err != nil {
			wsrv.Shutdown(ctx)
			asrv.Shutdown(ctx)
			if pub != nil {
				pub.Shutdown(ctx)
			}
			if msrv != nil {
				msrv.Shutdown(ctx)
			}
			return err
		}
		c.onReload = reloadNodeCAs(agents, c.agents.nodeCAs, log)
	}
	go watchReload(ctx, c, auth, log)
	log.Info("badge server ready", slog.String(logkey.TrustDomain, td.Name()),
		slog.String("socket", c.socket), slog.String("admin_socket", c.adminSocket), slog.String("data_dir", c.dataDir), slog.String("storage", c.storage),
		slog.Int("max_workload_conns", wlConns), slog.Int("max_public_conns", pubConns), slog.Int("max_agent_conns", agentConns))

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case serveErr = <-errc:
		log.Error("server failed", slog.Any(logkey.Error, serveErr))
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wsrv.Shutdown(sctx)
	asrv.Shutdown(sctx)
	if pub != nil {
		pub.Shutdown(sctx)
	}
	if msrv != nil {
		msrv.Shutdown(sctx)
	}
	if agents != nil {
		agents.Shutdown(sctx)
	}
	return serveErr
}

// prepareDataDir creates the data dir (0700) if it is missing and refuses
// one that another user could read the keys from or swap: it must pass
// localtrust.CheckPrivatePath (owned by this uid, not writable by group or others,
// nor any directory above it unless sticky). A data dir that only others
// may read is tightened to 0700 with a warning.
func prepareDataDir(dir string, log *slog.Logger) error {
	if err := localtrust.MkdirPrivate(dir); err != nil {
		if errors.Is(err, localtrust.ErrUntrustedPath) {
			return fmt.Errorf("data directory %w", err)
		}
		return fmt.Errorf("creating data directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("data directory is readable by other users; tightening to 0700", slog.String("path", dir))
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// checkDatabase refuses a database file that another user owns or can
// write, and one that is missing or empty while the key directory holds
// key files: bbolt would make a fresh database of it, and the server a new
// root CA, silently losing every entry and revocation. That is reported
// as a corrupt database.
func checkDatabase(dbPath, keyDir string) error {
	fi, err := os.Stat(dbPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if err := localtrust.CheckPrivatePath(dbPath); err != nil {
			return err
		}
		if fi.Size() > 0 {
			return nil
		}
	}
	keys, err := filepath.Glob(filepath.Join(keyDir, "*.key"))
	if err != nil || len(keys) == 0 {
		return nil
	}
	state := "empty"
	if fi == nil {
		state = "missing"
	}
	return fmt.Errorf("%s: %w: the file is %s, but %s holds CA keys (%d files) of an existing installation; "+
		"restore the database from a backup, or move the data directory away to start afresh",
		dbPath, storage.ErrCorrupt, state, keyDir, len(keys))
}

// startPublic starts the public HTTPS listener (package ca/public) on
// --listen. Its certificate names the --listen-dns hosts, else the host of
// --listen (unless it is a wildcard address) and of --jwt-issuer.
func startPublic(ctx context.Context, c serverConfig, auth *ca.Authority, o *ops, log *slog.Logger, errc chan<- error, maxConns int) (*public.Server, error) {
	hosts := []string(c.listenHosts)
	if len(hosts) == 0 {
		if h, _, err := net.SplitHostPort(c.listen); err == nil && h != "" {
			if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
				hosts = append(hosts, h)
			}
		}
		if u, err := url.Parse(c.jwtIssuer); err == nil && u.Hostname() != "" {
			hosts = append(hosts, u.Hostname())
		}
	}
	// A cached JWKS must hold the next key before it signs.
	maxAge := min(public.DefaultJWKSMaxAge, auth.JWTPrepareLead()/2)
	pub, err := public.New(ctx, public.Config{Authority: auth, Clients: auth, Hosts: hosts, Logger: log, JWKSMaxAge: maxAge,
		MaxConns: maxConns, MaxConnsPerAddr: c.limits.publicPerAddr(), HandshakeTimeout: c.limits.handshake,
		Readyz: http.HandlerFunc(o.readiness.Readyz), Metrics: o.metrics.Handler()})
	if err != nil {
		return nil, err
	}
	pl, err := net.Listen("tcp", c.listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", c.listen, err)
	}
	go func() {
		if err := pub.Serve(pl); err != nil {
			errc <- err
		}
	}()
	log.Info("public listener ready", slog.String("address", "https://"+pl.Addr().String()), slog.Any("hosts", hosts),
		slog.String("jwt_issuer", c.jwtIssuer))
	return pub, nil
}
