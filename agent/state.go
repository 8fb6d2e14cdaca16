package agent

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/nodeproto"
)

// entry is a registration entry of a Sync update, ready for matching.
type entry struct {
	id        string
	spiffeID  spiffeid.ID
	revision  uint64
	selectors []attest.Selector
	blocked   bool
}

// State is an immutable view of what the server last sent on the Sync
// stream: the entries scoped to this node indexed by selector, the blocked
// IDs, the bundles and the CRL parsed into a set of revoked serials. Done
// closes when a newer State replaces it.
type State struct {
	td       spiffeid.TrustDomain
	revision uint64
	// synced is false for the empty state an agent starts with: nothing
	// may be served from it.
	synced bool

	entries []*entry
	// matcher holds the entries in the server's order, those of blocked
	// IDs too, so that a refusal can say "blocked" rather than "not
	// registered".
	matcher workload.Matcher[*entry]
	blocked map[spiffeid.ID]bool // the blocked IDs

	roots     []*x509.Certificate
	bundleDER []byte // the roots, concatenated DER
	jwtBundle []byte
	crl       []byte
	revoked   map[string]struct{} // serials in the CRL, big.Int.Text(16)
	crlList   *x509.RevocationList
	crlByRoot bool     // the CRL verifies against a root: every chain can verify it
	crlCAs    sync.Map // memo, filled on use: CA certificate DER (string) → whether it signed the CRL

	done chan struct{}
}

// emptyState is the state before the first Sync update: it matches no one
// and is not synced.
func emptyState() *State { return &State{done: make(chan struct{})} }

// Errors of a Sync update the agent cannot use.
var errBadUpdate = errors.New("agent: unusable sync update")

// newState builds the State of a Sync update. An entry whose SPIFFE ID or
// selectors do not parse is skipped and logged (it can match no one); a
// trust domain, bundle or CRL that does not parse refuses the update.
func newState(u *nodeproto.SyncUpdate, log *slog.Logger) (*State, error) {
	td, err := spiffeid.TrustDomainFromString(u.GetTrustDomain())
	if err != nil {
		return nil, fmt.Errorf("%w: trust domain %q: %v", errBadUpdate, u.GetTrustDomain(), err)
	}
	s := &State{
		td:        td,
		revision:  u.GetRevision(),
		synced:    true,
		jwtBundle: u.GetJwtBundle(),
		crl:       u.GetCrl(),
		done:      make(chan struct{}),
	}
	if s.roots, s.bundleDER, err = parseCerts(u.GetBundle()); err != nil {
		return nil, fmt.Errorf("%w: bundle: %v", errBadUpdate, err)
	}
	if len(s.roots) == 0 {
		return nil, fmt.Errorf("%w: the bundle is empty", errBadUpdate)
	}
	if len(s.crl) > 0 {
		crl, err := x509.ParseRevocationList(s.crl)
		if err != nil {
			return nil, fmt.Errorf("%w: CRL: %v", errBadUpdate, err)
		}
		s.crlList = crl
		for _, r := range s.roots {
			if bytes.Equal(r.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(r) == nil {
				s.crlByRoot = true
			}
		}
		s.revoked = make(map[string]struct{}, len(crl.RevokedCertificateEntries))
		for _, r := range crl.RevokedCertificateEntries {
			if r.SerialNumber != nil {
				s.revoked[r.SerialNumber.Text(16)] = struct{}{}
			}
		}
	}
	for _, pe := range u.GetEntries() {
		e, err := parseEntry(td, pe)
		if err != nil {
			log.Error("registration entry skipped", slog.String(logkey.EntryID, pe.GetId()), slog.Any(logkey.Error, err))
			continue
		}
		s.entries = append(s.entries, e)
		s.matcher.Add(e, e.spiffeID, e.selectors, e.blocked)
		if e.blocked {
			if s.blocked == nil {
				s.blocked = make(map[spiffeid.ID]bool)
			}
			s.blocked[e.spiffeID] = true
		}
	}
	return s, nil
}

// parseEntry checks an entry of a Sync update: its SPIFFE ID must be in
// the trust domain, and it must have at least one valid selector.
func parseEntry(td spiffeid.TrustDomain, pe *nodeproto.Entry) (*entry, error) {
	if pe.GetId() == "" {
		return nil, errors.New("entry without an id")
	}
	id, err := spiffeid.FromString(pe.GetSpiffeId())
	if err != nil {
		return nil, fmt.Errorf("SPIFFE ID %q: %v", pe.GetSpiffeId(), err)
	}
	if id.TrustDomain() != td {
		return nil, fmt.Errorf("SPIFFE ID %s is not in trust domain %s", id, td)
	}
	if len(pe.GetSelectors()) == 0 {
		return nil, errors.New("entry without selectors")
	}
	sels := make([]attest.Selector, 0, len(pe.GetSelectors()))
	for _, v := range pe.GetSelectors() {
		sel, err := attest.ParseSelector(v)
		if err != nil {
			return nil, err
		}
		sels = append(sels, sel)
	}
	return &entry{id: pe.GetId(), spiffeID: id, revision: pe.GetRevision(), selectors: sels, blocked: pe.GetBlocked()}, nil
}

// parseCerts parses DER certificates and returns them with their
// concatenation.
func parseCerts(ders [][]byte) ([]*x509.Certificate, []byte, error) {
	certs := make([]*x509.Certificate, 0, len(ders))
	var buf bytes.Buffer
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("certificate %d: %v", i, err)
		}
		certs = append(certs, c)
		buf.Write(der)
	}
	return certs, buf.Bytes(), nil
}

