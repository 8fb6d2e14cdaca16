package sdk

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// A ConfigOption configures ServerConfig, ClientConfig and the HTTP and
// gRPC helpers built on them.
type ConfigOption func(*configOptions)

type configOptions struct {
	trace Trace
	rc    RevocationChecker
}

// WithTrace installs observability hooks.
func WithTrace(t Trace) ConfigOption {
	return func(o *configOptions) { o.trace = t }
}

// WithRevocationChecker makes the configuration consult rc instead of the
// source's own revocation list. Use it to add a revocation feed of your
// own; a nil rc keeps the source's.
func WithRevocationChecker(rc RevocationChecker) ConfigOption {
	return func(o *configOptions) {
		if rc != nil {
			o.rc = rc
		}
	}
}

// Trace holds optional hooks called during handshakes; a nil hook is
// skipped. Hooks run on the handshake path and must be fast and safe for
// concurrent use.
type Trace struct {
	// GotCertificate is called after the local certificate was picked for a
	// handshake, or picking it failed.
	GotCertificate func(GotCertificateInfo)
	// VerifiedPeer is called after the peer was checked, on full and
	// resumed handshakes alike.
	VerifiedPeer func(VerifiedPeerInfo)
}

// GotCertificateInfo describes the certificate a handshake presents.
type GotCertificateInfo struct {
	// Cert is the certificate presented; nil if Err is set.
	Cert *tls.Certificate
	// Err is why no certificate could be presented.
	Err error
}

// VerifiedPeerInfo describes the outcome of a peer check.
type VerifiedPeerInfo struct {
	// ID is the peer's SPIFFE ID; zero if it has none.
	ID spiffeid.ID
	// Serial is the serial number of the peer's certificate; nil if it
	// presented none.
	Serial *big.Int
	// DidResume is true when the handshake resumed an earlier session.
	DidResume bool
	// Err is nil if the peer was accepted, else an *AuthorizationError.
	Err error
}

// ServerConfig returns a TLS server configuration for mutual TLS 1.3 that
// presents src's current X509-SVID and accepts a client only if:
//
//   - it presents an X509-SVID whose chain verifies against src's bundle
//     for the client's trust domain,
//   - its certificate is not revoked (src's RevocationChecker, if it
//     implements one, or WithRevocationChecker), and
//   - authz accepts its SPIFFE ID. A nil authz refuses every client.
//
// All checks run in VerifyConnection, so they also run when a client
// resumes a session: a client revoked or no longer authorized since its
// first handshake cannot come back with a session ticket. Refusals are
// *AuthorizationError values. The configuration reads src on every
// handshake, so certificate rotation needs nothing else.
func ServerConfig(src Source, authz Authorizer, opts ...ConfigOption) *tls.Config {
	v := newVerifier(src, authz, opts)
	getCert := v.certificateGetter(src)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The chain is verified in VerifyConnection against the SPIFFE
		// bundle of the client's own trust domain, which ClientCAs cannot
		// express.
		ClientAuth:       tls.RequireAnyClientCert,
		GetCertificate:   func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return getCert() },
		VerifyConnection: v.verifyConnection,
	}
}

// ClientConfig returns a TLS client configuration for mutual TLS 1.3 that
// presents src's current X509-SVID and accepts a server only under the
// same rules as ServerConfig. Servers are identified by SPIFFE ID, not by
// host name, so the name in the URL or dial address is not checked.
//
// The configuration has no ClientSessionCache; setting one is safe, since
// every check also runs on resumed sessions.
func ClientConfig(src Source, authz Authorizer, opts ...ConfigOption) *tls.Config {
	v := newVerifier(src, authz, opts)
	getCert := v.certificateGetter(src)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Host name verification does not apply to SPIFFE IDs; the chain,
		// the SPIFFE ID and revocation are checked in VerifyConnection.
		InsecureSkipVerify:   true, //nolint:gosec // verified in VerifyConnection
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return getCert() },
		VerifyConnection:     v.verifyConnection,
	}
}

// verifier holds what VerifyConnection needs.
type verifier struct {
	bundles x509bundle.Source
	authz   Authorizer
	rc      RevocationChecker
	trace   Trace
}

func newVerifier(src Source, authz Authorizer, opts []ConfigOption) *verifier {
	var o configOptions
	if rc, ok := src.(RevocationChecker); ok {
		o.rc = rc
	}
	for _, opt := range opts {
		opt(&o)
	}
	return &verifier{bundles: src, authz: authz, rc: o.rc, trace: o.trace}
}

// tlsCertificateSource is implemented by X509Source, which keeps its SVID
// ready as a tls.Certificate.
type tlsCertificateSource interface {
	tlsCertificate() (*tls.Certificate, error)
}

// certificateGetter returns the function that picks the certificate for
// each handshake.
func (v *verifier) certificateGetter(src x509svid.Source) func() (*tls.Certificate, error) {
	get := func() (*tls.Certificate, error) { return svidCertificate(src) }
	if cs, ok := src.(tlsCertificateSource); ok {
		get = cs.tlsCertificate
	}
	hook := v.trace.GotCertificate
	if hook == nil {
		return get
	}
	return func() (*tls.Certificate, error) {
		cert, err := get()
		hook(GotCertificateInfo{Cert: cert, Err: err})
		return cert, err
	}
}

func svidCertificate(src x509svid.Source) (*tls.Certificate, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, err
	}
	if len(svid.Certificates) == 0 {
		return nil, errors.New("sdk: X509-SVID has no certificate")
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

func (v *verifier) verifyConnection(cs tls.ConnectionState) error {
	id, err := v.verifyPeer(cs.PeerCertificates)
	if v.trace.VerifiedPeer != nil {
		info := VerifiedPeerInfo{ID: id, DidResume: cs.DidResume, Err: err}
		if len(cs.PeerCertificates) > 0 {
			info.Serial = cs.PeerCertificates[0].SerialNumber
		}
		v.trace.VerifiedPeer(info)
	}
	return err
}

// verifyPeer runs the chain, revocation and authorization checks on a
// peer's certificates (leaf first) and returns its SPIFFE ID.
func (v *verifier) verifyPeer(certs []*x509.Certificate) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, &AuthorizationError{Reason: ReasonNoCertificate, Detail: "peer presented no certificate"}
	}
	id, chains, err := x509svid.Verify(certs, v.bundles)
	if err != nil {
		return id, &AuthorizationError{ID: id, Reason: ReasonUntrusted, Err: err}
	}
	if v.rc != nil {
		if err := v.rc.CheckRevocation(id, certs[0]); err != nil {
			return id, asAuthorizationError(id, ReasonRevoked, err)
		}
	}
	if v.authz == nil {
		return id, &AuthorizationError{ID: id, Reason: ReasonNotAuthorized, Detail: "no authorizer configured"}
	}
	if err := v.authz(id, chains); err != nil {
		return id, asAuthorizationError(id, ReasonNotAuthorized, err)
	}
	return id, nil
}
