package workload

// Metrics: what the server counts, reported through the small Metrics
// interface so that this package does not depend on a metrics library.
// Every label value is one of the constants below: no SPIFFE ID, uid or
// pid ever becomes a label, so the number of series stays fixed.

import (
	"context"
	"errors"
	"time"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca"
)

// Metrics receives what the server counts. internal/metrics implements it
// with Prometheus collectors. Its methods are called on the issuance path
// and must be cheap and safe for concurrent use.
type Metrics interface {
	// SVIDIssued records one X.509-SVID (kind KindX509) or JWT-SVID
	// (KindJWT) asked of the authority, with its Result; d is how long
	// signing took.
	SVIDIssued(kind, result string, d time.Duration)
	// StreamOpened records a stream of method (a Stream constant) that
	// has started; the returned function records its end.
	StreamOpened(method string) (closed func())
	// AttestationFailed records a caller whose process could not be
	// attested or verified, with a Reason.
	AttestationFailed(reason string)
	// CallerDenied records a caller refused an identity, with a Denial.
	CallerDenied(reason string)
}

// Kinds of SVID.
const (
	KindX509 = "x509"
	KindJWT  = "jwt"
)

// Results of a signing.
const (
	ResultOK      = "ok"      // signed (or, for a JWT-SVID, handed out from the cache)
	ResultBlocked = "blocked" // the ID was blocked meanwhile
	ResultLimited = "limited" // refused by a per-caller limit or the disk reserve
	ResultInvalid = "invalid" // the request was invalid (a JWT audience)
	ResultError   = "error"   // signing or recording failed
)

// Streams of the Workload API.
const (
	StreamX509SVID    = "x509_svid"
	StreamX509Bundles = "x509_bundles"
	StreamJWTBundles  = "jwt_bundles"
)

// Reasons of an attestation failure.
const (
	ReasonPeerGone    = "peer_gone"    // the process exited
	ReasonPeerChanged = "peer_changed" // the process exec'd another executable
	ReasonHashBudget  = "hash_budget"  // the uid spent its executable hashing budget
	ReasonTooLarge    = "too_large"    // the executable is too large to hash
	ReasonOtherAttest = "other"        // anything else (/proc unreadable, no pidfd)
)

// Denials of a caller.
const (
	DenyNotRegistered = "not_registered" // no entry matches
	DenyBlocked       = "blocked"        // only entries of blocked IDs match
	DenyNoHeader      = "no_header"      // the workload.spiffe.io header is missing
	DenyLimited       = "limited"        // a per-uid limit refused the call or connection
)

// The label values, for collectors that create every series up front.
var (
	Kinds              = []string{KindX509, KindJWT}
	Results            = []string{ResultOK, ResultBlocked, ResultLimited, ResultInvalid, ResultError}
	Streams            = []string{StreamX509SVID, StreamX509Bundles, StreamJWTBundles}
	AttestationReasons = []string{ReasonPeerGone, ReasonPeerChanged, ReasonHashBudget, ReasonTooLarge, ReasonOtherAttest}
	Denials            = []string{DenyNotRegistered, DenyBlocked, DenyNoHeader, DenyLimited}
)

// attestReason classifies an error of the attestor.
func attestReason(err error) string {
	switch {
	case errors.Is(err, attest.ErrPeerGone):
		return ReasonPeerGone
	case errors.Is(err, attest.ErrPeerChanged):
		return ReasonPeerChanged
	case errors.Is(err, attest.ErrHashBudget):
		return ReasonHashBudget
	case errors.Is(err, attest.ErrExecutableTooLarge):
		return ReasonTooLarge
	default:
		return ReasonOtherAttest
	}
}

// signResult classifies the outcome of a signing.
func signResult(err error) string {
	switch {
	case err == nil:
		return ResultOK
	case errors.Is(err, ca.ErrBlocked):
		return ResultBlocked
	case errors.As(err, new(*limitError)):
		return ResultLimited
	case errors.As(err, new(*ca.InvalidError)):
		return ResultInvalid
	default:
		return ResultError
	}
}

// noMetrics is the Metrics of a server configured without any.
type noMetrics struct{}

func (noMetrics) SVIDIssued(string, string, time.Duration) {}
func (noMetrics) StreamOpened(string) func()               { return func() {} }
func (noMetrics) AttestationFailed(string)                 {}
func (noMetrics) CallerDenied(string)                      {}

// observedAuthority reports every X.509-SVID signing to Metrics.
type observedAuthority struct {
	Authority
	m Metrics
}

func (a observedAuthority) SignX509SVID(ctx context.Context, s *ca.Snapshot, e *ca.Entry) (*ca.X509SVID, error) {
	start := time.Now()
	svid, err := a.Authority.SignX509SVID(ctx, s, e)
	a.m.SVIDIssued(KindX509, signResult(err), time.Since(start))
	return svid, err
}

// observedJWT reports every JWT-SVID asked for to Metrics.
type observedJWT struct {
	JWTIssuer
	m Metrics
}

func (j observedJWT) SignJWTSVID(ctx context.Context, s *ca.Snapshot, e *ca.Entry, audience []string) (*ca.JWTSVID, error) {
	start := time.Now()
	t, err := j.JWTIssuer.SignJWTSVID(ctx, s, e, audience)
	j.m.SVIDIssued(KindJWT, signResult(err), time.Since(start))
	return t, err
}

// observe wraps auth and jwt so that Metrics sees every signing, the
// limits' refusals included.
func observe(m Metrics, auth Authority, jwt JWTIssuer) (Authority, JWTIssuer) {
	if _, ok := m.(noMetrics); ok {
		return auth, jwt
	}
	if jwt != nil {
		jwt = observedJWT{JWTIssuer: jwt, m: m}
	}
	return observedAuthority{Authority: auth, m: m}, jwt
}
