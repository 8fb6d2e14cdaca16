package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/badge-dev/badge/storage"
)

// Signing for agents. An agent makes every private key itself and sends
// a PKCS#10 certificate request; the authority takes only the request's
// public key, after checking the request's signature (proof that the
// agent holds the private key). Everything else in the certificate comes
// from the authority: the SPIFFE ID, DNS names and lifetime of the entry
// (or the node's name for a node SVID), never what the request asks for.
// The certificates go through the one signing path (signLocked), so their
// serials are reserved and bound exactly as for local workloads: `badge
// revoke --id` finds every one of them.
//
// A node SVID lives longer than a workload SVID (DefaultNodeSVIDTTL, one
// hour), longer than the serial reservations of the pool cover
// (Config.MaxSVIDTTL past a block's life). So each node SVID takes a
// reservation of its own, durable before signing, whose NotAfter is the
// certificate's: after a crash that lost the binding, the start-up revokes
// its serial for as long as the certificate is valid. Node SVIDs are a
// few per node per hour; the extra disk flush does not matter.

// Node SVID lifetimes.
const (
	// DefaultNodeSVIDTTL is the lifetime of a node SVID unless the
	// operator sets another (badge server --node-svid-ttl).
	DefaultNodeSVIDTTL = time.Hour
	// MinNodeSVIDTTL and MaxNodeSVIDTTL bound the lifetime of a node SVID.
	MinNodeSVIDTTL = time.Minute
	MaxNodeSVIDTTL = 24 * time.Hour
	// MaxCSRLen bounds a certificate request, DER; a P-384 or RSA-8192
	// request is well under it.
	MaxCSRLen = 16 << 10
	// minRSABits and maxRSABits bound the RSA keys signed for: weaker keys
	// are refused, larger ones cost verifiers too much.
	minRSABits = 2048
	maxRSABits = 8192
	// nodeEntryID names node SVIDs in serial records.
	nodeEntryID = "badge-node"
)

// Audit actions of the agent listener.
const (
	// AuditNodeAttest records a node that attested: the target is the
	// node, the detail the method and the agent's address.
	AuditNodeAttest = "node.attest"
	// AuditNodeRefused records, per address and interval, the attestations
	// refused, with their count and reasons.
	AuditNodeRefused = "node.refused"
)

// ErrCSR is matched by every refusal of a certificate request.
var ErrCSR = errors.New("ca: certificate request refused")

// ParseCSR parses a PKCS#10 certificate request (DER), checks its
// signature with its own public key (proof of possession of the private
// key) and returns that public key: ECDSA P-256 or P-384, RSA of 2048 to
// 8192 bits, or Ed25519. Nothing else of the request is used. A refusal
// matches ErrCSR and names what is wrong.
func ParseCSR(der []byte) (crypto.PublicKey, error) {
	if len(der) == 0 || len(der) > MaxCSRLen {
		return nil, fmt.Errorf("%w: a certificate request has 1 to %d bytes, not %d", ErrCSR, MaxCSRLen, len(der))
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: not a PKCS#10 request (DER): %v", ErrCSR, err)
	}
	if err := checkCSRKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: its signature does not verify with its public key (no proof of possession): %v", ErrCSR, err)
	}
	return csr.PublicKey, nil
}

// checkCSRKey accepts the key types badge signs for.
func checkCSRKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve %s; want P-256 or P-384", ErrCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits || n > maxRSABits {
			return fmt.Errorf("%w: RSA key of %d bits; want %d to %d", ErrCSR, n, minRSABits, maxRSABits)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("%w: key type %T; want ECDSA P-256 or P-384, RSA of at least %d bits, or Ed25519", ErrCSR, pub, minRSABits)
	}
	return nil
}

// SignCSR signs an X.509-SVID of entry e of snapshot s for the public key
// of the certificate request csr (DER; see ParseCSR): the entry's SPIFFE
// ID, DNS names and lifetime, as SignX509SVID gives a local workload, with
// the serial reserved and bound the same way. The result has no KeyDER: the
// key stays with whoever made the request. A blocked ID is refused with
// ErrBlocked. Whether e may be signed for the caller is the caller's to
// decide (an agent gets only the entries scoped to its node).
func (a *Authority) SignCSR(ctx context.Context, s *Snapshot, e *Entry, csr []byte) (*X509SVID, error) {
	pub, err := ParseCSR(csr)
	if err != nil {
		return nil, err
	}
	return a.signEntry(ctx, s, e, pub)
}

// nodeEntry returns the entry of the node SVID of the named node: not
// registered, matched by no caller, for TLS clients only.
func (a *Authority) nodeEntry(name string) (*Entry, error) {
	id, err := a.NodeID(name)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"badge"}},
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	rec := storage.Entry{ID: nodeEntryID, SPIFFEID: id.String(), Revision: 1}
	return &Entry{Record: rec, ID: id, tmpl: tmpl}, nil
}

