// Package agent is `badge agent`: it proves to a badge server which node it
// runs on, keeps a mutual-TLS channel to one of its servers, and serves the
// Workload API of its host with the same handler as the server
// (ca/workload), from what the server streams to it.
//
// Node attestation. With a one-time join token the agent connects without
// a client certificate; with x509pop its TLS client certificate is the
// node's host certificate (--node-cert, --node-key), and the handshake is
// the proof of possession. Either way it sends a CSR for a fresh node key
// and receives its node SVID spiffe://TD/badge/node/NAME. The key, the node
// SVID and the trust bundle are kept in one file of the data dir (mode
// 0600, written atomically; the data dir must be the agent's and not
// writable by another user), so a restarted agent with an unexpired node
// SVID reconnects without new proof. An expired one is replaced by
// attesting again: by itself with x509pop; with a join token only with a
// new token, since a token is sent once, never again after it succeeded
// (the data dir keeps its hash), and never logged.
//
// The channel. Every connection verifies the server in
// tls.Config.VerifyConnection: its certificate must chain to the current
// trust bundle (the one Sync sends; --trust-bundle only bootstraps) and
// name spiffe://TD/badge/server. The client certificate is the current
// node SVID, read on each handshake (GetClientCertificate), so a renewal
// applies to every new connection. The node SVID is renewed with a new
// key at half its life. The agent connects to the first of its servers
// that answers, and when the channel breaks it tries them in turn, with
// exponential backoff and jitter after each round in which none answered.
//
// Serving. The Sync stream carries the node's whole state on every change;
// each update becomes an immutable State published atomically, whose Done
// channel closes when the next one replaces it. Source serves the
// Workload API from it with the policy of the server's own socket (see
// source.go). While no server answers, workloads keep the SVIDs they hold
// until those expire, and new callers are told that no server answers.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/keypool"
	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/nodeproto"
)

// Defaults of Config.
const (
	DefaultMinBackoff  = 250 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	DefaultDialTimeout = 10 * time.Second
)

// Keepalive pings on the channel to the server.
const (
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
)

// maxMsgSize bounds a message from the server: a Sync update carries every
// entry scoped to the node.
const maxMsgSize = 64 << 20

// Config configures an Agent.
type Config struct {
	// Servers are the addresses (HOST:PORT) of the servers' agent
	// listeners, tried in order. Required.
	Servers []string
	// TrustBundle are the trust domain's root certificates, to verify the
	// server until the node is attested. Required.
	TrustBundle []*x509.Certificate
	// DataDir keeps the node identity. Required; it is created 0700 if
	// missing and must pass localtrust.CheckPrivatePath.
	DataDir string
	// JoinToken is a one-time join token; NodeCert, a host certificate
	// with its key, attests by x509pop. At most one of them. Neither:
	// the data dir must hold an unexpired node SVID.
	JoinToken string
	NodeCert  *tls.Certificate
	// Logger receives operational logs. Nil discards them.
	Logger *slog.Logger
	// Time returns the current time; nil means time.Now. It decides when
	// the node SVID and workload SVIDs expire and are due for renewal;
	// TLS handshakes verify certificates on the real clock.
	Time func() time.Time
	// MinBackoff and MaxBackoff bound the wait between rounds of
	// connection attempts. Zero: the defaults.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds one connection attempt, until the server has sent
	// its first answer, and every call to a server. Zero:
	// DefaultDialTimeout.
	DialTimeout time.Duration
}

// Errors that end the agent: it cannot prove which node it is.
var (
	// ErrNeedJoinToken: the node attested with a join token and its node
	// SVID expired (or the server refused it); only a new token brings it
	// back.
	ErrNeedJoinToken = errors.New("a new join token is needed")
	// ErrNoProof: no node identity in the data dir and no proof given.
	ErrNoProof = errors.New("no node identity and no proof to attest with")
	// ErrAttestationRefused: the server refused the proof.
	ErrAttestationRefused = errors.New("node attestation refused")
)

// errNoServer is what callers get while no server answers: Unavailable,
// logged by the Workload API handler as a warning at most once a
// LogInterval, since it is the expected state of an agent that is
// starting or failing over.
var errNoServer error = &workload.UnavailableError{
	Reason: "the badge agent has no server yet: it is not connected to any badge server, and keeps retrying"}

