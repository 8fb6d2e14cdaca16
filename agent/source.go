package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/keypool"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/nodeproto"
)

// Source serves the Workload API of the agent's host: it is the
// workload.Source and workload.JWTSource of `badge agent`. It matches
// callers against the latest State, and owns the same reuse policy as the
// server's own socket (ca.WorkloadSource): an SVID a stream holds is handed
// out again while it was issued for the same entry revision by the CA that
// signed the CRL, is short of half its life and is not in the CRL;
// otherwise it is replaced, with a new key made here and a CSR the server
// signs (SignX509). The workload's key never leaves the host.
//
// While no server answers, a stream keeps the SVIDs it holds until they
// expire; a caller that holds none is refused with Unavailable.
type Source struct {
	a *Agent
}

var (
	_ workload.Source    = (*Source)(nil)
	_ workload.JWTSource = (*Source)(nil)
)

// Source returns the Workload API source of the agent.
func (a *Agent) Source() *Source { return &Source{a: a} }

// staleWait bounds the wait for the next Sync update after the server
// said an entry revision is stale.
const staleWait = 5 * time.Second

// Kinds returns the selector kinds the entries of unblocked IDs use.
func (s *Source) Kinds() attest.Kind { return s.a.State().Kinds() }

// matchCaller returns the entries of st the caller matches, or the
// refusal: Unavailable before the first Sync update.
func matchCaller(st *State, c *workload.Caller) ([]*entry, error) {
	if !st.synced {
		return nil, errNoServer
	}
	return st.matcher.MatchCaller(c)
}

// Check answers whether the caller matches an entry of an unblocked ID.
// While no server answers it refuses every caller with Unavailable: a new
// bundle stream or a token validation waits for the server, and `badge
// healthcheck` reports the agent as not ready.
func (s *Source) Check(_ context.Context, c workload.Caller) error {
	if s.a.conn.Load() == nil {
		return errNoServer
	}
	_, err := matchCaller(s.a.State(), &c)
	return err
}

// X509 returns the SVIDs the caller should hold now.
func (s *Source) X509(ctx context.Context, req workload.X509Request) (workload.X509Update, error) {
	for retried := false; ; retried = true {
		st := s.a.State()
		for _, h := range req.Held {
			if st.Blocked(h.ID) {
				return workload.X509Update{}, &workload.BlockedError{IDs: []string{h.ID.String()}, Held: true}
			}
		}
		entries, err := matchCaller(st, &req.Caller)
		if err != nil {
			return workload.X509Update{}, err
		}
		svids, refreshAt, err := s.refresh(ctx, st, entries, req)
		if c := status.Code(err); !retried && (c == codes.FailedPrecondition || c == codes.PermissionDenied) {
			// The server has newer entries (or blocked the ID) than this
			// state: wait for the update that says so, and ask once more.
			s.a.log.Debug("SVID refused as stale; waiting for the next sync update", slog.Any(logkey.Error, err))
			t := time.NewTimer(staleWait)
			select {
			case <-st.done:
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return workload.X509Update{}, ctx.Err()
			}
			t.Stop()
			continue
		}
		if err != nil {
			return workload.X509Update{}, err
		}
		return workload.X509Update{SVIDs: svids, Bundle: st.bundleDER, CRL: st.crl, RefreshAt: refreshAt, Done: st.done}, nil
	}
}

// refresh returns the SVIDs for entries, reusing each held SVID issued for
// the same entry revision that is not yet due for refresh and not revoked,
// and the earliest time one of them is due. While no server answers, a
// held SVID of the same entry is handed out again until it expires.
func (s *Source) refresh(ctx context.Context, st *State, entries []*entry, req workload.X509Request) ([]workload.X509SVID, time.Time, error) {
	now := s.a.now()
	out := make([]workload.X509SVID, len(entries))
	var refreshAt time.Time
	for i, e := range entries {
		reused := false
		for _, h := range req.Held {
			// A revoked SVID is replaced at once, with a new key: the
			// legitimate holder keeps working while the stolen copy is dead.
			// So is one of a CA that did not sign the CRL (the server's
			// intermediate rotated), which the holder could not verify.
			if h.EntryID == e.id && h.Revision == e.revision && now.Before(refreshOf(h.NotBefore, h.NotAfter)) && !st.Revoked(h.Serial) &&
				st.CRLVerifies(h.CertChainDER) {
				out[i], reused = h, true
				break
			}
		}
		due := time.Time{}
		if !reused {
			sv, err := s.sign(ctx, e, req.Budget)
			if isOffline(err) {
				if h, ok := keepWhileOffline(req.Held, e, st, now); ok {
					out[i], reused = h, true
					due = h.NotAfter // or sooner: a reconnection publishes a new State
				}
			}
			if !reused {
				if err != nil {
					return nil, time.Time{}, err
				}
				out[i] = sv
			}
		}
		if due.IsZero() {
			due = refreshOf(out[i].NotBefore, out[i].NotAfter)
		}
		if i == 0 || due.Before(refreshAt) {
			refreshAt = due
		}
	}
	return out, refreshAt, nil
}

