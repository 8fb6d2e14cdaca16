package sdk

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// A RevocationChecker refuses certificates that were revoked after they
// were issued. ServerConfig and ClientConfig call it on every handshake,
// resumed ones included, after the peer's chain has been verified. It
// returns nil to accept the certificate, otherwise preferably an
// *AuthorizationError with ReasonRevoked or ReasonBlocked.
//
// X509Source implements it with the revocation lists streamed by the
// Workload API; *RevocationList implements it for a fixed set.
type RevocationChecker interface {
	CheckRevocation(id spiffeid.ID, leaf *x509.Certificate) error
}

// RevokedSerial names one revoked certificate: its serial number in the
// trust domain that issued it.
type RevokedSerial struct {
	// TrustDomain is the trust domain whose CA issued the certificate.
	TrustDomain spiffeid.TrustDomain
	// Serial is the certificate's serial number.
	Serial *big.Int
}

// BlockedID refuses every certificate of one SPIFFE ID issued before a
// point in time: a certificate of ID whose NotBefore is before RevokedAt
// is refused, one issued later is accepted.
type BlockedID struct {
	// ID is the blocked SPIFFE ID.
	ID spiffeid.ID
	// RevokedAt is when the ID was revoked.
	RevokedAt time.Time
}

// RevocationList is an immutable set of revoked serial numbers (per trust
// domain) and blocked SPIFFE IDs. Lookups are map accesses, so checking a
// certificate costs the same for ten entries or a million. The nil
// *RevocationList is empty. It is safe for concurrent use.
type RevocationList struct {
	serials map[spiffeid.TrustDomain]map[string]struct{}
	blocked map[spiffeid.ID]time.Time
	n       int
}

// NewRevocationList returns a list holding serials and blocked. If an ID is
// blocked twice, the later RevokedAt wins.
func NewRevocationList(serials []RevokedSerial, blocked []BlockedID) *RevocationList {
	l := &RevocationList{}
	for _, s := range serials {
		l.addSerial(s.TrustDomain, s.Serial)
	}
	for _, b := range blocked {
		l.addBlocked(b.ID, b.RevokedAt)
	}
	return l
}

func (l *RevocationList) addSerial(td spiffeid.TrustDomain, serial *big.Int) {
	if serial == nil {
		return
	}
	if l.serials == nil {
		l.serials = make(map[spiffeid.TrustDomain]map[string]struct{})
	}
	m := l.serials[td]
	if m == nil {
		m = make(map[string]struct{})
		l.serials[td] = m
	}
	k := serialKey(serial)
	if _, ok := m[k]; !ok {
		m[k] = struct{}{}
		l.n++
	}
}

func (l *RevocationList) addBlocked(id spiffeid.ID, at time.Time) {
	if l.blocked == nil {
		l.blocked = make(map[spiffeid.ID]time.Time)
	}
	prev, ok := l.blocked[id]
	if !ok {
		l.n++
	}
	if !ok || at.After(prev) {
		l.blocked[id] = at
	}
}

// serialKey is the map key of a serial number: its big-endian magnitude,
// with a marker for the (invalid but parseable) negative serials.
func serialKey(serial *big.Int) string {
	if serial.Sign() < 0 {
		return "-" + string(serial.Bytes())
	}
	return string(serial.Bytes())
}

// Len returns the number of revoked serials plus blocked IDs.
func (l *RevocationList) Len() int {
	if l == nil {
		return 0
	}
	return l.n
}

// IsRevoked reports whether serial is revoked in trust domain td.
func (l *RevocationList) IsRevoked(td spiffeid.TrustDomain, serial *big.Int) bool {
	if l == nil || serial == nil {
		return false
	}
	m := l.serials[td]
	if len(m) == 0 {
		return false
	}
	// Serials are at most 20 octets (RFC 5280); look those up from a
	// stack buffer so the handshake path does not allocate.
	var buf [20]byte
	if n := (serial.BitLen() + 7) / 8; serial.Sign() > 0 && n <= len(buf) {
		_, ok := m[string(serial.FillBytes(buf[:n]))]
		return ok
	}
	_, ok := m[serialKey(serial)]
	return ok
}

