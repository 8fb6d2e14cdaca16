package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/socketpath"
	"github.com/badge-dev/badge/storage/etcd"
)

// serverSettings is the configuration of `badge server` read from the
// command line, the environment and the config file, checked as a whole:
// every problem of every setting, each naming the key and where its value
// came from (for the file, its line).
type serverSettings struct {
	*settings
	c           serverConfig
	fs          *flag.FlagSet
	td          spiffeid.TrustDomain
	level       slog.Level
	checkConfig bool
}

// serverFlags defines the flags of `badge server` on c, with their
// defaults.
func (e *env) serverFlags(c *serverConfig) *flag.FlagSet {
	*c = serverConfig{
		trustDomain: "example.org", svidTTL: ca.DefaultSVIDTTL, maxSVIDTTL: ca.DefaultMaxSVIDTTL, jwtTTL: ca.DefaultJWTTTL,
		rootTTL: ca.DefaultRootTTL, intermediateTTL: ca.DefaultIntermediateTTL, jwtKeyTTL: ca.DefaultJWTKeyTTL, auditRetention: ca.DefaultAuditRetention,
		logLevel: "info", logFormat: "text", storage: storageDefault, etcdCompact: etcd.DefaultCompactInterval,
	}
	fs := e.flagSet("server", "[flags]")
	fs.StringVar(&c.config, "config", "", "TOML `file` whose keys are these flag names (env BADGE_CONFIG); SIGHUP reads it again")
	fs.BoolVar(&c.checkConfig, "check-config", false, "check the command line, environment and config file as a whole, print the settings and where each came from, and exit")
	fs.StringVar(&c.dataDir, "data-dir", "", "state `directory` (default "+dataDirDefault+"); "+
		"it and its files must be owned by the server's uid and not writable by group or others, nor any directory above it unless sticky")
	fs.StringVar(&c.storage, "storage", c.storage, "where the state is kept: bbolt (a file in the data directory) or etcd://HOST:PORT[,HOST:PORT...] "+
		"(an etcd cluster, under /badge/TRUST_DOMAIN/; the data directory then keeps this server's key files and replica id)")
	fs.StringVar(&c.etcdCA, "etcd-ca", "", "PEM `file` of the CA certificates that verify the etcd servers; set, the connection uses TLS (default: plain text)")
	fs.StringVar(&c.etcdCert, "etcd-cert", "", "PEM `file` of the client certificate (chain) badge presents to etcd; with --etcd-key")
	fs.StringVar(&c.etcdKey, "etcd-key", "", "PEM `file` of the private key of --etcd-cert")
	fs.Var(intervalFlag{&c.etcdCompact}, "etcd-compact-interval", "how often the server that leads compacts etcd's history, "+
		"to the revision of one interval before (0: never, for a cluster compacted by other means; else at least "+minEtcdCompact.String()+"; ignored with bbolt)")
	fs.StringVar(&c.rootKEK, "root-kek", "", "`file` of 32 random bytes (mode 0600) that seals the shared root key in etcd; "+
		"the same file on every server of an etcd store (required with --storage etcd://, unless --key-manager holds the root)")
	fs.StringVar(&c.trustDomain, "trust-domain", c.trustDomain, "SPIFFE trust `domain` of this authority")
	fs.StringVar(&c.socket, "socket", "", "Workload API socket `path` (default "+socketpath.ServerDefaultHelp(socketpath.WorkloadName)+"); "+
		"its directory must be owned by root or the server's uid and not writable by group or others, nor any directory above it unless sticky")
	fs.StringVar(&c.adminSocket, "admin-socket", "", "admin API socket `path`, for root and the server's uid only (default "+socketpath.ServerDefaultHelp(socketpath.AdminName)+")")
	fs.StringVar(&c.listen, "listen", "", "public HTTPS `address`: JWKS, OIDC discovery, introspection, token endpoint, /healthz, /readyz, /metrics (nothing listens on TCP unless set)")
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "plain HTTP `address` for Prometheus metrics, /healthz and /readyz, e.g. 127.0.0.1:9090 (off unless set; --listen serves them too)")
	fs.Var(&c.listenHosts, "listen-dns", "DNS `name` or IP address for the public listener's certificate; repeatable (default: the --listen and --jwt-issuer hosts)")
	fs.StringVar(&c.jwtIssuer, "jwt-issuer", "", "public https `URL` of this server: the iss of JWT-SVIDs and the OIDC discovery issuer (default: no iss, no discovery)")
	fs.Var(durationFlag{&c.svidTTL}, "svid-ttl", "lifetime of an X.509-SVID whose entry sets none; SIGHUP may change it")
	fs.Var(durationFlag{&c.maxSVIDTTL}, "max-svid-ttl", "upper bound of every SVID lifetime; raise it explicitly to allow longer")
	fs.Var(durationFlag{&c.jwtTTL}, "jwt-ttl", "lifetime of a JWT-SVID (at most 5m); SIGHUP may change it")
	fs.Var(durationFlag{&c.rootTTL}, "root-ttl", "lifetime of a root CA from when it signs; it signs for root-ttl minus max(root-ttl/3, intermediate-ttl), "+
		"then the next root takes over, and it stays in the bundle until its last intermediate expires")
	fs.Var(durationFlag{&c.rootLead}, "root-prepare-lead", "how long the next root is in the trust bundle before it signs "+
		"(default 30 days, or half the time a root signs if shorter)")
	fs.Var(durationFlag{&c.intermediateTTL}, "intermediate-ttl", "lifetime of each intermediate CA; replaced at half its life by a key generated ahead")
	fs.Var(durationFlag{&c.jwtKeyTTL}, "jwt-key-ttl", "how long a JWT signing key signs before the next one replaces it; it stays in the JWKS until its last token expires")
	fs.Var(durationFlag{&c.jwtLead}, "jwt-prepare-lead", "how long the next JWT key is in the JWKS before it signs: the time verifiers have to refresh it "+
		"(at least jwt-ttl, at most jwt-key-ttl; default 10m)")
	fs.StringVar(&c.keyManager, "key-manager", "", "`URI` of the key manager that makes and holds the CA and JWT private keys, "+
		"e.g. pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge?pin-source=/etc/badge/pin (default: files in the data dir); "+
		"with -tags cloudkms also awskms:region=R, cloudkms:key-ring=projects/P/locations/L/keyRings/R, azurekms:vault=V "+
		"(credentials from the environment); chosen with the data dir")
	fs.Var(durationFlag{&c.auditRetention}, "audit-retention", "how long audit records are kept; older ones are pruned hourly and the trail still verifies")
	fs.StringVar(&c.logLevel, "log-level", c.logLevel, "debug, info, warn or error; SIGHUP may change it")
	fs.StringVar(&c.logFormat, "log-format", c.logFormat, "text or json")
	c.limits.register(fs)
	c.agents.register(fs)
	c.upstream.register(fs)
	return fs
}

