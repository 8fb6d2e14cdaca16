package sdk

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Environment variables and default consulted by NewX509Source, in this
// order, when no WithAddress option is given.
const (
	// EnvEndpointSocket is the standard SPIFFE variable; its value is a URL
	// such as unix:///run/badge/workload.sock.
	EnvEndpointSocket = "SPIFFE_ENDPOINT_SOCKET"
	// EnvBadgeSocket holds a plain socket path.
	EnvBadgeSocket = "BADGE_SOCKET"
	// DefaultSocketPath is the Workload API socket of a badge server started
	// as root with no flags. A caller other than root for which it does
	// not exist uses $XDG_RUNTIME_DIR/badge/workload.sock instead, where a
	// badge server run by that user puts it, if XDG_RUNTIME_DIR is set.
	DefaultSocketPath = "/run/badge/workload.sock"
)

// Errors returned by X509Source.
var (
	// ErrClosed is returned by a source's getters after Close.
	ErrClosed = errors.New("sdk: source is closed")
	// ErrSVIDExpired is returned by GetX509SVID when the Workload API has
	// been unreachable for so long that the last SVID received has expired.
	ErrSVIDExpired = errors.New("sdk: X509-SVID expired and no newer one was received")
)

// A Source gives the TLS configurations of this package the certificate to
// present and the bundles to verify peers with. X509Source is the one that
// follows the Workload API; go-spiffe's workloadapi.X509Source also fits.
// If a Source also implements RevocationChecker, the configurations use it.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// X509Source holds the newest X509-SVID, trust bundles and revocation list
// streamed by the Workload API, and updates them in place as the server
// rotates them. Its getters never block: each reads one atomic pointer, so
// a TLS handshake that starts after an update uses the new certificate
// without any listener, server or client being rebuilt.
//
// If the stream breaks (the server restarts, the socket goes away, the
// caller is not yet registered), the source keeps serving the last good
// SVID until it expires and reconnects with capped exponential backoff and
// jitter. Status reports the connection state; a warning is logged when it
// is lost.
//
// X509Source implements Source (go-spiffe's x509svid.Source and
// x509bundle.Source) and RevocationChecker. It is safe for concurrent use.
type X509Source struct {
	cfg  sourceConfig
	addr string

	state  atomic.Pointer[sourceState]
	closed atomic.Bool

	mu      sync.Mutex
	status  Status
	changed chan struct{}

	ready     chan struct{} // closed when the first state is stored
	readyOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{} // closed when the stream goroutine has returned
}

// sourceState is one consistent snapshot of what the Workload API sent.
type sourceState struct {
	svid        *x509svid.SVID
	cert        *tls.Certificate // svid as presented in handshakes
	bundles     *x509bundle.Set
	revocations *RevocationList
}

// Status describes the source's connection to the Workload API.
type Status struct {
	// Addr is the Workload API address in use.
	Addr string
	// Connected is true while the stream is up and has delivered an update.
	Connected bool
	// Since is when Connected last changed.
	Since time.Time
	// Err is why the stream is down (nil while connected), or why the last
	// update from the server was rejected.
	Err error
	// LastUpdate is when the last update was accepted; zero before the
	// first.
	LastUpdate time.Time
	// SVIDExpiresAt is the NotAfter of the SVID being served. Once it has
	// passed while disconnected, GetX509SVID fails with ErrSVIDExpired.
	SVIDExpiresAt time.Time
}

// A SourceOption configures NewX509Source.
type SourceOption func(*sourceConfig)

type sourceConfig struct {
	addr       string
	id         spiffeid.ID
	hint       string
	hasHint    bool
	log        *slog.Logger
	minBackoff time.Duration
	maxBackoff time.Duration
	now        func() time.Time

	serverUID    uint32
	hasServerUID bool
}

