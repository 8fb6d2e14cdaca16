package workload

// The JWT-SVID profile of the Workload API: FetchJWTSVID, FetchJWTBundles
// and ValidateJWTSVID, as the SPIFFE Workload API specification defines
// them. The caller is attested per call exactly as for X.509-SVIDs; signing
// and validation are the JWTIssuer's.

import (
	"context"
	"errors"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/badge-dev/badge/ca"
)

// JWTIssuer signs and validates JWT-SVIDs: *ca.Authority today, a remote
// client in an agent later.
type JWTIssuer interface {
	// SignJWTSVID returns a JWT-SVID for entry e of snapshot s with the
	// audience. It fails with ca.ErrBlocked for a blocked ID and with a
	// *ca.InvalidError for an unacceptable audience.
	SignJWTSVID(ctx context.Context, s *ca.Snapshot, e *ca.Entry, audience []string) (*ca.JWTSVID, error)
	// ValidateJWTSVID checks a token against the JWT bundle and the
	// revocations of s, and its audience. A refusal is a *ca.TokenError.
	ValidateJWTSVID(s *ca.Snapshot, token, audience string) (*ca.JWTClaims, error)
}

var errNoJWT = status.Error(codes.Unimplemented, "this server does not issue JWT-SVIDs")

// FetchJWTSVID returns a JWT-SVID for the requested audience for each
// SPIFFE ID the caller is entitled to (the default first), or only for
// req.SpiffeId when it is set.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if s.jwt == nil {
		return nil, errNoJWT
	}
	snap := s.auth.Snapshot()
	c, err := s.caller(ctx, snap)
	if err != nil {
		return nil, err
	}
	p := c.peer
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience is required")
	}
	var want spiffeid.ID
	if req.SpiffeId != "" {
		if want, err = spiffeid.FromString(req.SpiffeId); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid spiffe_id %q: %v", req.SpiffeId, err)
		}
	}
	entries, err := s.match(c, snap)
	if err != nil {
		return nil, err
	}
	resp := &workload.JWTSVIDResponse{Svids: make([]*workload.JWTSVID, 0, 1)}
	for i, e := range entries {
		if !want.IsZero() && e.ID != want {
			continue
		}
		if dupID(entries[:i], e) {
			continue // one token per SPIFFE ID
		}
		t, err := s.jwt.SignJWTSVID(ctx, snap, e, req.Audience)
		var inv *ca.InvalidError
		switch {
		case errors.Is(err, ca.ErrBlocked):
			continue // blocked since the snapshot was taken
		case errors.As(err, &inv):
			return nil, status.Error(codes.InvalidArgument, err.Error())
		case errors.As(err, new(*limitError)):
			return nil, err
		case err != nil:
			s.log.Error("signing JWT-SVID failed", slog.Int(ca.LogPID, int(p.PID)), slog.String(ca.LogSPIFFEID, e.ID.String()), slog.Any(ca.LogError, err))
			return nil, status.Errorf(codes.Unavailable, "signing JWT-SVID: %v", err)
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: t.ID.String(), Svid: t.Token})
	}
	if len(resp.Svids) > 0 {
		// Signing took a while: tokens go out only if the peer is still
		// the process that connected.
		if err := s.verify(c); err != nil {
			return nil, err
		}
	}
	if len(resp.Svids) == 0 {
		if !want.IsZero() {
			return nil, status.Errorf(codes.PermissionDenied, "the caller (pid %d, uid %d) is not entitled to %s", p.PID, p.UID, want)
		}
		// Every matching ID was blocked after the snapshot was taken.
		return nil, s.refuse(c, s.auth.Snapshot())
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.LogAttrs(ctx, slog.LevelDebug, "JWT-SVIDs sent", slog.Int(ca.LogPID, int(p.PID)), slog.Int(ca.LogUID, int(p.UID)),
			slog.String(ca.LogSPIFFEID, resp.Svids[0].SpiffeId), slog.Any("audience", req.Audience))
	}
	return resp, nil
}

func dupID(earlier []*ca.Entry, e *ca.Entry) bool {
	for _, o := range earlier {
		if o.ID == e.ID {
			return true
		}
	}
	return false
}

// FetchJWTBundles streams the JWT bundle of the trust domain, a JWK Set
// keyed by the trust domain's SPIFFE ID: at once, then whenever the JWT
// keys change.
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	if s.jwt == nil {
		return errNoJWT
	}
	ctx := stream.Context()
	snap := s.auth.Snapshot()
	c, err := s.caller(ctx, snap)
	if err != nil {
		return err
	}
	defer s.mtr.StreamOpened(StreamJWTBundles)()
	var sent []byte
	for {
		if _, err := s.match(c, snap); err != nil {
			return err
		}
		// The JWKS of a snapshot is shared until a key changes, so an
		// unchanged slice means an unchanged bundle.
		if jwks := snap.JWKS(); !sameBytes(sent, jwks) {
			resp := &workload.JWTBundlesResponse{Bundles: map[string][]byte{snap.TrustDomain().IDString(): jwks}}
			if err := stream.Send(resp); err != nil {
				return err
			}
			sent = jwks
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

// sameBytes reports whether a and b are the same bytes, quickly when they
// are the same slice.
func sameBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return string(a) == string(b)
}

// ValidateJWTSVID validates a token for the caller: signature against the
// JWT bundle, expiry, the audience, and revocation (which only the server
// sees). A refused token is InvalidArgument with the reason.
//
// As in SPIRE, the caller must be attested but needs no identity of its
// own: a service that only validates tokens needs no entry. A caller whose
// only matching entries name blocked IDs is refused, though: blocking is
// for a compromised workload, and the server then serves it nothing, so
// that a blocked service stops accepting token-authenticated requests as
// it stops getting SVIDs and tokens.
func (s *Server) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if s.jwt == nil {
		return nil, errNoJWT
	}
	snap := s.auth.Snapshot()
	cl, err := s.caller(ctx, snap)
	if err != nil {
		return nil, err
	}
	if err := s.refuseIfBlocked(cl, snap); err != nil {
		return nil, err
	}
	p := cl.peer
	switch {
	case req.Audience == "":
		return nil, status.Error(codes.InvalidArgument, "audience is required")
	case req.Svid == "":
		return nil, status.Error(codes.InvalidArgument, "svid is required")
	}
	c, err := s.jwt.ValidateJWTSVID(snap, req.Svid, req.Audience)
	if err != nil {
		var te *ca.TokenError
		if errors.As(err, &te) {
			s.log.Debug("JWT-SVID refused", slog.Int(ca.LogPID, int(p.PID)), slog.String("reason", string(te.Reason)))
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return nil, status.Errorf(codes.Internal, "validating JWT-SVID: %v", err)
	}
	claims, err := structpb.NewStruct(c.Claims)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: c.ID.String(), Claims: claims}, nil
}
