// Package workload serves the SPIFFE Workload API on a Unix socket.
//
// Every connection is attributed to the process that opened it by the
// kernel (SO_PEERCRED, a pidfd and the executable it runs, read once per
// connection by the transport credentials of the gRPC server). Each call
// turns that peer into selectors of the kinds the entries use, and asks the
// [Source] what the caller should hold now: one X.509-SVID per matching
// entry, the bundle and the CRL, with a Done channel and a refresh time. The
// Source owns the reuse policy (an SVID is handed out again until half its
// life, unless its entry changed or it was revoked); the handler only sends
// what changed. Streams wait on Done and on the refresh time: a new entry, a
// deleted entry or a new bundle reaches every open stream as soon as it is
// published, with no polling.
//
// An identity belongs to the process that connected, as it was when it
// connected. Every time a stream wakes up, and again after signing, right
// before new SVIDs or JWT-SVIDs are sent, the server verifies the peer
// ([attest.Attestor.Verify]): if the connecting process has exited, or has
// exec'd another executable, the call ends with PermissionDenied and
// nothing more is sent, even if another process (a child that inherited
// the socket, or one it was passed to) still holds the connection. A
// stream that holds an SVID of an ID that is then blocked ends with
// PermissionDenied too.
//
// Everything that crosses the Source seam is plain data (source.go), and
// this package uses no type of package ca: ca.WorkloadSource serves the
// server's own socket from its authority, and an agent on another host
// serves the same handler from what its server streams to it.
package workload

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/unixsock"
)

// Attestor turns a connected peer into selectors, and verifies that the
// peer is still the process that connected, running the same executable.
type Attestor interface {
	Attest(p *attest.Peer, kinds attest.Kind) (attest.Set, error)
	Verify(p *attest.Peer) error
}

// Config configures a Server.
type Config struct {
	// Source issues the identities served (source.go). Required.
	Source Source
	// Attestor computes the caller's selectors. Required.
	Attestor Attestor
	// JWT signs and validates JWT-SVIDs (see jwt.go), usually the same
	// value as Source. Nil: the JWT-SVID methods answer Unimplemented.
	JWT JWTSource
	// Logger receives operational logs. Nil discards them.
	Logger *slog.Logger
	// Limits bound what one caller can take (see limits.go). The zero
	// value applies the defaults.
	Limits Limits
	// Time returns the current time; nil means time.Now. Streams read it
	// to wait for X509Update.RefreshAt, so it must be the clock of the
	// Source (ca.Config.Time for ca.WorkloadSource). It is also the
	// clock of Limits unless Limits.Time is set.
	Time func() time.Time
	// Metrics receives counts of signings, streams, attestation failures
	// and refused callers (see metrics.go). Nil: nothing is counted.
	Metrics Metrics
	// Node returns the name of the node whose workloads the server
	// serves, when it is a badge agent's (agent.Agent.Node; the name is
	// known once the node has attested). A caller that matches no entry
	// is then told to register one with --node NAME, since only entries
	// scoped to the node reach its agent. Nil: the server's own host,
	// whose entries name no node.
	Node func() string
}

// Server is a Workload API server.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	src  Source
	att  Attestor
	jwt  JWTSource
	lim  *limiter
	log  *slog.Logger
	now  func() time.Time
	grpc *grpc.Server
	mtr  Metrics
	node func() string // nil: the server's own host

	refusals refusalLimiter // rate limit of the log lines about refused callers
	unavail  unavailableLog // rate limit of the log lines about an UnavailableError

	quit     chan struct{}
	quitOnce sync.Once
}