// BlockedSince returns when id was blocked, and whether it is.
func (l *RevocationList) BlockedSince(id spiffeid.ID) (time.Time, bool) {
	if l == nil {
		return time.Time{}, false
	}
	at, ok := l.blocked[id]
	return at, ok
}

// CheckRevocation returns an *AuthorizationError if leaf's serial is revoked
// in id's trust domain (ReasonRevoked) or if id is blocked and leaf was
// issued before the block (ReasonBlocked). It implements RevocationChecker.
func (l *RevocationList) CheckRevocation(id spiffeid.ID, leaf *x509.Certificate) error {
	if l == nil || leaf == nil {
		return nil
	}
	if l.IsRevoked(id.TrustDomain(), leaf.SerialNumber) {
		return &AuthorizationError{ID: id, Reason: ReasonRevoked, Detail: "serial " + leaf.SerialNumber.Text(16) + " is revoked"}
	}
	if at, ok := l.blocked[id]; ok && leaf.NotBefore.Before(at) {
		return &AuthorizationError{ID: id, Reason: ReasonBlocked, Detail: "blocked since " + at.UTC().Format(time.RFC3339)}
	}
	return nil
}

// merge returns a list holding the entries of both l and other.
func (l *RevocationList) merge(other *RevocationList) *RevocationList {
	out := &RevocationList{}
	for _, src := range []*RevocationList{l, other} {
		if src == nil {
			continue
		}
		for td, m := range src.serials {
			if out.serials == nil {
				out.serials = make(map[spiffeid.TrustDomain]map[string]struct{})
			}
			dst := out.serials[td]
			if dst == nil {
				dst = make(map[string]struct{}, len(m))
				out.serials[td] = dst
			}
			for k := range m {
				if _, ok := dst[k]; !ok {
					dst[k] = struct{}{}
					out.n++
				}
			}
		}
		for id, at := range src.blocked {
			out.addBlocked(id, at)
		}
	}
	return out
}

// revocationsFromCRLs parses DER CRLs and keeps the serials of those whose
// signature verifies against a CA of a trust domain: a root of its bundle,
// or an intermediate from one of the SVID chains that itself chains to the
// bundle. The error lists the CRLs that were rejected; the returned list
// holds the accepted ones regardless.
func revocationsFromCRLs(crls [][]byte, bundles *x509bundle.Set, svids []*x509svid.SVID, now time.Time) (*RevocationList, error) {
	l := &RevocationList{}
	var errs []error
	for i, der := range crls {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			errs = append(errs, fmt.Errorf("crl %d: %w", i, err))
			continue
		}
		td, err := crlTrustDomain(crl, bundles, svids, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("crl %d (issuer %q): %w", i, crl.Issuer, err))
			continue
		}
		for _, e := range crl.RevokedCertificateEntries {
			l.addSerial(td, e.SerialNumber)
		}
	}
	return l, errors.Join(errs...)
}

var errCRLSigner = errors.New("signature does not verify against any CA that chains to a trust bundle")

// crlTrustDomain returns the trust domain of the CA that signed crl.
func crlTrustDomain(crl *x509.RevocationList, bundles *x509bundle.Set, svids []*x509svid.SVID, now time.Time) (spiffeid.TrustDomain, error) {
	for _, b := range bundles.Bundles() {
		for _, root := range b.X509Authorities() {
			if bytes.Equal(root.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(root) == nil {
				return b.TrustDomain(), nil
			}
		}
	}
	for _, svid := range svids {
		td := svid.ID.TrustDomain()
		b, ok := bundles.Get(td)
		if !ok {
			continue
		}
		for i := 1; i < len(svid.Certificates); i++ {
			ca := svid.Certificates[i]
			if !bytes.Equal(ca.RawSubject, crl.RawIssuer) || crl.CheckSignatureFrom(ca) != nil {
				continue
			}
			roots := x509.NewCertPool()
			for _, r := range b.X509Authorities() {
				roots.AddCert(r)
			}
			inter := x509.NewCertPool()
			for _, c := range svid.Certificates[i+1:] {
				inter.AddCert(c)
			}
			_, err := ca.Verify(x509.VerifyOptions{
				Roots:         roots,
				Intermediates: inter,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
				CurrentTime:   now,
			})
			if err == nil {
				return td, nil
			}
		}
	}
	return spiffeid.TrustDomain{}, errCRLSigner
}
