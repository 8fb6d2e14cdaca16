package ca

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca/workload"
)

// WorkloadSource serves the Workload API of the server's own socket from
// the authority: it is the workload.Source and workload.JWTSource of
// `badge server`. It matches callers against the current snapshot's entries
// (those not scoped to nodes), and owns the reuse policy of the X.509-SVIDs
// a stream holds: one is handed out again while it was issued for the same
// entry revision by the current intermediate, is short of half its life on
// the authority's clock (Config.Time), and is not revoked; otherwise it is
// replaced at once, with a new key.
//
// The intermediate matters because the current intermediate signs the CRL,
// and a workload can verify a CRL only against the CAs it knows: the roots
// and the intermediates of its own SVID chains. A workload still holding
// an SVID of the previous intermediate would reject every CRL signed after
// a rotation, and honour no revocation made since, until its SVID reached
// half its life.
type WorkloadSource struct {
	a *Authority
}

// WorkloadSource returns the source of the server's own Workload API.
func (a *Authority) WorkloadSource() *WorkloadSource { return &WorkloadSource{a: a} }

// Authority returns the authority w serves from.
func (w *WorkloadSource) Authority() *Authority { return w.a }

var (
	_ workload.Source    = (*WorkloadSource)(nil)
	_ workload.JWTSource = (*WorkloadSource)(nil)
)

// Kinds returns the selector kinds the entries of unblocked IDs use.
func (w *WorkloadSource) Kinds() attest.Kind { return w.a.Snapshot().Kinds() }

// Check answers whether the caller matches an entry of an unblocked ID.
func (w *WorkloadSource) Check(_ context.Context, c workload.Caller) error {
	_, err := w.a.Snapshot().matcher.MatchCaller(&c)
	return err
}

// X509 returns the SVIDs the caller should hold now.
func (w *WorkloadSource) X509(ctx context.Context, req workload.X509Request) (workload.X509Update, error) {
	for {
		s := w.a.Snapshot()
		for _, h := range req.Held {
			if r, ok := s.Revoked(h.ID); ok && r.Blocked {
				return workload.X509Update{}, &workload.BlockedError{IDs: []string{h.ID.String()}, Held: true}
			}
		}
		entries, err := s.matcher.MatchCaller(&req.Caller)
		if err != nil {
			return workload.X509Update{}, err
		}
		svids, refreshAt, err := w.refresh(ctx, s, entries, req)
		if errors.Is(err, ErrBlocked) {
			// Blocked between the snapshot and the signing; the next
			// snapshot no longer matches the entry (and ends the stream
			// if it held an SVID of it).
			continue
		}
		if err != nil {
			return workload.X509Update{}, err
		}
		crl, _ := s.CRL()
		return workload.X509Update{SVIDs: svids, Bundle: s.BundleDER(), CRL: crl, RefreshAt: refreshAt, Done: s.Done()}, nil
	}
}

// refresh returns the SVIDs for entries, reusing each held SVID that was
// issued for the same entry revision by the current intermediate, is not
// yet due for refresh and is not revoked, and the earliest time one of
// them is due.
func (w *WorkloadSource) refresh(ctx context.Context, s *Snapshot, entries []*Entry, req workload.X509Request) ([]workload.X509SVID, time.Time, error) {
	now := w.a.cfg.Time()
	out := make([]workload.X509SVID, len(entries))
	var refreshAt time.Time
	for i, e := range entries {
		reused := false
		for _, h := range req.Held {
			// A revoked SVID is replaced at once, with a new key: the
			// legitimate holder keeps working while the stolen copy is dead.
			// One of a previous intermediate is replaced too: the CRL is
			// signed by the current one, which the holder must know.
			if h.EntryID == e.Record.ID && h.Revision == e.Record.Revision && now.Before(refreshOf(h.NotBefore, h.NotAfter)) &&
				bytes.HasSuffix(h.CertChainDER, s.chainDER) && s.CheckRevocation(X509Credential(h.ID, h.Serial)) == nil {
				out[i], reused = h, true
				break
			}
		}
		if !reused {
			if req.Budget != nil {
				if err := req.Budget.SignX509(ctx); err != nil {
					return nil, time.Time{}, err
				}
			}
			sv, err := w.a.SignX509SVID(ctx, s, e)
			if err != nil {
				return nil, time.Time{}, err
			}
			out[i] = workload.X509SVID{ID: sv.ID, EntryID: sv.EntryID, Revision: sv.Revision, CertChainDER: sv.CertChainDER,
				KeyDER: sv.KeyDER, Serial: sv.Serial, NotBefore: sv.NotBefore, NotAfter: sv.NotAfter}
		}
		if r := refreshOf(out[i].NotBefore, out[i].NotAfter); i == 0 || r.Before(refreshAt) {
			refreshAt = r
		}
	}
	return out, refreshAt, nil
}