// keepWhileOffline returns the held SVID of entry e, if one is unexpired
// and not revoked: what a stream keeps while no server answers.
func keepWhileOffline(held []workload.X509SVID, e *entry, st *State, now time.Time) (workload.X509SVID, bool) {
	for _, h := range held {
		if h.EntryID == e.id && now.Before(h.NotAfter) && !st.Revoked(h.Serial) {
			return h, true
		}
	}
	return workload.X509SVID{}, false
}

// isOffline reports whether err says that no server answered.
func isOffline(err error) bool {
	if err == nil {
		return false
	}
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded)
}

// sign takes a fresh key (made ahead of demand with its CSR; see
// workloadKey) for entry e and has the server sign an SVID for it,
// charging budget first.
func (s *Source) sign(ctx context.Context, e *entry, budget workload.Budget) (workload.X509SVID, error) {
	l := s.a.conn.Load()
	if l == nil {
		return workload.X509SVID{}, errNoServer
	}
	if budget != nil {
		if err := budget.SignX509(ctx); err != nil {
			return workload.X509SVID{}, err
		}
	}
	key, err := s.a.keys.Take()
	if err != nil {
		return workload.X509SVID{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.a.cfg.DialTimeout)
	defer cancel()
	resp, err := l.client.SignX509(ctx, &nodeproto.SignX509Request{EntryId: e.id, EntryRevision: e.revision, Csr: key.csr})
	if err != nil {
		return workload.X509SVID{}, serverError(l.addr, err)
	}
	return svidOf(e, key, resp.GetSvid(), &s.a.issuers)
}

// serverError keeps the status of an error of a server, naming the server.
func serverError(addr string, err error) error {
	st := status.Convert(err)
	return status.Errorf(st.Code(), "badge server %s: %s", addr, st.Message())
}

// svidOf checks what the server signed for key and entry e: the leaf must
// certify key and name e's SPIFFE ID, and the certificates after it must
// parse (those of the last chain, issuers, are not parsed again).
func svidOf(e *entry, key workloadKey, chainDER [][]byte, issuers *issuerCache) (workload.X509SVID, error) {
	if len(chainDER) == 0 {
		return workload.X509SVID{}, fmt.Errorf("the server sent an unusable SVID for entry %s: no certificate", e.id)
	}
	leaf, err := x509.ParseCertificate(chainDER[0])
	if err != nil {
		err = fmt.Errorf("certificate 0: %v", err)
	} else {
		err = issuers.check(chainDER[1:])
	}
	if err != nil {
		return workload.X509SVID{}, fmt.Errorf("the server sent an unusable SVID for entry %s: %v", e.id, err)
	}
	if !publicKeyEqual(leaf.PublicKey, key.key.Public()) {
		return workload.X509SVID{}, fmt.Errorf("the server sent an SVID for entry %s that does not certify the key sent", e.id)
	}
	if id, err := x509svid.IDFromCert(leaf); err != nil || id != e.spiffeID {
		return workload.X509SVID{}, fmt.Errorf("the server sent an SVID for entry %s naming %v, want %s", e.id, id, e.spiffeID)
	}
	return workload.X509SVID{ID: e.spiffeID, EntryID: e.id, Revision: e.revision, CertChainDER: bytes.Join(chainDER, nil), KeyDER: key.der,
		Serial: leaf.SerialNumber.Text(16), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}, nil
}

// issuerCache remembers the certificates after the leaf of the last chain
// the server signed (the intermediate CA, the same bytes from one SVID to
// the next until the server's signing key rotates), once they parsed: a
// chain that ends with the same bytes is not parsed again. Safe for
// concurrent use.
type issuerCache struct {
	last atomic.Pointer[[][]byte]
}

// check returns nil if every one of ders (the certificates after a leaf)
// parses: at once if they are the bytes of the last that did.
func (c *issuerCache) check(ders [][]byte) error {
	if last := c.last.Load(); last != nil && slices.EqualFunc(*last, ders, bytes.Equal) {
		return nil
	}
	for i, der := range ders {
		if _, err := x509.ParseCertificate(der); err != nil {
			return fmt.Errorf("certificate %d: %v", i+1, err)
		}
	}
	kept := make([][]byte, len(ders))
	for i, der := range ders {
		kept[i] = bytes.Clone(der)
	}
	c.last.Store(&kept)
	return nil
}

// Bundles returns the trust bundle, the JWT bundle and the CRL.
func (s *Source) Bundles(context.Context) workload.Bundles {
	st := s.a.State()
	if !st.synced {
		return workload.Bundles{Done: st.done}
	}
	td := st.td.IDString()
	b := workload.Bundles{X509: map[string][]byte{td: st.bundleDER}, CRL: st.crl, Done: st.done}
	if len(st.jwtBundle) > 0 {
		b.JWT = map[string][]byte{td: st.jwtBundle}
	}
	return b
}

// SignJWT returns a JWT-SVID per SPIFFE ID the caller matches (or only for
// req.ID), signed by the server.
func (s *Source) SignJWT(ctx context.Context, req workload.JWTRequest) ([]workload.JWTSVID, error) {
	st := s.a.State()
	if !st.synced {
		return nil, errNoServer
	}
	entries, err := st.matcher.MatchPerID(&req.Caller, req.ID) // one token per SPIFFE ID
	if err != nil {
		return nil, err
	}
	out := make([]workload.JWTSVID, 0, 1)
	for _, e := range entries {
		l := s.a.conn.Load()
		if l == nil {
			return nil, errNoServer
		}
		if req.Budget != nil {
			if err := req.Budget.SignJWT(ctx); err != nil {
				return nil, err
			}
		}
		rctx, cancel := context.WithTimeout(ctx, s.a.cfg.DialTimeout)
		resp, err := l.client.SignJWT(rctx, &nodeproto.SignJWTRequest{EntryId: e.id, Audience: req.Audience})
		cancel()
		switch status.Code(err) {
		case codes.OK:
		case codes.PermissionDenied:
			continue // blocked (or unscoped) since the state was taken
		case codes.InvalidArgument:
			return nil, &workload.InvalidError{Reason: "audience", Err: errors.New(status.Convert(err).Message())}
		default:
			return nil, serverError(l.addr, err)
		}
		if req.Budget != nil {
			req.Budget.SignedJWT(ctx, issuedAt(resp.GetToken(), s.a.now()))
		}
		out = append(out, workload.JWTSVID{ID: e.spiffeID, Token: resp.GetToken()})
	}
	if len(out) == 0 && req.ID.IsZero() {
		return nil, s.a.State().matcher.Refusal(&req.Caller)
	}
	return out, nil
}

// issuedAt returns the iat claim of a JWT, or otherwise when it cannot be
// read.
func issuedAt(token string, otherwise time.Time) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return otherwise
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return otherwise
	}
	var c struct {
		IAT *int64 `json:"iat"`
	}
	if json.Unmarshal(payload, &c) != nil || c.IAT == nil {
		return otherwise
	}
	return time.Unix(*c.IAT, 0)
}

