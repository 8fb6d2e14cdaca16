package workload

// The seam between the Workload API handler and what it serves. The handler
// owns the caller: the security header, attestation of the kinds of
// selectors the Source asks for, verifying the peer before and after every
// signing, the per-uid limits, the refusal messages and logs, and the
// gRPC streams. The Source owns the identities: which entries a caller
// matches, which IDs are blocked, when a held SVID may be handed out again
// and when it must be replaced, and the bundles and CRL. Everything that
// crosses the seam is plain data, so that a Source can live anywhere:
// ca.WorkloadSource serves the server's own socket from the authority, and
// an agent serves its socket from what its server streams to it. Both
// match callers with a Matcher (match.go), so that the same caller gets
// the same entries and the same refusal from either.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
)

// Source issues the identities the Workload API hands out.
//
// Every method that takes a Caller answers for its Selectors only. It
// refuses a caller that matches no entry with ErrNotRegistered, and one
// whose every matching entry names a blocked ID with a *BlockedError. When
// the answer depends on selectors of kinds that Caller.Kinds lacks (an
// entry was added since the caller was attested), it returns a *KindsError
// instead: the handler attests the caller for those kinds and asks again.
// While it cannot serve anyone yet it returns an *UnavailableError.
type Source interface {
	// Kinds returns the kinds of selectors that the entries of unblocked
	// IDs use: the handler attests callers for those kinds only.
	Kinds() attest.Kind

	// Check answers whether the caller may be served: nil when it matches
	// an entry of an unblocked ID, else the refusal.
	Check(ctx context.Context, c Caller) error

	// X509 returns the X.509-SVIDs the caller should hold now, one per
	// matching entry (the default first), with the bundle and the CRL.
	// It hands out again each SVID of Held it still considers current
	// (same entry and revision, not revoked, not due for refresh) and
	// signs the others, calling Budget.SignX509 before each signature.
	// An SVID of Held whose ID is now blocked ends the stream: X509 then
	// returns a *BlockedError with Held set.
	X509(ctx context.Context, req X509Request) (X509Update, error)

	// Bundles returns the trust bundles and the CRL, for any caller; the
	// handler checks the caller separately.
	Bundles(ctx context.Context) Bundles
}

// JWTSource issues and validates JWT-SVIDs. A Source without one answers
// the JWT-SVID methods with Unimplemented.
type JWTSource interface {
	// SignJWT returns one JWT-SVID with the audience per SPIFFE ID the
	// caller matches (the default first), or only for req.ID when it is
	// set: none when the caller matches entries but none of req.ID. It
	// calls Budget.SignJWT before each token, signed or handed out again
	// from a cache, and Budget.SignedJWT after each. An unacceptable
	// audience is an *InvalidError.
	SignJWT(ctx context.Context, req JWTRequest) ([]JWTSVID, error)

	// ValidateJWT checks a token for the audience: signature against the
	// JWT bundles, expiry, audience, and revocation. A refused token is an
	// *InvalidError saying why.
	ValidateJWT(ctx context.Context, token, audience string) (JWTClaims, error)
}

// Caller is an attested caller of the Workload API.
type Caller struct {
	// PID, UID and GID identify the process, for logs and limits.
	PID      int32
	UID, GID uint32
	// Selectors are the caller's selectors of Kinds.
	Selectors attest.Set
	// Kinds are the kinds of selectors the caller was attested for:
	// Selectors holds every selector of these kinds it has.
	Kinds attest.Kind
}

// Budget is the caller's signing budget. A Source calls it before each
// signature it makes for the caller; an error refuses the signature, and
// the Source returns it (it may wrap it).
type Budget interface {
	// SignX509 is called before an X.509-SVID is signed, not when a held
	// one is handed out again.
	SignX509(ctx context.Context) error
	// SignJWT is called before a JWT-SVID is handed out, signed or cached
	// (a cached token costs nothing but is refused too while the budget
	// is spent).
	SignJWT(ctx context.Context) error
	// SignedJWT is called after each JWT-SVID handed out, with its iat:
	// the budget charges a token issued since the matching SignJWT (one
	// signed for this request), not one handed out again from a cache.
	SignedJWT(ctx context.Context, issuedAt time.Time)
}

// X509Request asks what the caller should hold now.
type X509Request struct {
	Caller Caller
	// Held are the SVIDs the caller holds: those of the last X509Update
	// sent to it, none on a new stream.
	Held []X509SVID
	// Budget is charged for each signature; nil: no limit.
	Budget Budget
}

