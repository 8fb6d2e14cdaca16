// Package workload serves the SPIFFE Workload API on a Unix socket.
//
// Every connection is attributed to the process that opened it by the
// kernel (SO_PEERCRED, a pidfd and the executable it runs, read once per
// connection by the transport credentials of the gRPC server). Each call
// turns that peer into selectors, matches them against the registration
// entries of the current [ca.Snapshot], and has the [Authority] sign one
// X.509-SVID per matching entry. Streams then wait on the snapshot's Done
// channel and on the half-life of their SVIDs: a new entry, a deleted entry
// or a new bundle reaches every open stream as soon as it is published, with
// no polling.
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
// The server depends only on the two small interfaces below, so that an
// agent on another host can serve the same API from a remote authority.
package workload

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca"
)

// Authority issues identities: *ca.Authority today, a remote client in an agent later.
type Authority interface {
	// Snapshot returns the current entries and bundle.
	Snapshot() *ca.Snapshot
	// SignX509SVID signs a fresh SVID for entry e of snapshot s.
	SignX509SVID(ctx context.Context, s *ca.Snapshot, e *ca.Entry) (*ca.X509SVID, error)
}

// Attestor turns a connected peer into selectors, and verifies that the
// peer is still the process that connected, running the same executable.
type Attestor interface {
	Attest(p *attest.Peer, kinds attest.Kind) (attest.Set, error)
	Verify(p *attest.Peer) error
}

// Config configures a Server.
type Config struct {
	// Authority signs SVIDs and publishes snapshots. Required.
	Authority Authority
	// Attestor computes the caller's selectors. Required.
	Attestor Attestor
	// JWT signs and validates JWT-SVIDs (see jwt.go). Nil: the JWT-SVID
	// methods answer Unimplemented.
	JWT JWTIssuer
	// Logger receives operational logs. Nil discards them.
	Logger *slog.Logger
	// Limits bound what one caller can take (see limits.go). The zero
	// value applies the defaults.
	Limits Limits
	// Metrics receives counts of signings, streams, attestation failures
	// and refused callers (see metrics.go). Nil: nothing is counted.
	Metrics Metrics
}

// Server is a Workload API server.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	auth Authority
	att  Attestor
	jwt  JWTIssuer
	log  *slog.Logger
	grpc *grpc.Server
	mtr  Metrics

	refusals refusalLimiter // rate limit of the log lines about refused callers

	quit     chan struct{}
	quitOnce sync.Once
}

// New returns a Server; call Serve to accept connections.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var mtr Metrics = noMetrics{}
	if cfg.Metrics != nil {
		mtr = cfg.Metrics
	}
	s := &Server{auth: cfg.Authority, att: cfg.Attestor, jwt: cfg.JWT, log: log, mtr: mtr, quit: make(chan struct{})}
	lim := newLimiter(cfg.Limits, log)
	lim.metrics = mtr
	s.auth, s.jwt = lim.wrap(cfg.Authority, cfg.JWT)
	s.auth, s.jwt = observe(mtr, s.auth, s.jwt)
	s.grpc = grpc.NewServer(append(lim.serverOptions(),
		// A stream carries a few kilobytes every couple of minutes: small
		// per-connection buffers keep ten thousand streams cheap.
		grpc.ReadBufferSize(4<<10),
		grpc.WriteBufferSize(4<<10),
		grpc.SharedWriteBuffer(true),
		grpc.InitialConnWindowSize(64<<10),
		grpc.InitialWindowSize(64<<10),
		grpc.MaxRecvMsgSize(64<<10),
	)...)
	workload.RegisterSpiffeWorkloadAPIServer(s.grpc, s)
	return s
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
	return ca.ListenUnix(path, 0o777)
}

// caller is the attested peer of a call, with selectors of the kinds the
// entries used when it was last attested.
type caller struct {
	peer     *attest.Peer
	sel      attest.Set
	kinds    attest.Kind
	verified bool // attested or verified since the last use: match need not verify again
}