// ValidateJWT has the server validate a token: it alone sees every
// revocation.
func (s *Source) ValidateJWT(ctx context.Context, token, audience string) (workload.JWTClaims, error) {
	l := s.a.conn.Load()
	if l == nil {
		return workload.JWTClaims{}, errNoServer
	}
	ctx, cancel := context.WithTimeout(ctx, s.a.cfg.DialTimeout)
	defer cancel()
	resp, err := l.client.ValidateJWT(ctx, &nodeproto.ValidateJWTRequest{Token: token, Audience: audience})
	if status.Code(err) == codes.InvalidArgument || status.Code(err) == codes.PermissionDenied {
		return workload.JWTClaims{}, &workload.InvalidError{Reason: "refused", Err: errors.New(status.Convert(err).Message())}
	}
	if err != nil {
		return workload.JWTClaims{}, serverError(l.addr, err)
	}
	id, err := spiffeid.FromString(resp.GetSpiffeId())
	if err != nil {
		return workload.JWTClaims{}, fmt.Errorf("the server validated a token of SPIFFE ID %q: %v", resp.GetSpiffeId(), err)
	}
	var claims map[string]any
	if err := json.Unmarshal(resp.GetClaimsJson(), &claims); err != nil {
		return workload.JWTClaims{}, fmt.Errorf("the server sent claims that are not a JSON object: %v", err)
	}
	return workload.JWTClaims{ID: id, Claims: claims}, nil
}

// workloadKeyPoolSize is how many workload keys the agent keeps made ahead
// of demand: the first fetches of a few workloads starting together do not
// wait for a key and its CSR, few private keys wait in memory, and an
// agent's start costs little. The pool cuts latency, not CPU: under a
// stream of fresh fetches faster than keys are made it is empty, and keys
// are made inline.
const workloadKeyPoolSize = 4

// workloadKey is a workload's key made ahead of demand with what a fetch
// sends and hands out: its PKCS#8 encoding (DER) and a PKCS#10 request
// for it (DER). The request carries no names, since the server takes only
// its public key, after checking its signature (the proof of possession).
type workloadKey struct {
	key      *ecdsa.PrivateKey
	der, csr []byte
}

// newWorkloadKey makes a workload key, its encoding and its request.
func newWorkloadKey() (workloadKey, error) {
	k, err := keypool.NewP256()
	if err != nil {
		return workloadKey{}, err
	}
	csr, err := csrFor(k.Private)
	if err != nil {
		return workloadKey{}, fmt.Errorf("certificate request for a workload key: %w", err)
	}
	return workloadKey{key: k.Private, der: k.PKCS8, csr: csr}, nil
}
