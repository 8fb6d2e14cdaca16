package sdk

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// An Authorizer decides whether a peer whose X509-SVID has already been
// verified against its trust bundle may talk to this service. It returns nil
// to accept the peer. Refusals should be *AuthorizationError values (the
// constructors below return them); any other error is wrapped into one with
// ReasonNotAuthorized.
//
// verifiedChains holds the chains from the peer's certificate to a root of
// its trust domain's bundle. Authorizer has the same underlying type as
// go-spiffe's tlsconfig.Authorizer, so one converts to the other:
// tlsconfig.Authorizer(a) or sdk.Authorizer(b).
type Authorizer func(id spiffeid.ID, verifiedChains [][]*x509.Certificate) error

// AuthorizeAny accepts every peer whose certificate verifies against a
// bundle the source holds, whatever its SPIFFE ID. Revocation is still
// checked.
func AuthorizeAny() Authorizer {
	return func(spiffeid.ID, [][]*x509.Certificate) error { return nil }
}

// AuthorizeID accepts only the peer with SPIFFE ID allowed.
func AuthorizeID(allowed spiffeid.ID) Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if id == allowed {
			return nil
		}
		return &AuthorizationError{ID: id, Reason: ReasonNotAuthorized, Detail: "not " + allowed.String()}
	}
}

// AuthorizeOneOf accepts a peer whose SPIFFE ID is one of allowed. The
// lookup is a map access, so long lists cost nothing per handshake.
func AuthorizeOneOf(allowed ...spiffeid.ID) Authorizer {
	set := make(map[spiffeid.ID]struct{}, len(allowed))
	names := make([]string, 0, len(allowed))
	for _, id := range allowed {
		if _, dup := set[id]; !dup {
			names = append(names, id.String())
		}
		set[id] = struct{}{}
	}
	slices.Sort(names)
	detail := "not one of [" + strings.Join(names, " ") + "]"
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if _, ok := set[id]; ok {
			return nil
		}
		return &AuthorizationError{ID: id, Reason: ReasonNotAuthorized, Detail: detail}
	}
}

// AuthorizeMemberOf accepts any peer of trust domain td.
func AuthorizeMemberOf(td spiffeid.TrustDomain) Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if id.MemberOf(td) {
			return nil
		}
		return &AuthorizationError{ID: id, Reason: ReasonNotAuthorized, Detail: "not a member of trust domain " + td.Name()}
	}
}

// AuthorizeFunc turns a function of the peer's SPIFFE ID into an
// Authorizer. A non-nil error from fn refuses the peer; it is returned
// wrapped in an *AuthorizationError naming the peer, unless it already is
// one. go-spiffe's spiffeid.Matcher values (spiffeid.MatchIDPrefix, ...)
// can be passed directly.
func AuthorizeFunc(fn func(id spiffeid.ID) error) Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if err := fn(id); err != nil {
			return asAuthorizationError(id, ReasonNotAuthorized, err)
		}
		return nil
	}
}

// Reason says why a peer was refused.
type Reason int

// The reasons a peer can be refused, in the order the checks run.
const (
	// ReasonNoCertificate: the peer presented no certificate.
	ReasonNoCertificate Reason = iota + 1
	// ReasonUntrusted: the peer's certificate is not a valid X509-SVID or its
	// chain does not verify against the bundle of its trust domain (unknown
	// trust domain, wrong CA, expired, ...).
	ReasonUntrusted
	// ReasonRevoked: the certificate's serial number is on the revocation
	// list of its trust domain.
	ReasonRevoked
	// ReasonBlocked: the peer's SPIFFE ID is blocked and the certificate was
	// issued (NotBefore) before the block.
	ReasonBlocked
	// ReasonNotAuthorized: the authorizer refused the peer's SPIFFE ID.
	ReasonNotAuthorized
)

// String returns a short lower-case description such as "revoked".
func (r Reason) String() string {
	switch r {
	case ReasonNoCertificate:
		return "no certificate"
	case ReasonUntrusted:
		return "untrusted certificate"
	case ReasonRevoked:
		return "revoked"
	case ReasonBlocked:
		return "blocked"
	case ReasonNotAuthorized:
		return "not authorized"
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// AuthorizationError is returned when a peer is refused, by the TLS
// configurations of this package (from the handshake, or wrapped in the
// error of the first Read or Write), by the authorizers and by the
// revocation checks. Use errors.As to get it:
//
//	var ae *sdk.AuthorizationError
//	if errors.As(err, &ae) && ae.Reason == sdk.ReasonRevoked { ... }
//
// The side that is refused sees only a TLS alert ("bad certificate").
type AuthorizationError struct {
	// ID is the SPIFFE ID of the refused peer. It is the zero ID when the
	// peer presented no certificate or one without a valid SPIFFE ID.
	ID spiffeid.ID
	// Reason is why the peer was refused.
	Reason Reason
	// Detail explains the refusal in words, for example
	// "not spiffe://example.org/orders". It may be empty.
	Detail string
	// Err is the underlying error, if any: the x509 verification error for
	// ReasonUntrusted, or the error of a custom authorizer.
	Err error
}

// Error returns a message that names the peer and the reason, such as
// "sdk: peer spiffe://example.org/inventory refused: not authorized: not spiffe://example.org/orders".
func (e *AuthorizationError) Error() string {
	var b strings.Builder
	b.WriteString("sdk: peer ")
	if e.ID.IsZero() {
		b.WriteString("(no SPIFFE ID)")
	} else {
		b.WriteString(e.ID.String())
	}
	b.WriteString(" refused: ")
	b.WriteString(e.Reason.String())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns Err.
func (e *AuthorizationError) Unwrap() error { return e.Err }

// asAuthorizationError returns err if it already is an *AuthorizationError
// that names the peer, else wraps it into one.
func asAuthorizationError(id spiffeid.ID, reason Reason, err error) error {
	var ae *AuthorizationError
	if errors.As(err, &ae) && ae.ID == id {
		return err
	}
	return &AuthorizationError{ID: id, Reason: reason, Err: err}
}