// caller attests the peer of the call: header check, peer credentials,
// selectors of the kinds the snapshot's entries use.
func (s *Server) caller(ctx context.Context, snap *ca.Snapshot) (*caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		s.mtr.CallerDenied(DenyNoHeader)
		return nil, status.Error(codes.InvalidArgument, "security header missing from request: set metadata workload.spiffe.io: true")
	}
	p, ok := peerFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no peer credentials on the connection")
	}
	c := &caller{peer: p}
	if err := s.attest(c, snap.Kinds()); err != nil {
		return nil, err
	}
	return c, nil
}

func (s *Server) attest(c *caller, kinds attest.Kind) error {
	sel, err := s.att.Attest(c.peer, kinds)
	if err != nil {
		s.mtr.AttestationFailed(attestReason(err))
		s.log.Warn("attestation failed", slog.Int(ca.LogPID, int(c.peer.PID)), slog.Int(ca.LogUID, int(c.peer.UID)), slog.Any(ca.LogError, err))
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
		s.log.Warn("peer no longer the process that connected; ending the call", slog.Int(ca.LogPID, int(c.peer.PID)),
			slog.Int(ca.LogUID, int(c.peer.UID)), slog.Any(ca.LogError, err))
		return status.Errorf(codes.PermissionDenied, "the process that connected is gone or changed: %v", err)
	}
	return nil
}

// match returns the entries of snap the caller matches, default first. It
// first verifies the peer (unless it was just attested), and attests it
// again if an entry uses a kind of selector it was not attested for. No
// entry is PermissionDenied, saying whether the caller is not registered or
// blocked (refusal.go).
func (s *Server) match(c *caller, snap *ca.Snapshot) ([]*ca.Entry, error) {
	if k := snap.Kinds(); k&^c.kinds != 0 {
		if err := s.attest(c, k); err != nil {
			return nil, err
		}
	}
	if !c.verified {
		if err := s.verify(c); err != nil {
			return nil, err
		}
	}
	c.verified = false
	entries := snap.Match(c.sel)
	if len(entries) == 0 {
		return nil, s.refuse(c, snap)
	}
	return entries, nil
}

var errShutdown = status.Error(codes.Unavailable, "server is shutting down")

// FetchX509SVID streams the caller's X.509-SVIDs with the bundle and the
// revocation list: at once, then whenever an SVID reaches half its life or
// is revoked, the caller's entries change, or the bundle or revocation list
// changes.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	snap := s.auth.Snapshot()
	c, err := s.caller(ctx, snap)
	if err != nil {
		return err
	}
	defer s.mtr.StreamOpened(StreamX509SVID)()
	p := c.peer
	var (
		held       []*ca.X509SVID
		sentBundle []byte
		sentCRL    uint64
		timer      *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if id, ok := heldBlocked(snap, held); ok {
			s.log.Info("stream ended: it holds a blocked SPIFFE ID", slog.Int(ca.LogPID, int(p.PID)), slog.Int(ca.LogUID, int(p.UID)),
				slog.String(ca.LogSPIFFEID, id))
			return status.Errorf(codes.PermissionDenied, "SPIFFE ID %s is blocked", id)
		}
		entries, err := s.match(c, snap)
		if err != nil {
			return err
		}
		next, changed, err := s.refresh(ctx, snap, entries, held)
		if errors.Is(err, ca.ErrBlocked) {
			// Blocked between the snapshot and the signing; the next
			// snapshot no longer matches the entry (and ends the stream
			// if it held an SVID of it).
			snap = s.auth.Snapshot()
			continue
		}
		if st, ok := limitStatus(err); ok {
			return st
		}
		if err != nil {
			s.log.Error("signing X.509-SVID failed", slog.Int(ca.LogPID, int(p.PID)), slog.Any(ca.LogError, err))
			return status.Errorf(codes.Unavailable, "signing X.509-SVID: %v", err)
		}
		_, crlNumber := snap.CRL()
		if changed || crlNumber != sentCRL || !bytes.Equal(sentBundle, snap.BundleDER()) {
			// The keys go out only if the peer is still the process that
			// connected: match verified it, but signing takes a while.
			if changed {
				if err := s.verify(c); err != nil {
					return err
				}
			}
			if err := stream.Send(x509Response(next, snap)); err != nil {
				return err
			}
			held, sentBundle, sentCRL = next, snap.BundleDER(), crlNumber
			s.log.Debug("X.509-SVIDs sent", slog.Int(ca.LogPID, int(p.PID)), slog.Int(ca.LogUID, int(p.UID)),
				slog.String(ca.LogSPIFFEID, held[0].ID.String()), slog.String(ca.LogSerial, held[0].Serial))
		}
		refreshAt := held[0].RefreshAt()
		for _, h := range held[1:] {
			if r := h.RefreshAt(); r.Before(refreshAt) {
				refreshAt = r
			}
		}
		wait := time.Until(refreshAt)
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.quit:
			return errShutdown
		case <-snap.Done():
			snap = s.auth.Snapshot()
		case <-timer.C:
		}
	}
}

