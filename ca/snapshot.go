package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"net/url"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// Entry is a registration entry ready for matching and signing.
type Entry struct {
	// Record is the entry as stored.
	Record storage.Entry
	// ID is the parsed SPIFFE ID of the entry.
	ID spiffeid.ID

	selectors []attest.Selector
	tmpl      *x509.Certificate // prepared once per entry revision
	leaf      *leafEncoderCache // the encoder of tmpl for the current signing key
	order     int               // position in (CreatedAt, ID) order; lower is the default
}

// Snapshot is an immutable view of the authority: registration entries
// indexed by selector, the trust bundle and the signing key. Done closes when
// a newer snapshot replaces it.
type Snapshot struct {
	td      spiffeid.TrustDomain
	entries []*Entry
	// matcher holds the entries not scoped to nodes, those of blocked IDs
	// too, so that a refusal can say "blocked" rather than "not
	// registered".
	matcher workload.Matcher[*Entry]

	bundle    *x509bundle.Bundle
	bundleDER []byte // the root certificates, concatenated DER
	signer    *caKey
	chainDER  []byte     // the intermediate and the upstream's intermediates, appended to every leaf
	jwt       *jwtKeySet // JWT signing key and published keys (JWKS)

	revocations *revocationState

	// Entries scoped to nodes, served only by agents: forNode[name] holds
	// the entries naming the node, forAll those scoped to every node.
	// Neither is in index: the server's own socket never serves them.
	forNode      map[string][]*Entry
	forAll       []*Entry
	evictedNodes map[string]bool // shared with the authority; read-only
	byID         *entryIndex     // entries by id, built on first use (nodesvid.go)

	done chan struct{}
}

func newSnapshot(td spiffeid.TrustDomain, recs []storage.Entry, keys *keySet, revs *revocationState, log *slog.Logger) *Snapshot {
	roots := make([]*x509.Certificate, len(keys.roots))
	var bundleDER []byte
	for i, r := range keys.roots {
		roots[i] = r.cert
		bundleDER = append(bundleDER, r.cert.Raw...)
	}
	s := &Snapshot{
		td:        td,
		byID:      new(entryIndex),
		bundle:    x509bundle.FromX509Authorities(td, roots),
		bundleDER: bundleDER,
		signer:    keys.current(),
		chainDER:  slices.Concat(append([][]byte{keys.current().cert.Raw}, keys.current().rec.UpstreamChain...)...),
		jwt:       keys.jwt,
		done:      make(chan struct{}),

		revocations: revs,
	}
	for i, rec := range recs {
		e, err := prepareEntry(td, rec)
		if err != nil {
			// Entries are validated when created; one that no longer parses
			// is kept in the store untouched but cannot match anyone.
			log.Error("registration entry skipped", slog.String(logkey.EntryID, rec.ID), slog.Any(logkey.Error, err))
			continue
		}
		e.order = i
		s.entries = append(s.entries, e)
		blocked := revs.ids[e.ID].Blocked
		if len(rec.Nodes) > 0 {
			if blocked {
				continue // served to no node until unblocked
			}
			if rec.Nodes[0] == AllNodes {
				s.forAll = append(s.forAll, e)
				continue
			}
			if s.forNode == nil {
				s.forNode = make(map[string][]*Entry)
			}
			for _, n := range rec.Nodes {
				s.forNode[n] = append(s.forNode[n], e)
			}
			continue
		}
		// An entry of a blocked ID is listed, but matches no one until
		// unblocked.
		s.matcher.Add(e, e.ID, e.selectors, blocked)
	}
	return s
}

// prepareEntry parses an entry and prepares its certificate template.
func prepareEntry(td spiffeid.TrustDomain, rec storage.Entry) (*Entry, error) {
	id, err := parseID(td, rec.SPIFFEID)
	if err != nil {
		return nil, err
	}
	sels, err := parseSelectors(rec.Selectors)
	if err != nil {
		return nil, err
	}
	if nodes, err := parseNodes(rec.Nodes); err != nil || !slices.Equal(nodes, rec.Nodes) {
		return nil, fmt.Errorf("entry %s: nodes %q are not in canonical form: %v", rec.ID, rec.Nodes, err)
	}
	u := id.URL()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"badge"}},
		URIs:                  []*url.URL{u},
		DNSNames:              rec.DNSNames,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if len(rec.DNSNames) > 0 {
		tmpl.Subject.CommonName = rec.DNSNames[0]
	}
	return &Entry{Record: rec, ID: id, selectors: sels, tmpl: tmpl, leaf: &leafEncoderCache{}}, nil
}

// TrustDomain returns the trust domain of the snapshot.
func (s *Snapshot) TrustDomain() spiffeid.TrustDomain { return s.td }

// Done returns a channel that is closed when a newer snapshot replaces s.
func (s *Snapshot) Done() <-chan struct{} { return s.done }

// Kinds returns the selector kinds that some entry uses: the attestor need
// compute no others.
func (s *Snapshot) Kinds() attest.Kind { return s.matcher.Kinds() }

// Entries returns all entries in (CreatedAt, ID) order, those scoped to
// nodes included. The slice must not be modified.
func (s *Snapshot) Entries() []*Entry { return s.entries }

// Bundle returns the X.509 trust bundle of the trust domain.
func (s *Snapshot) Bundle() *x509bundle.Bundle { return s.bundle }

// BundleDER returns the bundle's certificates as concatenated DER, the
// encoding of the Workload API. It must not be modified.
func (s *Snapshot) BundleDER() []byte { return s.bundleDER }

// Match returns the entries whose selectors are all among the caller's, in
// (CreatedAt, ID) order: the first is the default SVID. Entries of blocked
// IDs never match, nor do entries scoped to nodes: Match answers for the
// server's own socket.
func (s *Snapshot) Match(caller attest.Set) []*Entry {
	return s.matcher.Match(caller)
}

// EntriesForNode returns the entries the agent of the named node serves:
// those scoped to the node or to every node ("*"), in (CreatedAt, ID)
// order, without the entries of blocked IDs. An evicted node gets none.
// The slice is the caller's.
func (s *Snapshot) EntriesForNode(name string) []*Entry {
	if s.evictedNodes[name] || name == AllNodes {
		return nil
	}
	own := s.forNode[name]
	out := make([]*Entry, 0, len(own)+len(s.forAll))
	out = append(append(out, own...), s.forAll...)
	slices.SortFunc(out, func(a, b *Entry) int { return a.order - b.order })
	return out
}

// NodeEvicted reports whether the named node is evicted: its channel must
// be closed, and it is served nothing until it attests with new proof.
func (s *Snapshot) NodeEvicted(name string) bool { return s.evictedNodes[name] }