// New returns a Server; call Serve to accept connections. It fails if a
// required dependency of cfg is missing.
func New(cfg Config) (*Server, error) {
	if cfg.Source == nil {
		return nil, errors.New("workload: Config.Source is required")
	}
	if cfg.Attestor == nil {
		return nil, errors.New("workload: Config.Attestor is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Time
	if now == nil {
		now = time.Now
	}
	if cfg.Limits.Time == nil {
		cfg.Limits.Time = now
	}
	var mtr Metrics = noMetrics{}
	if cfg.Metrics != nil {
		mtr = cfg.Metrics
	}
	lim := newLimiter(cfg.Limits, log)
	lim.metrics = mtr
	s := &Server{src: observe(mtr, cfg.Source), att: cfg.Attestor, jwt: observeJWT(mtr, cfg.JWT), lim: lim, log: log, now: now, mtr: mtr, node: cfg.Node,
		quit: make(chan struct{})}
	s.grpc = grpc.NewServer(append(lim.serverOptions(),
		// A stream carries a few kilobytes every couple of minutes: small
		// per-connection buffers keep ten thousand streams cheap. A
		// client's first flight (preface, settings, headers, an empty
		// request) is a few hundred bytes, and reads larger than the
		// buffer bypass it, so 1 KiB costs no extra reads; it is 3 KiB
		// less live heap per stream and per fresh connection.
		grpc.ReadBufferSize(1<<10),
		grpc.WriteBufferSize(4<<10),
		grpc.SharedWriteBuffer(true),
		grpc.InitialConnWindowSize(64<<10),
		grpc.InitialWindowSize(64<<10),
		grpc.MaxRecvMsgSize(64<<10),
	)...)
	workload.RegisterSpiffeWorkloadAPIServer(s.grpc, s)
	return s, nil
}

// Serve accepts connections on l until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.grpc.Serve(l)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown ends every open stream (clients reconnect to the next server) and
// waits for handlers to return, until ctx is done.
func (s *Server) Shutdown(ctx context.Context) {
	s.quitOnce.Do(func() { close(s.quit) })
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
	}
}

// Listen creates the Workload API socket at path, connectable by every
// uid: authorization is attestation.
func Listen(path string) (net.Listener, error) {
	return unixsock.Listen(path, 0o777)
}

// caller is the attested peer of a call, with selectors of the kinds the
// entries used when it was last attested.
type caller struct {
	peer     *attest.Peer
	sel      attest.Set
	kinds    attest.Kind
	verified bool // attested or verified since the last use: ready need not verify again
}

// plain is the caller as the Source sees it.
func (c *caller) plain() Caller {
	return Caller{PID: c.peer.PID, UID: c.peer.UID, GID: c.peer.GID, Selectors: c.sel, Kinds: c.kinds}
}

// caller attests the peer of the call: header check, peer credentials,
// selectors of the kinds the Source's entries use.
func (s *Server) caller(ctx context.Context) (*caller, error) {
	// Only the one key is looked up: FromIncomingContext would copy the
	// whole metadata map on every call.
	if v := metadata.ValueFromIncomingContext(ctx, "workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		s.mtr.CallerDenied(DenyNoHeader)
		return nil, status.Error(codes.InvalidArgument, "security header missing from request: set metadata workload.spiffe.io: true")
	}
	p, ok := peerFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no peer credentials on the connection")
	}
	c := &caller{peer: p}
	if err := s.attest(c, s.src.Kinds()); err != nil {
		return nil, err
	}
	return c, nil
}

func (s *Server) attest(c *caller, kinds attest.Kind) error {
	sel, err := s.att.Attest(c.peer, kinds)
	if err != nil {
		s.mtr.AttestationFailed(attestReason(err))
		s.log.Warn("attestation failed", slog.Int(logkey.PID, int(c.peer.PID)), slog.Int(logkey.UID, int(c.peer.UID)), slog.Any(logkey.Error, err))
		code := codes.PermissionDenied
		if errors.Is(err, attest.ErrHashBudget) {
			code = codes.ResourceExhausted
		}
		return status.Errorf(code, "could not attest the calling process: %v", err)
	}
	c.sel, c.kinds, c.verified = sel, kinds, true
	return nil
}

// verify checks that the caller is still the process that connected,
// running the executable it connected with. A dead or changed peer is
// PermissionDenied: nothing more goes to that connection.
func (s *Server) verify(c *caller) error {
	if err := s.att.Verify(c.peer); err != nil {
		s.mtr.AttestationFailed(attestReason(err))
		s.log.Warn("peer no longer the process that connected; ending the call", slog.Int(logkey.PID, int(c.peer.PID)),
			slog.Int(logkey.UID, int(c.peer.UID)), slog.Any(logkey.Error, err))
		return status.Errorf(codes.PermissionDenied, "the process that connected is gone or changed: %v", err)
	}
	return nil
}

// ready prepares the caller for a question to the Source: it attests it
// again if the entries now use kinds of selectors it was not attested for,
// else verifies the peer (unless it was just attested).
func (s *Server) ready(c *caller) error {
	if k := s.src.Kinds(); k&^c.kinds != 0 {
		if err := s.attest(c, c.kinds|k); err != nil {
			return err
		}
	}
	if !c.verified {
		if err := s.verify(c); err != nil {
			return err
		}
	}
	c.verified = false
	return nil
}