// heldBlocked returns the SPIFFE ID of a held SVID that snap lists as
// blocked, if any.
func heldBlocked(snap *ca.Snapshot, held []*ca.X509SVID) (string, bool) {
	for _, h := range held {
		if r, ok := snap.Revoked(h.ID); ok && r.Blocked {
			return h.ID.String(), true
		}
	}
	return "", false
}

// refresh returns the SVIDs for entries, reusing each held SVID that was
// issued for the same entry revision and is not yet due for refresh.
func (s *Server) refresh(ctx context.Context, snap *ca.Snapshot, entries []*ca.Entry, held []*ca.X509SVID) ([]*ca.X509SVID, bool, error) {
	now := time.Now()
	out := make([]*ca.X509SVID, len(entries))
	changed := len(entries) != len(held)
	for i, e := range entries {
		var reuse *ca.X509SVID
		for _, h := range held {
			// A revoked SVID is replaced at once, with a new key: the
			// legitimate holder keeps working while the stolen copy is dead.
			if h.EntryID == e.Record.ID && h.Revision == e.Record.Revision && now.Before(h.RefreshAt()) && snap.CheckRevocation(ca.X509Credential(h.ID, h.Serial)) == nil {
				reuse = h
				break
			}
		}
		if reuse == nil {
			svid, err := s.auth.SignX509SVID(ctx, snap, e)
			if err != nil {
				return nil, false, err
			}
			reuse, changed = svid, true
		}
		if i < len(held) && held[i] != reuse {
			changed = true
		}
		out[i] = reuse
	}
	return out, changed, nil
}

func x509Response(svids []*ca.X509SVID, snap *ca.Snapshot) *workload.X509SVIDResponse {
	crl, _ := snap.CRL()
	resp := &workload.X509SVIDResponse{Svids: make([]*workload.X509SVID, len(svids)), Crl: [][]byte{crl}}
	for i, sv := range svids {
		resp.Svids[i] = &workload.X509SVID{
			SpiffeId:    sv.ID.String(),
			X509Svid:    sv.CertChainDER,
			X509SvidKey: sv.KeyDER,
			Bundle:      snap.BundleDER(),
		}
	}
	return resp
}

// FetchX509Bundles streams the trust bundle: at once, then on every change.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	ctx := stream.Context()
	snap := s.auth.Snapshot()
	c, err := s.caller(ctx, snap)
	if err != nil {
		return err
	}
	defer s.mtr.StreamOpened(StreamX509Bundles)()
	var (
		sent    []byte
		sentCRL uint64
	)
	for {
		if _, err := s.match(c, snap); err != nil {
			return err
		}
		crl, crlNumber := snap.CRL()
		if crlNumber != sentCRL || !bytes.Equal(sent, snap.BundleDER()) {
			sent, sentCRL = snap.BundleDER(), crlNumber
			resp := &workload.X509BundlesResponse{
				Bundles: map[string][]byte{snap.TrustDomain().IDString(): sent},
				Crl:     [][]byte{crl},
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.quit:
			return errShutdown
		case <-snap.Done():
			snap = s.auth.Snapshot()
		}
	}
}