// WithAddress sets the Workload API address: "unix:///path/to/sock",
// "unix:/path/to/sock" or a plain path. It overrides the environment.
func WithAddress(addr string) SourceOption {
	return func(c *sourceConfig) { c.addr = addr }
}

// WithSVIDID makes the source serve the SVID with SPIFFE ID id when the
// Workload API returns several. Until an update contains it,
// NewX509Source keeps waiting; later updates without it are rejected and
// the previous SVID is kept.
func WithSVIDID(id spiffeid.ID) SourceOption {
	return func(c *sourceConfig) { c.id = id }
}

// WithSVIDHint makes the source serve the first SVID whose operator hint is
// hint (for example "internal"), with the same waiting rules as
// WithSVIDID. Without WithSVIDID or WithSVIDHint the source serves the
// first SVID, which the Workload API specification makes the default.
func WithSVIDHint(hint string) SourceOption {
	return func(c *sourceConfig) { c.hint, c.hasHint = hint, true }
}

// WithLogger sets the logger for connection changes and rejected updates.
// nil (the default) discards them.
func WithLogger(l *slog.Logger) SourceOption {
	return func(c *sourceConfig) { c.log = l }
}

// WithBackoff sets the first and the longest wait between reconnection
// attempts. The wait doubles after each failed attempt, with jitter. The
// defaults are 100ms and 5s, well inside a five-minute SVID lifetime.
func WithBackoff(initial, max time.Duration) SourceOption {
	return func(c *sourceConfig) { c.minBackoff, c.maxBackoff = initial, max }
}

// WithClock sets the source of the current time used for SVID expiry and
// CRL checks. The default is time.Now. It is the SDK's counterpart of the
// Time field of the server's Config structs.
func WithClock(now func() time.Time) SourceOption {
	return func(c *sourceConfig) { c.now = now }
}

// newSourceConfig applies opts over the defaults and resolves the Workload
// API address: WithAddress, then SPIFFE_ENDPOINT_SOCKET, then BADGE_SOCKET,
// then the default (see DefaultSocketPath). It returns the address and the
// dialer of its socket, which refuses a server of an untrusted uid.
func newSourceConfig(opts []SourceOption) (cfg sourceConfig, addr string, d *dialer, err error) {
	cfg = sourceConfig{minBackoff: 100 * time.Millisecond, maxBackoff: 5 * time.Second, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	if cfg.minBackoff <= 0 {
		cfg.minBackoff = 100 * time.Millisecond
	}
	if cfg.maxBackoff < cfg.minBackoff {
		cfg.maxBackoff = cfg.minBackoff
	}
	addr = cfg.addr
	for _, env := range []string{EnvEndpointSocket, EnvBadgeSocket} {
		if addr == "" {
			addr = os.Getenv(env)
		}
	}
	if addr == "" {
		addr = defaultSocketPath()
	}
	if v := os.Getenv(EnvServerUID); v != "" && !cfg.hasServerUID {
		u, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return cfg, addr, nil, fmt.Errorf("sdk: invalid %s %q: want a numeric uid", EnvServerUID, v)
		}
		cfg.serverUID, cfg.hasServerUID = uint32(u), true
	}
	target, err := grpcTarget(addr)
	if err != nil {
		return cfg, addr, nil, err
	}
	return cfg, addr, &dialer{target: target, path: strings.TrimPrefix(target, "unix://"), trusted: cfg.trustedUIDs()}, nil
}