// Agent is a badge agent. Attest, then Run; Source serves the Workload API.
type Agent struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	id    atomic.Pointer[identity]
	roots atomic.Pointer[[]*x509.Certificate]
	td    atomic.Pointer[spiffeid.TrustDomain] // the server's, once known

	idMu sync.Mutex // serializes changes of id

	mu    sync.Mutex
	state *State // the latest; replaced under mu, read through cur
	cur   atomic.Pointer[State]

	conn atomic.Pointer[link] // the live channel, nil while none

	kick chan struct{} // wakes the renewal loop
	// keys are workload keys made ahead of demand while Run runs.
	keys *keypool.Pool[workloadKey]
	// issuers are the certificates after the leaf of the last workload
	// SVID the server signed.
	issuers issuerCache
}

// link is a live channel to one server.
type link struct {
	addr   string
	client nodeproto.NodeClient
}

// New checks cfg, prepares the data dir and reads the node identity it
// holds. It makes no connection.
func New(cfg Config) (*Agent, error) {
	switch {
	case len(cfg.Servers) == 0:
		return nil, errors.New("agent: Config.Servers is required")
	case len(cfg.TrustBundle) == 0:
		return nil, errors.New("agent: Config.TrustBundle is required")
	case cfg.DataDir == "":
		return nil, errors.New("agent: Config.DataDir is required")
	case cfg.JoinToken != "" && cfg.NodeCert != nil:
		return nil, errors.New("agent: a join token and a node certificate exclude each other")
	}
	if cfg.NodeCert != nil && len(cfg.NodeCert.Certificate) == 0 {
		return nil, errors.New("agent: Config.NodeCert has no certificate")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, now: cfg.Time, kick: make(chan struct{}, 1), keys: keypool.New(workloadKeyPoolSize, newWorkloadKey)}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if err := localtrust.MkdirPrivate(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("data directory %w", err)
	}
	id, err := loadIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	roots := cfg.TrustBundle
	if id != nil {
		roots = id.bundle
		a.id.Store(id)
		td := id.id.TrustDomain()
		a.td.Store(&td)
	} else if td, ok := bundleTrustDomain(roots); ok {
		a.td.Store(&td)
	}
	a.roots.Store(&roots)
	a.state = emptyState()
	a.cur.Store(a.state)
	return a, nil
}

// bundleTrustDomain returns the trust domain a root certificate names in
// its URI SAN (badge's roots name spiffe://TD).
func bundleTrustDomain(roots []*x509.Certificate) (spiffeid.TrustDomain, bool) {
	for _, r := range roots {
		for _, u := range r.URIs {
			if td, err := spiffeid.TrustDomainFromURI(u); err == nil && u.Path == "" {
				return td, true
			}
		}
	}
	return spiffeid.TrustDomain{}, false
}

// State returns the latest state the server sent (an empty, unsynced one
// before the first).
func (a *Agent) State() *State { return a.cur.Load() }

// Node returns the node's name, once attested.
func (a *Agent) Node() string {
	if id := a.id.Load(); id != nil {
		return id.node
	}
	return ""
}

// NodeSVID returns the current node SVID's leaf, nil before attestation.
func (a *Agent) NodeSVID() *x509.Certificate {
	if id := a.id.Load(); id != nil {
		return id.chain[0]
	}
	return nil
}

// Attest makes sure the agent has a node SVID: the one of the data dir if
// it is unexpired, else one from the server, by x509pop or with the join
// token (only if that token was never used by this data dir). It tries
// the servers in turn until one answers, and fails at once with
// ErrNoProof, ErrNeedJoinToken or ErrAttestationRefused.
func (a *Agent) Attest(ctx context.Context) error {
	if id := a.id.Load(); id != nil && a.now().Before(id.notAfter()) {
		if a.cfg.JoinToken != "" && tokenHash(a.cfg.JoinToken) != id.tokenHash {
			a.log.Info("the node SVID in the data dir is valid: the join token is kept unused", slog.String(logkey.Node, id.node))
		}
		a.log.Info("node SVID loaded", slog.String(logkey.Node, id.node), slog.String(logkey.SPIFFEID, id.id.String()),
			slog.Time("expires", id.notAfter()))
		return nil
	}
	return a.reattest(ctx, "")
}