// SignNodeSVID signs a node SVID, spiffe://TRUST_DOMAIN/badge/node/NAME,
// for the public key of the certificate request csr (DER; see ParseCSR),
// valid for ttl (MinNodeSVIDTTL to MaxNodeSVIDTTL, and never past the
// signing CA), and records its serial as the node's current one
// (SetNodeSVID). The node must have attested (ConsumeJoinToken or
// RegisterNode) and not be evicted: an evicted node, whose node SVID ID is
// blocked, is refused with ErrNodeEvicted, an unknown one with
// storage.ErrNotFound. The serial is reserved durably for the whole
// lifetime (see the top of this file) and bound like any SVID's, so
// `badge revoke --id` and `badge node evict` find it.
func (a *Authority) SignNodeSVID(ctx context.Context, name string, csr []byte, ttl time.Duration) (*X509SVID, error) {
	if ttl < MinNodeSVIDTTL || ttl > MaxNodeSVIDTTL {
		return nil, invalid("node_svid_ttl", ttl.String(), "a node SVID lives from %s to %s", MinNodeSVIDTTL, MaxNodeSVIDTTL)
	}
	e, err := a.nodeEntry(name)
	if err != nil {
		return nil, err
	}
	pub, err := ParseCSR(csr)
	if err != nil {
		return nil, err
	}
	svid, err := a.signNodeSVID(ctx, e, pub, ttl)
	if err != nil {
		return nil, err
	}
	// An eviction from here on revokes the serial (bound above); one
	// before makes SetNodeSVID fail, and the certificate is dropped.
	if err := a.SetNodeSVID(ctx, name, svid.Serial); err != nil {
		return nil, err
	}
	return svid, nil
}

func (a *Authority) signNodeSVID(ctx context.Context, e *Entry, pub crypto.PublicKey, ttl time.Duration) (*X509SVID, error) {
	a.issueMu.RLock()
	defer a.issueMu.RUnlock()
	s := a.Snapshot()
	if err := s.CheckRevocation(X509Credential(e.ID, "")); err != nil {
		if errors.Is(err, ErrBlocked) {
			return nil, fmt.Errorf("ca: node SVID for %s: %w (%w)", e.ID, ErrNodeEvicted, err)
		}
		return nil, fmt.Errorf("ca: node SVID for %s: %w", e.ID, err)
	}
	now := a.cfg.Time()
	serials, hexes, err := newSerials(1)
	if err != nil {
		return nil, err
	}
	if err := a.store.ReserveSerials(ctx, storage.Reservation{Serials: hexes, NotAfter: now.Add(ttl)}); err != nil {
		return nil, fmt.Errorf("ca: reserving the serial of a node SVID: %w", err)
	}
	return a.signLocked(ctx, s, e, pub, serials[0], now, ttl)
}

// NodeEntries returns what the agent of the named node serves from s: the
// entries scoped to the node or to every node, in (CreatedAt, ID) order,
// with those of blocked IDs (blocked true), which EntriesForNode leaves
// out. An evicted node gets none. It costs what the node's entries cost,
// not what all entries do.
func (s *Snapshot) NodeEntries(name string) []NodeEntry {
	if s.evictedNodes[name] || name == AllNodes {
		return nil
	}
	idx := s.agentIndex()
	var blocked []*Entry
	for _, e := range idx.blockedScoped {
		if n := e.Record.Nodes; n[0] == AllNodes || slices.Contains(n, name) {
			blocked = append(blocked, e)
		}
	}
	own := s.forNode[name]
	out := make([]NodeEntry, 0, len(own)+len(s.forAll)+len(blocked))
	for _, e := range own {
		out = append(out, NodeEntry{Entry: e})
	}
	for _, e := range s.forAll {
		out = append(out, NodeEntry{Entry: e})
	}
	for _, e := range blocked {
		out = append(out, NodeEntry{Entry: e, Blocked: true})
	}
	slices.SortFunc(out, func(a, b NodeEntry) int { return a.order - b.order })
	return out
}

// NodeEntry is an entry an agent serves.
type NodeEntry struct {
	*Entry
	// Blocked is set when the entry's ID is blocked: no SVID is signed
	// for it.
	Blocked bool
}

// NodeEntry returns the entry of the given id if the named node serves it
// (see NodeEntries), and whether it does.
func (s *Snapshot) NodeEntry(name, id string) (NodeEntry, bool) {
	if s.evictedNodes[name] || name == AllNodes {
		return NodeEntry{}, false
	}
	e, ok := s.agentIndex().byID[id]
	if !ok {
		return NodeEntry{}, false
	}
	if n := e.Record.Nodes; len(n) == 0 || (n[0] != AllNodes && !slices.Contains(n, name)) {
		return NodeEntry{}, false
	}
	return NodeEntry{Entry: e, Blocked: s.revocations.ids[e.ID].Blocked}, true
}

// entryIndex is what agents look up in a snapshot, built once, on first
// use: the entries by id, and the entries scoped to nodes whose ID is
// blocked (which the snapshot's node index leaves out).
type entryIndex struct {
	once          sync.Once
	byID          map[string]*Entry
	blockedScoped []*Entry
}

func (s *Snapshot) agentIndex() *entryIndex {
	x := s.byID
	x.once.Do(func() {
		x.byID = make(map[string]*Entry, len(s.entries))
		for _, e := range s.entries {
			x.byID[e.Record.ID] = e
			if len(e.Record.Nodes) > 0 && s.revocations.ids[e.ID].Blocked {
				x.blockedScoped = append(x.blockedScoped, e)
			}
		}
	})
	return x
}