// again reports whether the Source asked for selectors of more kinds, and
// if so attests the caller for them (an error ends the call).
func (s *Server) again(c *caller, err error) (bool, error) {
	if err == nil {
		return false, nil // before ke, which errors.As moves to the heap
	}
	var ke *KindsError
	if !errors.As(err, &ke) {
		return false, nil
	}
	if err := s.attest(c, c.kinds|ke.Kinds); err != nil {
		return false, err
	}
	c.verified = false
	return true, nil
}

// check refuses a caller the Source does not serve. With unregistered set,
// a caller that matches no entry passes and only one that matches only
// blocked IDs is refused.
func (s *Server) check(ctx context.Context, c *caller, unregistered bool) error {
	if err := s.ready(c); err != nil {
		return err
	}
	for {
		err := s.src.Check(ctx, c.plain())
		if again, aerr := s.again(c, err); aerr != nil {
			return aerr
		} else if again {
			continue
		}
		if err == nil || unregistered && errors.Is(err, ErrNotRegistered) {
			return nil
		}
		return s.failed(c, err, "checking the caller")
	}
}

// failed turns an error of the Source into the status the caller gets:
// refusals (refusal.go), limits, invalid requests, and Unavailable for
// the rest, which is logged.
func (s *Server) failed(c *caller, err error, what string) error {
	var (
		be  *BlockedError
		inv *InvalidError
		ue  *UnavailableError
	)
	p := c.peer
	switch {
	case errors.As(err, &ue):
		s.unavailable(ue)
		return status.Errorf(codes.Unavailable, "%s: %v", what, err)
	case errors.Is(err, ErrNotRegistered):
		return s.refuseBlocked(p, nil)
	case errors.As(err, &be) && be.Held:
		s.log.Info("stream ended: it holds a blocked SPIFFE ID", slog.Int(logkey.PID, int(p.PID)), slog.Int(logkey.UID, int(p.UID)),
			slog.String(logkey.SPIFFEID, strings.Join(be.IDs, ",")))
		return status.Errorf(codes.PermissionDenied, "SPIFFE ID %s is blocked", strings.Join(be.IDs, ", "))
	case errors.As(err, &be):
		return s.refuseBlocked(p, be.IDs)
	case errors.As(err, &inv):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if st, ok := limitStatus(err); ok {
		return st
	}
	if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		// The caller went away while its SVID was made (an agent's
		// call to its server is cancelled with it): nothing failed.
		s.log.Debug(what+" cancelled", slog.Int(logkey.PID, int(p.PID)), slog.Any(logkey.Error, err))
		return status.Errorf(codes.Canceled, "%s: %v", what, err)
	}
	s.log.Error(what+" failed", slog.Int(logkey.PID, int(p.PID)), slog.Any(logkey.Error, err))
	return status.Errorf(codes.Unavailable, "%s: %v", what, err)
}

// unavailableLog counts the calls answered Unavailable for an
// UnavailableError since the last line about it.
type unavailableLog struct {
	mu         sync.Mutex
	at         time.Time // of the last line
	suppressed int
}

// unavailable logs that the Source cannot serve yet, at most once per
// LogInterval: while it lasts every caller meets it alike.
func (s *Server) unavailable(ue *UnavailableError) {
	u := &s.unavail
	interval := s.lim.lim.LogInterval
	u.mu.Lock()
	defer u.mu.Unlock()
	now := s.lim.now()
	if !u.at.IsZero() && now.Sub(u.at) < interval && !now.Before(u.at) {
		u.suppressed++
		return
	}
	s.log.Warn("Workload API not serving yet; callers get Unavailable", slog.String("reason", ue.Reason),
		slog.Int("refused_since_last_report", u.suppressed), slog.Duration("report_interval", interval))
	u.at, u.suppressed = now, 0
}

var errShutdown = status.Error(codes.Unavailable, "server is shutting down")