// reattest attests the node again, why being the reason the current node
// SVID cannot serve ("" for an expired or missing one).
func (a *Agent) reattest(ctx context.Context, why string) error {
	old := a.id.Load()
	name := ""
	if old != nil {
		name = old.node
		if why == "" {
			why = "its node SVID expired at " + old.notAfter().UTC().Format(time.RFC3339)
		}
	}
	switch {
	case a.cfg.NodeCert != nil:
	case a.cfg.JoinToken != "" && (old == nil || tokenHash(a.cfg.JoinToken) != old.tokenHash):
	case old != nil:
		return fmt.Errorf("%w: node %s: %s; make one with 'badge token create --node %s' and start the agent with it (--join-token)",
			ErrNeedJoinToken, name, why, name)
	default:
		return fmt.Errorf("%w in %s: give --join-token, or --node-cert and --node-key", ErrNoProof, a.cfg.DataDir)
	}
	backoff := a.cfg.MinBackoff
	for i := 0; ; i++ {
		addr := a.cfg.Servers[i%len(a.cfg.Servers)]
		err := refusedInHandshake(a.attestOnce(ctx, addr))
		if err == nil {
			return nil
		}
		if c := status.Code(err); c == codes.PermissionDenied || c == codes.InvalidArgument || c == codes.Unauthenticated ||
			errors.Is(err, ErrAttestationRefused) {
			how := "host certificate"
			if a.cfg.NodeCert == nil {
				how = "join token"
			}
			return fmt.Errorf("%w: server %s refused the %s: %s", ErrAttestationRefused, addr, how, status.Convert(err).Message())
		}
		a.log.Warn("node attestation failed; trying the next server", slog.String("server", addr), slog.Any(logkey.Error, err))
		if (i+1)%len(a.cfg.Servers) == 0 {
			if err := sleep(ctx, jitter(backoff)); err != nil {
				return err
			}
			backoff = min(2*backoff, a.cfg.MaxBackoff)
		}
	}
}

// attestOnce attests the node to the server at addr.
func (a *Agent) attestOnce(ctx context.Context, addr string) error {
	by := byX509PoP
	getCert := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.cfg.NodeCert, nil }
	if a.cfg.NodeCert == nil {
		by = byJoinToken
		getCert = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	}
	conn, err := a.dial(addr, getCert)
	if err != nil {
		return err
	}
	defer conn.Close()
	key, csr, err := newNodeKey()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	resp, err := nodeproto.NewNodeClient(conn).Attest(ctx, &nodeproto.AttestRequest{JoinToken: a.cfg.JoinToken, Csr: csr})
	if err != nil {
		return err
	}
	id, err := newIdentity(resp.GetNodeName(), by, key, resp.GetSvid(), resp.GetBundle(), a.now())
	if err != nil {
		// The server answered, but not with a node SVID for our key: a
		// token spent on it is gone, so this is not retried.
		return fmt.Errorf("%w: server %s sent an unusable node SVID: %v", ErrAttestationRefused, addr, err)
	}
	if by == byJoinToken {
		id.tokenHash = tokenHash(a.cfg.JoinToken)
	}
	a.idMu.Lock()
	err = a.setIdentity(id)
	a.idMu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: saving the node identity: %v", ErrAttestationRefused, err)
	}
	a.log.Info("node attested", slog.String(logkey.Node, id.node), slog.String("server", addr), slog.String("method", by),
		slog.String(logkey.SPIFFEID, id.id.String()), slog.Time("expires", id.notAfter()))
	return nil
}

// setIdentity persists id and makes it current; the caller holds idMu.
func (a *Agent) setIdentity(id *identity) error {
	if err := id.save(a.cfg.DataDir); err != nil {
		return err
	}
	a.id.Store(id)
	td := id.id.TrustDomain()
	a.td.Store(&td)
	if !a.State().Synced() {
		roots := id.bundle
		a.roots.Store(&roots)
	}
	return nil
}

// dial returns a connection to addr presenting the certificate of
// getCert. Connections are made lazily, on the first call.
func (a *Agent) dial(addr string, getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) (*grpc.ClientConn, error) {
	tc := &tls.Config{
		MinVersion:           tls.VersionTLS13,
		InsecureSkipVerify:   true, // VerifyConnection verifies the chain and the SPIFFE ID
		VerifyConnection:     a.verifyServer,
		GetClientCertificate: getCert,
	}
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize)),
		// A server that vanished without closing the connection (a host
		// down, a partition) is noticed within keepaliveTime+keepaliveTimeout
		// and the agent fails over; the agent listener permits pings every
		// 10 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}))
}