// refreshOf is X509SVID.RefreshAt for an SVID valid from notBefore to notAfter.
func refreshOf(notBefore, notAfter time.Time) time.Time {
	return (&X509SVID{NotBefore: notBefore, NotAfter: notAfter}).RefreshAt()
}

// Bundles returns the trust bundle, the JWT bundle and the CRL.
func (w *WorkloadSource) Bundles(context.Context) workload.Bundles {
	s := w.a.Snapshot()
	td := s.TrustDomain().IDString()
	crl, _ := s.CRL()
	return workload.Bundles{
		X509: map[string][]byte{td: s.BundleDER()},
		JWT:  map[string][]byte{td: s.JWKS()},
		CRL:  crl,
		Done: s.Done(),
	}
}

// SignJWT returns a JWT-SVID per SPIFFE ID the caller matches (or only for
// req.ID); tokens are cached by the authority (SignJWTSVID).
func (w *WorkloadSource) SignJWT(ctx context.Context, req workload.JWTRequest) ([]workload.JWTSVID, error) {
	s := w.a.Snapshot()
	entries, err := s.matcher.MatchPerID(&req.Caller, req.ID) // one token per SPIFFE ID
	if err != nil {
		return nil, err
	}
	out := make([]workload.JWTSVID, 0, 1)
	for _, e := range entries {
		if req.Budget != nil {
			if err := req.Budget.SignJWT(ctx); err != nil {
				return nil, err
			}
		}
		t, err := w.a.SignJWTSVID(ctx, s, e, req.Audience)
		var inv *InvalidError
		switch {
		case errors.Is(err, ErrBlocked):
			continue // blocked since the snapshot was taken
		case errors.As(err, &inv):
			return nil, &workload.InvalidError{Reason: "audience", Err: err}
		case err != nil:
			return nil, err
		}
		if req.Budget != nil {
			req.Budget.SignedJWT(ctx, t.IssuedAt)
		}
		out = append(out, workload.JWTSVID{ID: t.ID, Token: t.Token})
	}
	if len(out) == 0 && req.ID.IsZero() {
		// Every matching ID was blocked after the snapshot was taken.
		return nil, w.a.Snapshot().matcher.Refusal(&req.Caller)
	}
	return out, nil
}

// ValidateJWT checks a token against the JWT bundle and the revocations of
// the current snapshot (Authority.ValidateJWTSVID).
func (w *WorkloadSource) ValidateJWT(_ context.Context, token, audience string) (workload.JWTClaims, error) {
	c, err := w.a.ValidateJWTSVID(w.a.Snapshot(), token, audience)
	if err != nil {
		var te *TokenError
		if errors.As(err, &te) {
			return workload.JWTClaims{}, &workload.InvalidError{Reason: string(te.Reason), Err: err}
		}
		return workload.JWTClaims{}, err
	}
	return workload.JWTClaims{ID: c.ID, Claims: c.Claims}, nil
}