// loadServer reads the server's configuration from args, the environment
// and the config file, and checks it as a whole. The error is only
// flag.ErrHelp; the problems are in the result.
func (e *env) loadServer(args []string) (*serverSettings, error) {
	st := &serverSettings{}
	st.fs = e.serverFlags(&st.c)
	var scratch serverConfig
	var err error
	if st.settings, err = e.load(st.fs, e.serverFlags(&scratch), args, &st.c.config, "check-config"); err != nil {
		return nil, err
	}
	st.checkConfig = st.c.checkConfig
	if st.parsed && st.fs.NArg() > 0 {
		st.problems = append(st.problems, problem{msg: fmt.Sprintf("unexpected argument %q", st.fs.Arg(0))})
	}
	st.check(e.getenv)
	return st, nil
}

// check resolves the default paths and adds a problem for every value,
// or combination of values, the server would refuse, each attributed to
// the setting and where its value came from.
func (st *serverSettings) check(getenv func(string) string) {
	c := &st.c
	bad := func(key, value, format string, args ...any) {
		if r, ok := st.raw[key]; ok && value != "" {
			value = r // as the operator wrote it: 10m, not 10m0s
		}
		st.problems = append(st.problems, problem{key: key, value: value, msg: fmt.Sprintf(format, args...), at: st.at(key)})
	}
	// from names another setting in a message: its value and origin.
	from := func(key string) string {
		v := st.fs.Lookup(key).Value.String()
		if r, ok := st.raw[key]; ok {
			v = r
		}
		if at := st.at(key).String(); at != "" {
			return fmt.Sprintf("%s = %s (%s)", key, v, at)
		}
		return fmt.Sprintf("%s = %s (default)", key, v)
	}
	for _, p := range append(append(c.limits.check(), c.agents.check()...), c.upstream.check()...) {
		p.at = st.at(p.key)
		st.problems = append(st.problems, p)
	}
	if c.dataDir == "" {
		d, err := defaultDataDir(os.Geteuid(), getenv)
		if err != nil {
			bad("data-dir", "", "%v", err)
		}
		c.dataDir = d
	}
	if c.socket == "" || c.adminSocket == "" {
		dir, err := socketpath.ServerDir(os.Geteuid(), getenv)
		switch {
		case err != nil && c.socket == "":
			bad("socket", "", "%v", err)
		case err != nil:
			bad("admin-socket", "", "%v", err)
		}
		if c.socket == "" && dir != "" {
			c.socket = filepath.Join(dir, socketpath.WorkloadName)
		}
		if c.adminSocket == "" && dir != "" {
			c.adminSocket = filepath.Join(dir, socketpath.AdminName)
		}
	}
	for _, p := range []struct{ key, path string }{{"data-dir", c.dataDir}, {"socket", c.socket}, {"admin-socket", c.adminSocket}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			bad(p.key, p.path, "must be an absolute path")
		}
	}
	if c.socket != "" && filepath.Clean(c.socket) == filepath.Clean(c.adminSocket) {
		bad("admin-socket", c.adminSocket, "is the Workload API socket too (%s): the two need their own paths", from("socket"))
	}
	st.checkStorage(bad, from)
	if err := st.level.UnmarshalText([]byte(c.logLevel)); err != nil {
		bad("log-level", c.logLevel, "want debug, info, warn or error")
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		bad("log-format", c.logFormat, "want text or json")
	}
	td, err := spiffeid.TrustDomainFromString(c.trustDomain)
	if err != nil {
		bad("trust-domain", c.trustDomain, "%v", err)
	}
	st.td = td
	if err := ca.ValidateJWTIssuer(c.jwtIssuer); err != nil {
		bad("jwt-issuer", c.jwtIssuer, "%v", err)
	}
	for _, l := range []struct{ key, addr string }{{"listen", c.listen}, {"metrics-listen", c.metricsListen}} {
		if l.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			bad(l.key, l.addr, "want HOST:PORT or :PORT (%v)", err)
		}
	}
	// The lifetimes, as ca.Config checks them.
	d := func(v time.Duration) string { return v.String() }
	switch {
	case c.maxSVIDTTL < ca.MinSVIDTTL:
		bad("max-svid-ttl", d(c.maxSVIDTTL), "is below the minimum SVID lifetime %s", ca.MinSVIDTTL)
	case c.svidTTL > c.maxSVIDTTL:
		bad("svid-ttl", d(c.svidTTL), "exceeds the maximum SVID lifetime %s; raise max-svid-ttl explicitly to allow longer", from("max-svid-ttl"))
	}
	if c.svidTTL < ca.MinSVIDTTL {
		bad("svid-ttl", d(c.svidTTL), "is below the minimum SVID lifetime %s", ca.MinSVIDTTL)
	}
	if c.jwtTTL < ca.MinSVIDTTL || c.jwtTTL > ca.DefaultJWTTTL {
		bad("jwt-ttl", d(c.jwtTTL), "must be between %s and %s", ca.MinSVIDTTL, ca.DefaultJWTTTL)
	}
	if c.intermediateTTL < 4*c.maxSVIDTTL {
		bad("intermediate-ttl", d(c.intermediateTTL), "must be at least four times %s", from("max-svid-ttl"))
	}
	if c.keyManager != "" {
		if _, err := ca.CheckKeyManager(c.keyManager); err != nil {
			// The value may hold a PIN: the problem names what is wrong
			// without it.
			st.problems = append(st.problems, problem{key: "key-manager", msg: err.Error(), at: st.at("key-manager")})
		}
	}
	// The key schedule, as ca.Config checks it.
	for _, k := range []struct {
		key string
		v   time.Duration
	}{{"root-ttl", c.rootTTL}, {"root-prepare-lead", c.rootLead}, {"jwt-key-ttl", c.jwtKeyTTL}, {"jwt-prepare-lead", c.jwtLead}} {
		if k.v > ca.MaxKeyTTL {
			bad(k.key, d(k.v), "exceeds the maximum %s", ca.MaxKeyTTL)
		}
	}
	if c.rootTTL <= c.intermediateTTL {
		bad("root-ttl", d(c.rootTTL), "must be longer than %s: a root outlives the intermediates it signs", from("intermediate-ttl"))
	} else if signing := c.rootTTL - max(c.rootTTL/3, c.intermediateTTL); c.rootLead > signing {
		bad("root-prepare-lead", d(c.rootLead), "exceeds the %s a root signs (root-ttl minus max(root-ttl/3, intermediate-ttl))", signing)
	}
	jwtLead := c.jwtLead
	if jwtLead == 0 {
		jwtLead = min(ca.DefaultJWTPrepareLead, c.jwtKeyTTL)
	}
	switch {
	case c.jwtKeyTTL < c.jwtTTL:
		bad("jwt-key-ttl", d(c.jwtKeyTTL), "must be at least %s", from("jwt-ttl"))
	case jwtLead < c.jwtTTL:
		bad("jwt-prepare-lead", d(c.jwtLead), "must be at least %s, so that a new key is published before any token it signs", from("jwt-ttl"))
	case jwtLead > c.jwtKeyTTL:
		bad("jwt-prepare-lead", d(c.jwtLead), "exceeds %s", from("jwt-key-ttl"))
	}
}