// verifyServer accepts a server whose certificate chains to the current
// trust bundle and names spiffe://TD/badge/server.
func (a *Agent) verifyServer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server presented no certificate")
	}
	if err := verifyChain(cs.PeerCertificates, *a.roots.Load(), time.Now(), x509.ExtKeyUsageServerAuth); err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	want := serverPath
	if td := a.td.Load(); td != nil {
		want = td.IDString() + serverPath
		if id.String() != want {
			return fmt.Errorf("server certificate names %s, want %s", id, want)
		}
	} else if id.Path() != serverPath {
		return fmt.Errorf("server certificate names %s, want the path %s", id, serverPath)
	}
	return nil
}

// Run keeps the channel to a server open, applies what Sync sends and
// renews the node SVID, until ctx is done (nil) or the server refuses the
// node and the agent cannot attest again (an error). Attest must have
// succeeded first.
func (a *Agent) Run(ctx context.Context) error {
	if a.id.Load() == nil {
		return errors.New("agent: Run before Attest")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopKeys := a.keys.Start()
	defer stopKeys()
	go a.renewLoop(ctx)
	backoff := a.cfg.MinBackoff
	failed := 0 // attempts since the last live channel
	i := 0
	for ctx.Err() == nil {
		if id := a.id.Load(); !a.now().Before(id.notAfter()) {
			if err := a.reattest(ctx, ""); err != nil {
				return err
			}
		}
		addr := a.cfg.Servers[i]
		live, err := a.session(ctx, addr)
		err = refusedInHandshake(err)
		if ctx.Err() != nil {
			return nil
		}
		if c := status.Code(err); c == codes.PermissionDenied || c == codes.Unauthenticated {
			a.log.Error("the server refused this node (evicted, or its node SVID revoked)", slog.String("server", addr),
				slog.String(logkey.Node, a.Node()), slog.Any(logkey.Error, err))
			if err := a.reattest(ctx, "the server refused it: "+status.Convert(err).Message()); err != nil {
				return err
			}
			continue
		}
		next := a.cfg.Servers[(i+1)%len(a.cfg.Servers)]
		if live {
			a.log.Warn("lost the channel to the server; reconnecting", slog.String("server", addr), slog.Any(logkey.Error, err))
			failed, backoff = 0, a.cfg.MinBackoff
			continue // the same server first: it may only have restarted
		}
		failed++
		if next == addr {
			a.log.Warn("server unreachable; retrying", slog.String("server", addr), slog.Any(logkey.Error, err))
		} else {
			a.log.Warn("server unreachable; failing over", slog.String("server", addr), slog.String("next", next), slog.Any(logkey.Error, err))
		}
		i = (i + 1) % len(a.cfg.Servers)
		if failed%len(a.cfg.Servers) == 0 {
			if err := sleep(ctx, jitter(backoff)); err != nil {
				return nil
			}
			backoff = min(2*backoff, a.cfg.MaxBackoff)
		}
	}
	return nil
}

// session opens the channel to addr and applies Sync updates until the
// stream ends. live reports whether the server answered.
func (a *Agent) session(ctx context.Context, addr string) (live bool, err error) {
	conn, err := a.dial(addr, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.id.Load().cert, nil })
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := nodeproto.NewNodeClient(conn)
	// The first answer must come within DialTimeout; later ones whenever
	// something changes.
	first := time.AfterFunc(a.cfg.DialTimeout, cancel)
	stream, err := client.Sync(ctx, &nodeproto.SyncRequest{})
	if err != nil {
		first.Stop()
		return false, err
	}
	l := &link{addr: addr, client: client}
	defer a.conn.CompareAndSwap(l, nil)
	for {
		u, err := stream.Recv()
		if !live && !first.Stop() {
			return false, fmt.Errorf("no answer within %s", a.cfg.DialTimeout)
		}
		if err != nil {
			return live, err
		}
		s, serr := newState(u, a.log)
		if serr != nil {
			a.log.Error("sync update refused", slog.String("server", addr), slog.Any(logkey.Error, serr))
			return live, serr
		}
		if td := a.td.Load(); td != nil && s.td != *td {
			return live, fmt.Errorf("%w: trust domain %s, want %s", errBadUpdate, s.td, *td)
		}
		if !live {
			// The link first, the state second: a caller that sees
			// the first state must find a server to sign with.
			a.conn.Store(l)
		}
		a.publish(s)
		if !live {
			live = true
			a.log.Info("connected to server", slog.String("server", addr), slog.String(logkey.Node, a.Node()),
				slog.Int("entries", len(s.entries)))
		}
		a.log.Debug("sync update", slog.String("server", addr), slog.Uint64("revision", s.revision),
			slog.Int("entries", len(s.entries)), slog.Int("revoked", len(s.revoked)))
		a.wake()
	}
}

