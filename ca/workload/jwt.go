package workload

// The JWT-SVID profile of the Workload API: FetchJWTSVID, FetchJWTBundles
// and ValidateJWTSVID, as the SPIFFE Workload API specification defines
// them. The caller is attested per call exactly as for X.509-SVIDs; signing
// and validation are the JWTSource's.

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

	"github.com/badge-dev/badge/internal/logkey"
)

var errNoJWT = status.Error(codes.Unimplemented, "this server does not issue JWT-SVIDs")

// FetchJWTSVID returns a JWT-SVID for the requested audience for each
// SPIFFE ID the caller is entitled to (the default first), or only for
// req.SpiffeId when it is set.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if s.jwt == nil {
		return nil, errNoJWT
	}
	c, err := s.caller(ctx)
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
	if err := s.ready(c); err != nil {
		return nil, err
	}
	var tokens []JWTSVID
	for {
		tokens, err = s.jwt.SignJWT(ctx, JWTRequest{Caller: c.plain(), Audience: req.Audience, ID: want, Budget: &jwtBudget{limiter: s.lim}})
		if again, aerr := s.again(c, err); aerr != nil {
			return nil, aerr
		} else if again {
			continue
		}
		break
	}
	if err != nil {
		return nil, s.failed(c, err, "signing JWT-SVID")
	}
	if len(tokens) == 0 {
		if want.IsZero() { // a Source refuses rather than answer nothing
			return nil, s.failed(c, ErrNotRegistered, "signing JWT-SVID")
		}
		return nil, status.Errorf(codes.PermissionDenied, "the caller (pid %d, uid %d) is not entitled to %s", p.PID, p.UID, want)
	}
	// Signing took a while: tokens go out only if the peer is still the
	// process that connected.
	if err := s.verify(c); err != nil {
		return nil, err
	}
	resp := &workload.JWTSVIDResponse{Svids: make([]*workload.JWTSVID, len(tokens))}
	for i, t := range tokens {
		resp.Svids[i] = &workload.JWTSVID{SpiffeId: t.ID.String(), Svid: t.Token}
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.LogAttrs(ctx, slog.LevelDebug, "JWT-SVIDs sent", slog.Int(logkey.PID, int(p.PID)), slog.Int(logkey.UID, int(p.UID)),
			slog.String(logkey.SPIFFEID, resp.Svids[0].SpiffeId), slog.Any("audience", req.Audience))
	}
	return resp, nil
}

// FetchJWTBundles streams the JWT bundle of the trust domain, a JWK Set
// keyed by the trust domain's SPIFFE ID: at once, then whenever the JWT
// keys change.
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	if s.jwt == nil {
		return errNoJWT
	}
	ctx := stream.Context()
	c, err := s.caller(ctx)
	if err != nil {
		return err
	}
	defer s.mtr.StreamOpened(StreamJWTBundles)()
	var sent map[string][]byte
	for {
		// The bundles first, as in FetchX509Bundles.
		b := s.src.Bundles(ctx)
		if err := s.check(ctx, c, false); err != nil {
			return err
		}
		// A Source shares a JWK Set until a key changes, so an unchanged
		// slice means an unchanged bundle.
		if sent == nil || !sameBundles(sent, b.JWT) {
			if err := stream.Send(&workload.JWTBundlesResponse{Bundles: b.JWT}); err != nil {
				return err
			}
			sent = b.JWT
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
	cl, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.check(ctx, cl, true); err != nil {
		return nil, err
	}
	p := cl.peer
	switch {
	case req.Audience == "":
		return nil, status.Error(codes.InvalidArgument, "audience is required")
	case req.Svid == "":
		return nil, status.Error(codes.InvalidArgument, "svid is required")
	}
	c, err := s.jwt.ValidateJWT(ctx, req.Svid, req.Audience)
	if err != nil {
		var inv *InvalidError
		if errors.As(err, &inv) {
			s.log.Debug("JWT-SVID refused", slog.Int(logkey.PID, int(p.PID)), slog.String("reason", inv.Reason))
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