// minEtcdCompact is the shortest --etcd-compact-interval: a watch or
// read that far behind would find its history gone.
const minEtcdCompact = time.Minute

// checkStorage checks --storage and the etcd connection's files, which it
// reads, so that --check-config finds a missing or unreadable one.
func (st *serverSettings) checkStorage(bad func(key, value, format string, args ...any), from func(string) string) {
	c := &st.c
	if c.etcdCompact != 0 && c.etcdCompact < minEtcdCompact {
		bad("etcd-compact-interval", c.etcdCompact.String(), "want 0 (never compact) or at least %s", minEtcdCompact)
	}
	if c.storage == storageDefault || c.storage == "" {
		for _, k := range []struct{ key, v string }{{"etcd-ca", c.etcdCA}, {"etcd-cert", c.etcdCert}, {"etcd-key", c.etcdKey}, {"root-kek", c.rootKEK}} {
			if k.v != "" {
				bad(k.key, k.v, "applies to an etcd store only, not %s", from("storage"))
			}
		}
		return
	}
	if _, err := etcd.ParseURL(c.storage); err != nil {
		bad("storage", c.storage, "want bbolt or etcd://HOST:PORT[,HOST:PORT...]: %v", err)
		return
	}
	switch {
	case c.etcdCert != "" && c.etcdKey == "":
		bad("etcd-cert", c.etcdCert, "needs --etcd-key, the certificate's private key")
		return
	case c.etcdKey != "" && c.etcdCert == "":
		bad("etcd-key", c.etcdKey, "needs --etcd-cert, the key's certificate")
		return
	}
	if c.etcdCA != "" || c.etcdCert != "" {
		if _, err := etcd.TLSConfig(c.etcdCA, c.etcdCert, c.etcdKey); err != nil {
			key, v := "etcd-cert", c.etcdCert
			if c.etcdCA != "" && strings.Contains(err.Error(), "etcd CA") {
				key, v = "etcd-ca", c.etcdCA
			}
			bad(key, v, "%v", err)
			return
		}
	}
	// The shared root: sealed under --root-kek, or in the key manager.
	switch {
	case c.rootKEK != "" && c.keyManager != "":
		bad("root-kek", c.rootKEK, "with %s the root lives in the key manager every server reaches; drop one", from("key-manager"))
	case c.rootKEK == "" && c.keyManager == "":
		bad("storage", c.storage, "needs --root-kek, the file of the key that seals the root every server shares "+
			"(head -c 32 /dev/urandom > FILE; chmod 600; the same file on every server), or --key-manager")
	case c.rootKEK != "":
		if _, err := ca.ReadRootKEK(c.rootKEK); err != nil {
			bad("root-kek", c.rootKEK, "%v", err)
		}
	}
}