// X509Update is what a caller should hold now, and when to ask again.
type X509Update struct {
	// SVIDs are the caller's SVIDs, the default first; never empty.
	SVIDs []X509SVID
	// Bundle is the trust bundle of the SVIDs' trust domain: its root
	// certificates, concatenated DER.
	Bundle []byte
	// CRL is the trust domain's certificate revocation list, DER.
	CRL []byte
	// RefreshAt is when one of SVIDs is due for replacement, on the
	// server's clock (Config.Time): ask again then.
	RefreshAt time.Time
	// Done is closed when anything in the update may have changed (an
	// entry, a revocation, the bundle, the CRL): ask again then.
	Done <-chan struct{}
}

// X509SVID is an X.509-SVID in the encodings of the Workload API.
type X509SVID struct {
	// ID is the SPIFFE ID in the certificate's URI SAN.
	ID spiffeid.ID
	// EntryID and Revision name the registration entry, and its revision,
	// the SVID was issued for: a Source reuses an SVID only for the same.
	EntryID  string
	Revision uint64
	// CertChainDER is the leaf followed by its intermediates, concatenated
	// DER; KeyDER is the private key, PKCS#8 DER.
	CertChainDER, KeyDER []byte
	// Serial is the certificate serial number, lower-case hex.
	Serial string
	// NotBefore and NotAfter bound the certificate's validity.
	NotBefore, NotAfter time.Time
}

// Bundles are the trust bundles and revocations a caller may be sent.
type Bundles struct {
	// X509 maps a trust domain's SPIFFE ID ("spiffe://example.org") to its
	// root certificates, concatenated DER.
	X509 map[string][]byte
	// JWT maps a trust domain's SPIFFE ID to its JWT bundle (a JWK Set).
	JWT map[string][]byte
	// CRL is the trust domain's certificate revocation list, DER.
	CRL []byte
	// Done is closed when any of them may have changed.
	Done <-chan struct{}
}

// JWTRequest asks for JWT-SVIDs.
type JWTRequest struct {
	Caller Caller
	// Audience is the aud claim; never empty.
	Audience []string
	// ID, when set, restricts the answer to that SPIFFE ID.
	ID spiffeid.ID
	// Budget is charged for each token; nil: no limit.
	Budget Budget
}

// JWTSVID is a JWT-SVID.
type JWTSVID struct {
	// ID is the SPIFFE ID in the sub claim.
	ID spiffeid.ID
	// Token is the JWT in JWS compact serialization.
	Token string
}

// JWTClaims are the claims of a valid JWT-SVID.
type JWTClaims struct {
	// ID is the SPIFFE ID in the sub claim.
	ID spiffeid.ID
	// Claims are all of the token's claims, as JSON decodes them.
	Claims map[string]any
}

// ErrNotRegistered refuses a caller that matches no registration entry.
var ErrNotRegistered = errors.New("workload: no registration entry matches the caller")

// BlockedError refuses a caller whose every matching entry names a blocked
// ID, or (Held) a stream that holds an SVID of an ID blocked since.
type BlockedError struct {
	// IDs are the blocked SPIFFE IDs, distinct, in the order of the
	// entries; with Held, the held ID that is blocked.
	IDs []string
	// Held is set when the caller holds an SVID of a blocked ID.
	Held bool
}

func (e *BlockedError) Error() string {
	if e.Held {
		return fmt.Sprintf("workload: the caller holds an SVID of blocked ID %v", e.IDs)
	}
	return fmt.Sprintf("workload: the caller matches only blocked IDs %v", e.IDs)
}

// KindsError asks the handler to attest the caller for Kinds too and ask
// again: the answer depends on selectors of kinds the caller lacks.
type KindsError struct{ Kinds attest.Kind }

func (e *KindsError) Error() string {
	return fmt.Sprintf("workload: the caller must be attested for selector kinds %v", e.Kinds)
}

// InvalidError refuses a request as invalid: an unacceptable audience, a
// refused token. The caller is told Err's text.
type InvalidError struct {
	// Reason is a short machine-readable cause, for logs ("expired").
	Reason string
	Err    error
}

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// UnavailableError says that the Source cannot serve yet, for a reason
// that passes by itself and is the same for every caller: a badge agent
// that has no server yet (not connected, or between servers). The caller
// gets Unavailable with Reason; the handler logs it as a warning, at most
// once per Limits.LogInterval, since it is an expected state and says
// nothing about the caller.
type UnavailableError struct{ Reason string }

func (e *UnavailableError) Error() string { return e.Reason }

// GRPCStatus is Unavailable with Reason, for the Source's own use of
// status.Code.
func (e *UnavailableError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Reason)
}