// Done returns a channel closed when a newer State replaces s.
func (s *State) Done() <-chan struct{} { return s.done }

// Synced reports whether s came from the server (not the empty state an
// agent starts with).
func (s *State) Synced() bool { return s.synced }

// Revision is the server's revision of the update s came from.
func (s *State) Revision() uint64 { return s.revision }

// TrustDomain returns the trust domain the server serves.
func (s *State) TrustDomain() spiffeid.TrustDomain { return s.td }

// Roots returns the trust bundle's root certificates; the slice must not
// be modified.
func (s *State) Roots() []*x509.Certificate { return s.roots }

// Kinds returns the selector kinds the unblocked entries use.
func (s *State) Kinds() attest.Kind { return s.matcher.Kinds() }

// Revoked reports whether the certificate of serial (big.Int.Text(16)) is
// in the CRL.
func (s *State) Revoked(serial string) bool {
	_, ok := s.revoked[serial]
	return ok
}

// CRLVerifies reports whether a workload holding the SVID chain (leaf then
// CAs, concatenated DER) can verify the CRL of s: the CA that issued the
// leaf signed it, or a root did, or s has no CRL. A workload verifies a
// CRL only against the roots and the CAs of its own SVID chains, so once
// the server's intermediate rotates, the holder of an SVID of the previous
// one would reject every new CRL, and honour no revocation made since,
// until its SVID was renewed.
func (s *State) CRLVerifies(chainDER []byte) bool {
	if s.crlList == nil || s.crlByRoot {
		return true
	}
	ca := issuerDER(chainDER)
	if ca == nil {
		return false
	}
	if ok, found := s.crlCAs.Load(string(ca)); found {
		return ok.(bool)
	}
	c, err := x509.ParseCertificate(ca)
	ok := err == nil && bytes.Equal(c.RawSubject, s.crlList.RawIssuer) && s.crlList.CheckSignatureFrom(c) == nil
	s.crlCAs.Store(string(ca), ok)
	return ok
}

// issuerDER returns the second certificate of a concatenated DER chain,
// the CA that issued the first; nil if there is none.
func issuerDER(chainDER []byte) []byte {
	rest, err := asn1.Unmarshal(chainDER, &asn1.RawValue{})
	if err != nil {
		return nil
	}
	var ca asn1.RawValue
	if _, err := asn1.Unmarshal(rest, &ca); err != nil {
		return nil
	}
	return ca.FullBytes
}

// Blocked reports whether id is blocked.
func (s *State) Blocked(id spiffeid.ID) bool { return s.blocked[id] }

// refreshOf is when an SVID valid from notBefore to notAfter is due for
// replacement: half-way through its life counted from issuance, which
// the server backdates by backdate (for clock skew), as the server's own
// Workload API does.
func refreshOf(notBefore, notAfter time.Time) time.Time {
	issued := notBefore.Add(backdate)
	if !issued.Before(notAfter) {
		issued = notBefore
	}
	return issued.Add(notAfter.Sub(issued) / 2)
}

// backdate is how far the server sets NotBefore into the past.
const backdate = 30 * time.Second