// err is the configuration's first problem as a usage error (with a
// pointer to --check-config when there are more), or nil.
func (st *serverSettings) err() error { return st.settings.err("server") }

// err is the first problem of the configuration of `badge cmd` as a usage
// error (with a pointer to --check-config when there are more), or nil.
func (s *settings) err(cmd string) error {
	switch len(s.problems) {
	case 0:
		return nil
	case 1:
		return usageError{s.problems[0]}
	}
	more := "1 more problem"
	if len(s.problems) > 2 {
		more = fmt.Sprintf("%d more problems", len(s.problems)-1)
	}
	return usagef("%v (and %s: 'badge %s --check-config' with the same flags, environment and config file lists them all)",
		s.problems[0], more, cmd)
}

// values returns the value in force of every setting, by name: the flag's
// value, or for the default paths the path resolved.
func (st *serverSettings) values() map[string]string {
	out := map[string]string{}
	st.fs.VisitAll(func(f *flag.Flag) { out[f.Name] = f.Value.String() })
	out["data-dir"], out["socket"], out["admin-socket"] = st.c.dataDir, st.c.socket, st.c.adminSocket
	if v := out["key-manager"]; v != "" {
		// The query holds the PIN (pin-value), and a cloud credential
		// (refused) would be an attribute: never printed or logged.
		out["key-manager"] = ca.RedactKeyManager(v)
		if _, query, _ := strings.Cut(v, "?"); query != "" {
			out["key-manager"] += "?(redacted)"
		}
	}
	if st.c.storage == storageDefault || st.c.storage == "" {
		out["etcd-compact-interval"] += " (ignored: bbolt)"
	}
	delete(out, "check-config")
	return out
}

