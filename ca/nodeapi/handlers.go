package nodeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/nodeproto"
	"github.com/badge-dev/badge/storage"
)

// handler implements the Node service. The interceptors (Server.unary,
// Server.stream) have already checked that the connection's class may
// make the call, and for a node that it may still act.
type handler struct {
	nodeproto.UnimplementedNodeServer
	s *Server
}

// errAttestRefused is all a refused agent learns: not whether its token
// was used, expired or unknown, nor that its node is evicted.
var errAttestRefused = status.Error(codes.PermissionDenied, "attestation refused")

func (h *handler) Attest(ctx context.Context, req *nodeproto.AttestRequest) (*nodeproto.AttestResponse, error) {
	s := h.s
	p, _ := peerOf(ctx)
	method := MethodJoinToken
	if p.class == X509PoP {
		method = MethodX509PoP
	}
	if wait := s.attempts.admit(p.addr); wait > 0 {
		s.metrics.NodeAttestation(method, ResultLimited)
		return nil, status.Errorf(codes.ResourceExhausted, "too many failed attestations from your address; retry in %s", wait.Round(time.Millisecond))
	}
	if p.class == X509PoP {
		// A host certificate attests as often as it is presented: each
		// attestation writes to the store, so it costs the node's bucket.
		if err := s.lim.sign(p.node); err != nil {
			s.metrics.NodeAttestation(method, ResultLimited)
			return nil, err
		}
	}
	// The CSR is checked before the token is spent. A bad one costs the
	// address a backoff too: checking it costs a signature verification.
	if _, err := ca.ParseCSR(req.GetCsr()); err != nil {
		s.attempts.fail(p.addr)
		s.metrics.NodeAttestation(method, ResultInvalid)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var (
		node storage.Node
		svid *ca.X509SVID
		err  error
	)
	switch p.class {
	case Anonymous:
		if req.GetJoinToken() == "" {
			s.refuseAttest(ctx, p, method, "no proof", errors.New("no join token and no host certificate"))
			return nil, status.Error(codes.PermissionDenied, "attestation refused: present a join token, or a host certificate of a node CA in the TLS handshake")
		}
		// The node SVID is signed before the token is spent: a failure
		// leaves the token usable.
		node, svid, err = s.auth.AttestJoinToken(ctx, req.GetJoinToken(), req.GetCsr(), s.nodeTTL)
		if errors.Is(err, ca.ErrJoinTokenRefused) {
			s.refuseAttest(ctx, p, method, tokenReason(err), err)
			return nil, errAttestRefused
		}
	case X509PoP:
		if req.GetJoinToken() != "" {
			s.metrics.NodeAttestation(method, ResultInvalid)
			return nil, status.Error(codes.InvalidArgument, "give a join token or a host certificate, not both")
		}
		node, err = s.auth.RegisterNode(ctx, ca.NodeAttestation{Name: p.node, Method: storage.AttestX509PoP, ProofNotBefore: p.proofNotBefore})
		if err == nil {
			svid, err = s.auth.SignNodeSVID(ctx, node.Name, req.GetCsr(), s.nodeTTL)
		}
	}
	if errors.Is(err, ca.ErrNodeEvicted) {
		// Evicted (or its node SVID ID blocked), before or since the
		// attestation.
		s.refuseAttest(ctx, p, method, "evicted", err)
		return nil, errAttestRefused
	}
	if err != nil {
		return nil, s.internal(ctx, method, "attestation", err)
	}
	s.attempts.succeed(p.addr)
	s.metrics.NodeAttestation(method, ResultOK)
	s.metrics.NodeSigned(KindNodeSVID)
	s.log.Info("node attested", slog.String(logkey.Node, node.Name), slog.String("attestation", method),
		slog.String("remote", remoteOf(ctx)), slog.String(logkey.Serial, svid.Serial), slog.Bool(logkey.Audit, true))
	s.auth.Audit(context.WithoutCancel(ctx), ca.AuditEvent{AdminUID: s.euid, Action: ca.AuditNodeAttest, Target: node.Name,
		Detail: fmt.Sprintf("method=%s address=%s serial=%s", method, p.addr, svid.Serial)})
	chain, err := splitDER(svid.CertChainDER)
	if err != nil {
		return nil, s.internal(ctx, method, "encoding the node SVID", err)
	}
	return &nodeproto.AttestResponse{NodeName: node.Name, Svid: chain, Bundle: bundleOf(s.auth.Snapshot())}, nil
}

// tokenReason is why a join token was refused, for the log.
func tokenReason(err error) string {
	switch {
	case errors.Is(err, storage.ErrTokenUsed):
		return "token used"
	case errors.Is(err, storage.ErrTokenExpired):
		return "token expired"
	}
	return "token unknown"
}

func (h *handler) RenewNode(ctx context.Context, req *nodeproto.RenewNodeRequest) (*nodeproto.RenewNodeResponse, error) {
	s := h.s
	p, _ := peerOf(ctx)
	if err := s.lim.sign(p.node); err != nil {
		return nil, err
	}
	svid, err := s.auth.SignNodeSVID(ctx, p.node, req.GetCsr(), s.nodeTTL)
	switch {
	case errors.Is(err, ca.ErrCSR):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ca.ErrNodeEvicted):
		return nil, status.Errorf(codes.PermissionDenied, "node %s is evicted", p.node)
	case err != nil:
		return nil, s.internal(ctx, p.node, "renewing the node SVID", err)
	}
	s.metrics.NodeSigned(KindNodeSVID)
	s.log.Debug("node SVID renewed", slog.String(logkey.Node, p.node), slog.String(logkey.Serial, svid.Serial))
	chain, err := splitDER(svid.CertChainDER)
	if err != nil {
		return nil, s.internal(ctx, p.node, "encoding the node SVID", err)
	}
	return &nodeproto.RenewNodeResponse{Svid: chain, Bundle: bundleOf(s.auth.Snapshot())}, nil
}