// NewX509Source connects to the Workload API and returns once the first
// X509-SVID has arrived. ctx bounds only that wait: when it ends first,
// NewX509Source returns an error wrapping ctx.Err() and the last error
// from the Workload API. The source then follows the stream in the
// background until Close.
func NewX509Source(ctx context.Context, opts ...SourceOption) (*X509Source, error) {
	cfg, addr, d, err := newSourceConfig(opts)
	if err != nil {
		return nil, err
	}

	bg, cancel := context.WithCancel(context.Background())
	s := &X509Source{
		cfg:     cfg,
		addr:    addr,
		changed: make(chan struct{}),
		ready:   make(chan struct{}),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	s.status = Status{Addr: addr, Since: cfg.now()}
	go s.run(bg, d)

	for {
		changed := s.Changed()
		select {
		case <-s.ready:
			return s, nil
		case <-changed:
			// A server of an untrusted uid will not become trusted by
			// waiting: say so now.
			if err := s.Status().Err; errors.Is(err, ErrUntrustedServer) {
				s.Close()
				return nil, err
			}
		case <-ctx.Done():
			last := s.Status().Err
			s.Close()
			if last != nil {
				return nil, fmt.Errorf("sdk: no X509-SVID from the Workload API at %s: %w (last error: %w)", addr, ctx.Err(), last)
			}
			return nil, fmt.Errorf("sdk: no X509-SVID from the Workload API at %s: %w", addr, ctx.Err())
		}
	}
}

// grpcTarget turns a Workload API address into a gRPC target. Only Unix
// sockets are supported; a unix URL must be one go-spiffe's
// workloadapi.TargetFromAddress accepts and name no host.
func grpcTarget(addr string) (string, error) {
	path := addr
	switch {
	case strings.HasPrefix(addr, "unix:"):
		if _, err := workloadapi.TargetFromAddress(addr); err != nil {
			return "", fmt.Errorf("sdk: Workload API address %q: %w", addr, err)
		}
		u, err := url.Parse(addr)
		if err != nil || u.Host != "" {
			return "", fmt.Errorf("sdk: Workload API address %q: want an absolute socket path", addr)
		}
		path = u.Path
	case strings.Contains(addr, "://"):
		return "", fmt.Errorf("sdk: unsupported Workload API address %q: only unix sockets are supported", addr)
	}
	if path == "" || !filepath.IsAbs(path) {
		return "", fmt.Errorf("sdk: Workload API address %q: want an absolute socket path", addr)
	}
	return "unix://" + path, nil
}

// Close stops following the Workload API and waits until the background
// goroutine has returned. Getters return ErrClosed afterwards. It is safe
// to call more than once.
func (s *X509Source) Close() error {
	s.closed.Store(true)
	s.cancel()
	<-s.done
	return nil
}

// GetX509SVID returns the current X509-SVID. It implements x509svid.Source.
func (s *X509Source) GetX509SVID() (*x509svid.SVID, error) {
	st, err := s.current()
	if err != nil {
		return nil, err
	}
	return st.svid, nil
}

// GetX509BundleForTrustDomain returns the current bundle of td, from the
// SVID responses or the federated bundles. It implements x509bundle.Source.
func (s *X509Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	st := s.state.Load()
	if st == nil {
		return nil, errors.New("sdk: no bundle received yet")
	}
	return st.bundles.GetX509BundleForTrustDomain(td)
}

// Bundles returns the current set of bundles.
func (s *X509Source) Bundles() (*x509bundle.Set, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	st := s.state.Load()
	if st == nil {
		return nil, errors.New("sdk: no bundle received yet")
	}
	return st.bundles, nil
}

// Revocations returns the current revocation list; it may be empty.
func (s *X509Source) Revocations() *RevocationList {
	if st := s.state.Load(); st != nil {
		return st.revocations
	}
	return nil
}

// CheckRevocation checks leaf against the current revocation list. It
// implements RevocationChecker.
func (s *X509Source) CheckRevocation(id spiffeid.ID, leaf *x509.Certificate) error {
	return s.Revocations().CheckRevocation(id, leaf)
}

// Status returns the state of the connection to the Workload API.
func (s *X509Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Changed returns a channel that is closed at the next change: an accepted
// update, a rejected one, or a change of Status. Take the channel before
// reading the state, then wait on it:
//
//	for ch := src.Changed(); !done(src); ch = src.Changed() { <-ch }
func (s *X509Source) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// tlsCertificate returns the current SVID as a tls.Certificate. It is the
// handshake path: one atomic load and a time comparison.
func (s *X509Source) tlsCertificate() (*tls.Certificate, error) {
	st, err := s.current()
	if err != nil {
		return nil, err
	}
	return st.cert, nil
}

func (s *X509Source) current() (*sourceState, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	st := s.state.Load()
	if st == nil {
		return nil, errors.New("sdk: no X509-SVID received yet")
	}
	if s.cfg.now().After(st.cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("%w (%s expired at %s)", ErrSVIDExpired, st.svid.ID, st.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return st, nil
}

// updateStatus applies fn to the status under the lock. Callers log and
// then call notify, so that a waiter woken by the change sees its log line.
func (s *X509Source) updateStatus(fn func(*Status)) {
	s.mu.Lock()
	fn(&s.status)
	s.mu.Unlock()
}

// notify wakes the waiters on Changed.
func (s *X509Source) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// run follows the Workload API until ctx is cancelled.
func (s *X509Source) run(ctx context.Context, d *dialer) {
	defer close(s.done)
	bo := backoff{min: s.cfg.minBackoff, max: s.cfg.maxBackoff}
	for {
		err := s.follow(ctx, d, &bo)
		if ctx.Err() != nil {
			return
		}
		wait := bo.next()
		s.disconnected(err, wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// follow opens one FetchX509SVID stream and applies its updates until it
// fails. It resets the backoff once the stream delivers an update.
func (s *X509Source) follow(ctx context.Context, d *dialer, bo *backoff) error {
	conn, err := grpc.NewClient(d.target, d.options()...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"))
	defer cancel()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return d.explain(err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return d.explain(err)
		}
		if err := s.apply(resp); err != nil {
			s.cfg.log.Warn("badge sdk: rejected Workload API update; keeping the previous one",
				slog.String(keyAddr, s.addr), slog.Any(keyError, err))
			s.updateStatus(func(st *Status) { st.Err = err })
			s.notify()
			continue
		}
		bo.reset()
	}
}

// apply parses one response and, if it is usable, makes it current.
func (s *X509Source) apply(resp *workload.X509SVIDResponse) error {
	now := s.cfg.now()
	st, crlErr, err := s.parse(resp, now)
	if err != nil {
		return err
	}
	if crlErr != nil {
		// Never let a CRL that fails verification drop revocations that
		// were accepted before.
		st.revocations = st.revocations.merge(s.Revocations())
		s.cfg.log.Warn("badge sdk: ignored revocation lists that do not verify",
			slog.String(keyAddr, s.addr), slog.Any(keyError, crlErr))
	}
	s.state.Store(st)

	var reconnected bool
	s.updateStatus(func(status *Status) {
		if !status.Connected {
			reconnected = true
			status.Connected = true
			status.Since = now
		}
		status.Err = nil
		status.LastUpdate = now
		status.SVIDExpiresAt = st.cert.Leaf.NotAfter
	})
	if reconnected {
		s.cfg.log.Info("badge sdk: receiving X509-SVIDs from the Workload API",
			slog.String(keyAddr, s.addr), slog.String(keySPIFFEID, st.svid.ID.String()),
			slog.Time(keyExpiresAt, st.cert.Leaf.NotAfter))
	}
	s.notify()
	s.readyOnce.Do(func() { close(s.ready) })
	return nil
}

func (s *X509Source) disconnected(err error, retry time.Duration) {
	var was bool
	var expires time.Time
	s.updateStatus(func(st *Status) {
		was = st.Connected
		if st.Connected {
			st.Connected = false
			st.Since = s.cfg.now()
		}
		st.Err = err
		expires = st.SVIDExpiresAt
	})
	if was {
		s.cfg.log.Warn("badge sdk: Workload API stream lost; serving the last X509-SVID until it expires",
			slog.String(keyAddr, s.addr), slog.Any(keyError, err),
			slog.Time(keyExpiresAt, expires), slog.Duration(keyRetryIn, retry))
	} else {
		s.cfg.log.Debug("badge sdk: Workload API unavailable",
			slog.String(keyAddr, s.addr), slog.Any(keyError, err), slog.Duration(keyRetryIn, retry))
	}
	s.notify()
}

// parse builds a state from resp. crlErr reports CRLs that were rejected;
// err means the whole response is unusable.
func (s *X509Source) parse(resp *workload.X509SVIDResponse, now time.Time) (st *sourceState, crlErr, err error) {
	if len(resp.GetSvids()) == 0 {
		return nil, nil, errors.New("sdk: Workload API response holds no X509-SVID")
	}
	bundles := x509bundle.NewSet()
	svids := make([]*x509svid.SVID, 0, len(resp.Svids))
	for i, m := range resp.Svids {
		svid, err := x509svid.ParseRaw(m.GetX509Svid(), m.GetX509SvidKey())
		if err != nil {
			return nil, nil, fmt.Errorf("sdk: X509-SVID %d: %w", i, err)
		}
		if m.GetSpiffeId() != "" && m.GetSpiffeId() != svid.ID.String() {
			return nil, nil, fmt.Errorf("sdk: X509-SVID %d: spiffe_id %q does not match certificate ID %s", i, m.GetSpiffeId(), svid.ID)
		}
		svid.Hint = m.GetHint()
		td := svid.ID.TrustDomain()
		if !bundles.Has(td) {
			b, err := x509bundle.ParseRaw(td, m.GetBundle())
			if err != nil {
				return nil, nil, fmt.Errorf("sdk: bundle of %s: %w", td, err)
			}
			if b.Empty() {
				return nil, nil, fmt.Errorf("sdk: bundle of %s is empty", td)
			}
			bundles.Add(b)
		}
		svids = append(svids, svid)
	}
	for name, raw := range resp.GetFederatedBundles() {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, nil, fmt.Errorf("sdk: federated bundle %q: %w", name, err)
		}
		if bundles.Has(td) {
			continue // the bundle of a local SVID wins
		}
		b, err := x509bundle.ParseRaw(td, raw)
		if err != nil {
			return nil, nil, fmt.Errorf("sdk: federated bundle of %s: %w", td, err)
		}
		bundles.Add(b)
	}

	svid := s.pick(svids)
	if svid == nil {
		return nil, nil, s.noMatchError()
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	revs, crlErr := revocationsFromCRLs(resp.GetCrl(), bundles, svids, now)
	return &sourceState{svid: svid, cert: cert, bundles: bundles, revocations: revs}, crlErr, nil
}

func (s *X509Source) pick(svids []*x509svid.SVID) *x509svid.SVID {
	for _, svid := range svids {
		if !s.cfg.id.IsZero() && svid.ID != s.cfg.id {
			continue
		}
		if s.cfg.hasHint && svid.Hint != s.cfg.hint {
			continue
		}
		return svid
	}
	return nil
}

func (s *X509Source) noMatchError() error {
	var want []string
	if !s.cfg.id.IsZero() {
		want = append(want, "ID "+s.cfg.id.String())
	}
	if s.cfg.hasHint {
		want = append(want, fmt.Sprintf("hint %q", s.cfg.hint))
	}
	return fmt.Errorf("sdk: Workload API response holds no X509-SVID with %s", strings.Join(want, " and "))
}

// backoff yields capped exponential waits with jitter: each wait is drawn
// uniformly from [d/2, d], and d doubles up to max.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur < b.min {
		b.cur = b.min
	}
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// Log attribute keys.
const (
	keyAddr      = "addr"
	keyError     = "error"
	keySPIFFEID  = "spiffe_id"
	keyExpiresAt = "expires_at"
	keyRetryIn   = "retry_in"
)
