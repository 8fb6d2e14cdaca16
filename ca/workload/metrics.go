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

// signResult classifies the outcome of a signing; counted is false for
// what is no signing at all (a caller that matches nothing, or one that
// must be attested for more kinds first).
func signResult(err error) (result string, counted bool) {
	var kinds *KindsError
	switch {
	case err == nil:
		return ResultOK, true
	case errors.Is(err, ErrNotRegistered), errors.As(err, &kinds):
		return "", false
	case errors.As(err, new(*BlockedError)):
		return ResultBlocked, true
	case errors.As(err, new(*limitError)):
		return ResultLimited, true
	case errors.As(err, new(*InvalidError)):
		return ResultInvalid, true
	default:
		return ResultError, true
	}
}

// noMetrics is the Metrics of a server configured without any.
type noMetrics struct{}

func (noMetrics) SVIDIssued(string, string, time.Duration) {}
func (noMetrics) StreamOpened(string) func()               { return func() {} }
func (noMetrics) AttestationFailed(string)                 {}
func (noMetrics) CallerDenied(string)                      {}

// observedSource reports every X.509-SVID the Source signs to Metrics:
// each SVID of an update that the caller did not hold before, with the
// time the Source took, or the failure of a call that signed nothing.
type observedSource struct {
	Source
	m Metrics
}

func (o observedSource) X509(ctx context.Context, req X509Request) (X509Update, error) {
	start := time.Now()
	u, err := o.Source.X509(ctx, req)
	d := time.Since(start)
	if err != nil {
		if result, ok := signResult(err); ok {
			o.m.SVIDIssued(KindX509, result, d)
		}
		return u, err
	}
	for _, sv := range u.SVIDs {
		if !heldSerial(req.Held, sv.Serial) {
			o.m.SVIDIssued(KindX509, ResultOK, d)
		}
	}
	return u, nil
}

func heldSerial(held []X509SVID, serial string) bool {
	for _, h := range held {
		if h.Serial == serial {
			return true
		}
	}
	return false
}

// observedJWT reports every JWT-SVID asked of the JWTSource to Metrics.
type observedJWT struct {
	JWTSource
	m Metrics
}

func (o observedJWT) SignJWT(ctx context.Context, req JWTRequest) ([]JWTSVID, error) {
	start := time.Now()
	ts, err := o.JWTSource.SignJWT(ctx, req)
	d := time.Since(start)
	if err != nil {
		if result, ok := signResult(err); ok {
			o.m.SVIDIssued(KindJWT, result, d)
		}
		return ts, err
	}
	for range ts {
		o.m.SVIDIssued(KindJWT, ResultOK, d)
	}
	return ts, nil
}

// observe wraps src so that Metrics sees every signing, the limits'
// refusals included.
func observe(m Metrics, src Source) Source {
	if _, ok := m.(noMetrics); ok || src == nil {
		return src
	}
	return observedSource{Source: src, m: m}
}

// observeJWT is observe for a JWTSource.
func observeJWT(m Metrics, jwt JWTSource) JWTSource {
	if _, ok := m.(noMetrics); ok || jwt == nil {
		return jwt
	}
	return observedJWT{JWTSource: jwt, m: m}
}