// report is --check-config: it prints every problem on stderr and fails
// with a usage error, or prints every setting, its value and where it came
// from on stdout.
func (st *serverSettings) report(e *env) error {
	return st.settings.report(e, "server", st.fs, st.values(), st.c.config)
}

// report is --check-config of `badge cmd`, whose flags are fs, the values
// in force vals (by flag name) and the config file config: it prints every
// problem on stderr and fails with a usage error, or prints every setting,
// its value and where it came from on stdout.
func (s *settings) report(e *env, cmd string, fs *flag.FlagSet, vals map[string]string, config string) error {
	if len(s.problems) > 0 {
		for _, p := range s.problems {
			fmt.Fprintln(e.stderr, p.Error())
		}
		n := "1 problem"
		if len(s.problems) > 1 {
			n = fmt.Sprintf("%d problems", len(s.problems))
		}
		return usagef("the configuration has %s (above); the %s would refuse to start", n, cmd)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SETTING\tVALUE\tFROM")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "check-config" {
			return
		}
		at := s.at(f.Name).String()
		if at == "" {
			at = "default"
		}
		v := vals[f.Name]
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, v, at)
	})
	tw.Flush()
	where := "no config file"
	if config != "" {
		where = config
	}
	fmt.Fprintf(e.stdout, "configuration OK (%s)\n", strings.TrimSpace(where))
	return nil
}