// publish makes s the current state and closes the previous one's Done.
func (a *Agent) publish(s *State) {
	a.mu.Lock()
	old := a.state
	a.state = s
	a.cur.Store(s)
	roots := s.roots
	a.roots.Store(&roots)
	a.mu.Unlock()
	close(old.done)
	a.idMu.Lock()
	defer a.idMu.Unlock()
	if id := a.id.Load(); id != nil && !sameCerts(id.bundle, s.roots) {
		nid := *id
		nid.bundle = s.roots
		if err := a.setIdentity(&nid); err != nil {
			a.log.Error("saving the trust bundle to the data dir failed", slog.Any(logkey.Error, err))
		}
	}
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// wake asks the renewal loop to look at the node SVID again.
func (a *Agent) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// renewLoop renews the node SVID at half its life, on the live channel,
// with a new key each time. It looks again at that time and whenever the
// channel delivers something (so that a test clock can drive it).
func (a *Agent) renewLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		id := a.id.Load()
		wait := id.refreshAt().Sub(a.now())
		if wait <= 0 {
			if l := a.conn.Load(); l != nil {
				if err := a.renew(ctx, l); err != nil {
					a.log.Warn("node SVID renewal failed; retrying", slog.String("server", l.addr), slog.Any(logkey.Error, err))
					wait = 5 * time.Second
				} else {
					continue
				}
			} else {
				wait = time.Second // until a channel is live; wake() comes sooner
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-timer.C:
		}
	}
}

// renew replaces the node SVID and key through l.
func (a *Agent) renew(ctx context.Context, l *link) error {
	old := a.id.Load()
	key, csr, err := newNodeKey()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	resp, err := l.client.RenewNode(ctx, &nodeproto.RenewNodeRequest{Csr: csr})
	if err != nil {
		return err
	}
	id, err := newIdentity(old.node, old.attestedBy, key, resp.GetSvid(), resp.GetBundle(), a.now())
	if err != nil {
		return fmt.Errorf("server %s sent an unusable node SVID: %w", l.addr, err)
	}
	id.tokenHash = old.tokenHash
	a.idMu.Lock()
	defer a.idMu.Unlock()
	if s := a.State(); s.Synced() {
		id.bundle = s.roots // the bundle of Sync is the current one
	}
	if err := a.setIdentity(id); err != nil {
		return fmt.Errorf("saving the node identity: %w", err)
	}
	a.log.Info("node SVID renewed", slog.String(logkey.Node, id.node), slog.String("server", l.addr),
		slog.String(logkey.Serial, id.chain[0].SerialNumber.Text(16)), slog.Time("expires", id.notAfter()))
	return nil
}

// refusedInHandshake turns a TLS alert from the server into
// PermissionDenied: the server refuses the certificate the agent presented
// (an evicted node's, an expired or revoked node SVID, a host certificate
// of an unknown CA) in the handshake, which gRPC reports as Unavailable.
func refusedInHandshake(err error) error {
	if err == nil {
		return nil
	}
	msg := status.Convert(err).Message()
	_, alert, ok := strings.Cut(msg, "remote error: tls: ")
	if !ok || strings.HasPrefix(alert, "internal error") {
		return err
	}
	alert, _, _ = strings.Cut(alert, "\"")
	return status.Errorf(codes.PermissionDenied, "the server refused the certificate presented in the TLS handshake (%s)", alert)
}

// jitter returns d less up to a fifth, at random: agents that lost the
// same server do not come back in step.
func jitter(d time.Duration) time.Duration {
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// sleep waits d, or returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ParseServers splits a comma-separated list of HOST:PORT addresses,
// refusing an empty or malformed one.
func ParseServers(s string) ([]string, error) {
	var out []string
	for _, addr := range strings.Split(s, ",") {
		addr = strings.TrimSpace(addr)
		u, err := url.Parse("//" + addr)
		if addr == "" || err != nil || u.Host != addr || u.Port() == "" || u.Hostname() == "" {
			return nil, fmt.Errorf("invalid server address %q: want HOST:PORT", addr)
		}
		out = append(out, addr)
	}
	return out, nil
}