func (h *handler) Sync(_ *nodeproto.SyncRequest, stream grpc.ServerStreamingServer[nodeproto.SyncUpdate]) error {
	s := h.s
	ctx := stream.Context()
	p, _ := peerOf(ctx)
	var last *nodeproto.SyncUpdate
	for {
		snap := s.auth.Snapshot()
		if err := s.checkNode(snap, p.verdict, s.now()); err != nil {
			return nodeStatus(err)
		}
		u := s.update(snap, p.node)
		if last == nil || !proto.Equal(u, last) {
			last = u
			sent := proto.CloneOf(u)
			sent.Revision = s.revision.Add(1)
			// Send blocks while the agent does not read: the next state
			// sent is then the newest, whatever changed meanwhile.
			if err := stream.Send(sent); err != nil {
				return err
			}
		}
		select {
		case <-snap.Done():
		case <-p.conn.ended:
			return nodeStatus(p.conn.why)
		case <-s.stop:
			return status.Error(codes.Unavailable, "the server is shutting down")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// update is the state node serves in snap, without a revision.
func (s *Server) update(snap *ca.Snapshot, node string) *nodeproto.SyncUpdate {
	entries := snap.NodeEntries(node)
	u := &nodeproto.SyncUpdate{
		TrustDomain:    snap.TrustDomain().Name(),
		Entries:        make([]*nodeproto.Entry, len(entries)),
		Bundle:         bundleOf(snap),
		JwtBundle:      snap.JWKS(),
		SvidTtlSeconds: int64(s.auth.TTLs().SVID / time.Second),
	}
	u.Crl, _ = snap.CRL()
	for i, e := range entries {
		r := e.Record
		u.Entries[i] = &nodeproto.Entry{
			Id: r.ID, SpiffeId: r.SPIFFEID, Selectors: r.Selectors, TtlSeconds: int64(r.TTL / time.Second),
			DnsNames: r.DNSNames, Revision: r.Revision, Blocked: e.Blocked, CreatedUnix: r.CreatedAt.Unix(),
		}
	}
	return u
}

// entry returns the entry of id the calling node may be signed for, or
// the status refusing it.
func (s *Server) entry(ctx context.Context, snap *ca.Snapshot, node, id string, revision uint64, checkRevision bool) (*ca.Entry, error) {
	e, ok := snap.NodeEntry(node, id)
	if !ok {
		s.log.Warn("node asked for an entry not scoped to it", slog.String(logkey.Node, node), slog.String(logkey.EntryID, id),
			slog.String("remote", remoteOf(ctx)), slog.Bool(logkey.Audit, true))
		return nil, status.Errorf(codes.PermissionDenied, "entry %q is not served by node %s", id, node)
	}
	if checkRevision && e.Record.Revision != revision {
		return nil, status.Errorf(codes.FailedPrecondition, "entry %s is at revision %d, not %d: wait for the next Sync update", id, e.Record.Revision, revision)
	}
	if e.Blocked {
		return nil, status.Errorf(codes.PermissionDenied, "%s is blocked", e.ID)
	}
	return e.Entry, nil
}

func (h *handler) SignX509(ctx context.Context, req *nodeproto.SignX509Request) (*nodeproto.SignX509Response, error) {
	s := h.s
	p, _ := peerOf(ctx)
	snap := s.auth.Snapshot()
	e, err := s.entry(ctx, snap, p.node, req.GetEntryId(), req.GetEntryRevision(), true)
	if err != nil {
		return nil, err
	}
	if err := s.lim.sign(p.node); err != nil {
		return nil, err
	}
	svid, err := s.auth.SignCSR(ctx, snap, e, req.GetCsr())
	switch {
	case errors.Is(err, ca.ErrCSR):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ca.ErrBlocked):
		return nil, status.Errorf(codes.PermissionDenied, "%s is blocked", e.ID)
	case err != nil:
		return nil, s.internal(ctx, p.node, "signing an X.509-SVID", err)
	}
	s.metrics.NodeSigned(KindX509)
	chain, err := splitDER(svid.CertChainDER)
	if err != nil {
		return nil, s.internal(ctx, p.node, "encoding an X.509-SVID", err)
	}
	return &nodeproto.SignX509Response{Svid: chain}, nil
}

func (h *handler) SignJWT(ctx context.Context, req *nodeproto.SignJWTRequest) (*nodeproto.SignJWTResponse, error) {
	s := h.s
	p, _ := peerOf(ctx)
	snap := s.auth.Snapshot()
	e, err := s.entry(ctx, snap, p.node, req.GetEntryId(), 0, false)
	if err != nil {
		return nil, err
	}
	if err := s.lim.sign(p.node); err != nil {
		return nil, err
	}
	t, err := s.auth.SignJWTSVID(ctx, snap, e, req.GetAudience())
	var inv *ca.InvalidError
	switch {
	case errors.As(err, &inv):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ca.ErrBlocked):
		return nil, status.Errorf(codes.PermissionDenied, "%s is blocked", e.ID)
	case err != nil:
		return nil, s.internal(ctx, p.node, "signing a JWT-SVID", err)
	}
	s.metrics.NodeSigned(KindJWT)
	return &nodeproto.SignJWTResponse{Token: t.Token}, nil
}

func (h *handler) ValidateJWT(ctx context.Context, req *nodeproto.ValidateJWTRequest) (*nodeproto.ValidateJWTResponse, error) {
	s := h.s
	if req.GetAudience() == "" {
		return nil, status.Error(codes.InvalidArgument, "audience is required")
	}
	c, err := s.auth.ValidateJWTSVID(s.auth.Snapshot(), req.GetToken(), req.GetAudience())
	if err != nil {
		var te *ca.TokenError
		if errors.As(err, &te) {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		p, _ := peerOf(ctx)
		return nil, s.internal(ctx, p.node, "validating a JWT-SVID", err)
	}
	claims, err := json.Marshal(c.Claims)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding the claims: %v", err)
	}
	return &nodeproto.ValidateJWTResponse{SpiffeId: c.ID.String(), ClaimsJson: claims}, nil
}

// internal logs an unexpected error and returns an Internal status that
// says what failed, not why.
func (s *Server) internal(ctx context.Context, who, what string, err error) error {
	s.log.Error("agent listener: "+what+" failed", slog.String("caller", who), slog.String("remote", remoteOf(ctx)), slog.Any(logkey.Error, err))
	return status.Errorf(codes.Internal, "%s failed", what)
}

// remoteOf is the address of the caller, for the log.
func remoteOf(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// bundleOf is the trust bundle of snap, one DER certificate each.
func bundleOf(snap *ca.Snapshot) [][]byte {
	roots := snap.Bundle().X509Authorities()
	out := make([][]byte, len(roots))
	for i, c := range roots {
		out[i] = c.Raw
	}
	return out
}

// splitDER splits concatenated DER certificates without parsing them.
func splitDER(b []byte) ([][]byte, error) {
	var out [][]byte
	in := cryptobyte.String(b)
	for !in.Empty() {
		var c cryptobyte.String
		if !in.ReadASN1Element(&c, cbasn1.SEQUENCE) {
			return nil, errors.New("nodeapi: a certificate chain is not concatenated DER")
		}
		out = append(out, c)
	}
	return out, nil
}