// FetchX509SVID streams the caller's X.509-SVIDs with the bundle and the
// revocation list: at once, then whenever the Source says they change (an
// SVID reaches half its life or is revoked, the caller's entries change,
// the bundle or revocation list changes).
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	growStack(0)
	ctx := stream.Context()
	c, err := s.caller(ctx)
	if err != nil {
		return err
	}
	defer s.mtr.StreamOpened(StreamX509SVID)()
	p := c.peer
	var (
		held             []X509SVID
		sentBundle, sent []byte // bundle and CRL last sent
		timer            *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if err := s.ready(c); err != nil {
			return err
		}
		upd, err := s.src.X509(ctx, X509Request{Caller: c.plain(), Held: held, Budget: s.lim})
		if again, aerr := s.again(c, err); aerr != nil {
			return aerr
		} else if again {
			continue
		}
		if err != nil {
			return s.failed(c, err, "signing X.509-SVID")
		}
		if len(upd.SVIDs) == 0 {
			// A Source never answers so; a caller gets no empty response.
			return s.failed(c, errors.New("the source returned no SVID"), "signing X.509-SVID")
		}
		changed := !sameSVIDs(held, upd.SVIDs)
		if changed || !sameBytes(sent, upd.CRL) || !sameBytes(sentBundle, upd.Bundle) {
			// The keys go out only if the peer is still the process that
			// connected: ready verified it, but signing takes a while.
			if changed {
				if err := s.verify(c); err != nil {
					return err
				}
			}
			if err := stream.Send(x509Response(&upd)); err != nil {
				return err
			}
			held, sentBundle, sent = upd.SVIDs, upd.Bundle, upd.CRL
			if s.log.Enabled(ctx, slog.LevelDebug) { // no attributes built per fetch when off
				s.log.LogAttrs(ctx, slog.LevelDebug, "X.509-SVIDs sent", slog.Int(logkey.PID, int(p.PID)), slog.Int(logkey.UID, int(p.UID)),
					slog.String(logkey.SPIFFEID, held[0].ID.String()), slog.String(logkey.Serial, held[0].Serial))
			}
		}
		var due <-chan time.Time
		if !upd.RefreshAt.IsZero() {
			wait := upd.RefreshAt.Sub(s.now())
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.quit:
			return errShutdown
		case <-upd.Done:
		case <-due:
		}
	}
}

// growStack grows the stack of a new stream's goroutine, while it is still
// shallow, to what signing an SVID needs. gRPC starts every stream on a
// fresh goroutine with a small stack; left to itself it grows deep inside
// ECDSA signing, where the runtime copies and adjusts every frame of the
// stack (about 30,000 instructions, 3% of a fresh fetch under callgrind).
// Here the copy is of a few frames. The stack is no larger than the
// signing would have made it, and the garbage collector shrinks an idle
// stream's stack as before.
//
//go:noinline
func growStack(i int) byte {
	var frame [8 << 10]byte
	frame[i] = byte(i)
	return frame[i/2]
}

// sameSVIDs reports whether b hands out exactly the SVIDs of a, in order.
func sameSVIDs(a, b []X509SVID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Serial != b[i].Serial || a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}

func x509Response(u *X509Update) *workload.X509SVIDResponse {
	resp := &workload.X509SVIDResponse{Svids: make([]*workload.X509SVID, len(u.SVIDs)), Crl: [][]byte{u.CRL}}
	for i := range u.SVIDs {
		sv := &u.SVIDs[i]
		resp.Svids[i] = &workload.X509SVID{
			SpiffeId:    sv.ID.String(),
			X509Svid:    sv.CertChainDER,
			X509SvidKey: sv.KeyDER,
			Bundle:      u.Bundle,
		}
	}
	return resp
}

// FetchX509Bundles streams the trust bundles: at once, then on every change.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	ctx := stream.Context()
	c, err := s.caller(ctx)
	if err != nil {
		return err
	}
	defer s.mtr.StreamOpened(StreamX509Bundles)()
	var (
		sent    map[string][]byte
		sentCRL []byte
	)
	for {
		// The bundles first: if the check then sees a newer state, their
		// Done is already closed and the loop comes round again.
		b := s.src.Bundles(ctx)
		if err := s.check(ctx, c, false); err != nil {
			return err
		}
		if sent == nil || !sameBytes(sentCRL, b.CRL) || !sameBundles(sent, b.X509) {
			sent, sentCRL = b.X509, b.CRL
			if err := stream.Send(&workload.X509BundlesResponse{Bundles: b.X509, Crl: [][]byte{b.CRL}}); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.quit:
			return errShutdown
		case <-b.Done:
		}
	}
}

// sameBundles reports whether a and b map the same trust domains to the
// same bytes.
func sameBundles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for td, v := range a {
		if w, ok := b[td]; !ok || !sameBytes(v, w) {
			return false
		}
	}
	return true
}
