package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/bbolt"
)

// csrOf is a CSR for key that asks for names the authority must ignore.
func csrOf(tb testing.TB, key crypto.Signer) []byte {
	tb.Helper()
	evil, _ := url.Parse("spiffe://example.org/evil")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "evil.example"}, DNSNames: []string{"evil.example"}, URIs: []*url.URL{evil},
	}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

func ecKey(tb testing.TB, c elliptic.Curve) crypto.Signer {
	tb.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func TestParseCSR(t *testing.T) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := csrOf(t, ecKey(t, elliptic.P256()))
	badSig := slices.Clone(good)
	badSig[len(badSig)-3] ^= 0xff // in the signature
	for _, tc := range []struct {
		name string
		der  []byte
		ok   bool
	}{
		{"P-256", good, true},
		{"P-384", csrOf(t, ecKey(t, elliptic.P384())), true},
		{"Ed25519", csrOf(t, ed), true},
		{"RSA 2048", csrOf(t, rsa2048), true},
		{"P-224", csrOf(t, ecKey(t, elliptic.P224())), false},
		{"RSA 1024", csrOf(t, rsa1024), false},
		{"signature does not verify", badSig, false},
		{"empty", nil, false},
		{"not DER", []byte("-----BEGIN CERTIFICATE REQUEST-----"), false},
		{"too long", make([]byte, MaxCSRLen+1), false},
	} {
		pub, err := ParseCSR(tc.der)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrCSR)) || tc.ok != (pub != nil) {
			t.Errorf("%s: ParseCSR = %v, %v; want ok %v (refusals matching ErrCSR)", tc.name, pub, err, tc.ok)
		}
	}
}

func FuzzParseCSR(f *testing.F) {
	f.Add(csrOf(f, ecKey(f, elliptic.P256())))
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	f.Add(csrOf(f, ed))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := ParseCSR(der)
		if err != nil {
			if !errors.Is(err, ErrCSR) {
				t.Fatalf("refusal %v does not match ErrCSR", err)
			}
			return
		}
		if checkCSRKey(pub) != nil {
			t.Fatalf("accepted a key of type %T that checkCSRKey refuses", pub)
		}
	})
}

// TestSignCSR: the certificate has the entry's ID, DNS names and TTL, the
// CSR's key and nothing else of the CSR; revocation by ID finds it; a
// blocked ID is refused.
func TestSignCSR(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	ctx := context.Background()
	rec, err := a.CreateEntry(ctx, EntryRequest{SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:uid:1001"},
		TTL: 2 * time.Minute, DNSNames: []string{"web.example.org"}, Nodes: []string{"web-1"}})
	if err != nil {
		t.Fatal(err)
	}
	snap := a.Snapshot()
	e := entryFor(t, snap, rec.ID)
	key := ecKey(t, elliptic.P256())
	svid, err := a.SignCSR(ctx, snap, e, csrOf(t, key))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := x509.ParseCertificates(svid.CertChainDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/web" || !slices.Equal(leaf.DNSNames, []string{"web.example.org"}) ||
		leaf.Subject.CommonName != "web.example.org" {
		t.Errorf("certificate names URIs %v, DNS %v, CN %q; want the entry's alone", leaf.URIs, leaf.DNSNames, leaf.Subject.CommonName)
	}
	if got := leaf.NotAfter.Sub(env.clock.Now()); got != 2*time.Minute {
		t.Errorf("certificate lives %s, want the entry's 2m", got)
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) || svid.KeyDER != nil {
		t.Error("certificate is not for the CSR's key, or a key was handed out")
	}
	if svid.Serial != leaf.SerialNumber.Text(16) {
		t.Errorf("Serial %s, certificate serial %s", svid.Serial, leaf.SerialNumber.Text(16))
	}
	res, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Block: true})
	if err != nil || res.Revoked != 1 || !a.Snapshot().SerialRevoked(svid.Serial) {
		t.Errorf("RevokeID = %+v, %v; serial revoked %v; want the CSR's certificate found", res, err, a.Snapshot().SerialRevoked(svid.Serial))
	}
	if _, err := a.SignCSR(ctx, snap, e, csrOf(t, key)); !errors.Is(err, ErrBlocked) {
		t.Errorf("SignCSR of a blocked ID = %v, want ErrBlocked", err)
	}
	bad := csrOf(t, key)
	bad[len(bad)-3] ^= 0xff
	if _, err := a.SignCSR(ctx, snap, e, bad); !errors.Is(err, ErrCSR) {
		t.Errorf("SignCSR with a bad signature = %v, want ErrCSR", err)
	}
}

// TestSignNodeSVID: a node SVID for the node's ID, for TLS clients, of the
// given lifetime, recorded as the node's and found by eviction; none for
// an unknown or evicted node.
func TestSignNodeSVID(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	ctx := context.Background()
	if _, err := a.RegisterNode(ctx, NodeAttestation{Name: "web-1", Method: storage.AttestX509PoP}); err != nil {
		t.Fatal(err)
	}
	key := ecKey(t, elliptic.P256())
	svid, err := a.SignNodeSVID(ctx, "web-1", csrOf(t, key), DefaultNodeSVIDTTL)
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := x509.ParseCertificates(svid.CertChainDER)
	leaf := chain[0]
	if leaf.URIs[0].String() != "spiffe://example.org/badge/node/web-1" || len(leaf.DNSNames) != 0 ||
		!slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("node SVID: URIs %v, DNS %v, EKU %v", leaf.URIs, leaf.DNSNames, leaf.ExtKeyUsage)
	}
	if got := leaf.NotAfter.Sub(env.clock.Now()); got != time.Hour {
		t.Errorf("node SVID lives %s, want 1h", got)
	}
	nodes, _ := a.ListNodes(ctx)
	if len(nodes) != 1 || nodes[0].SVIDSerial != svid.Serial {
		t.Errorf("node record %+v, want serial %s", nodes, svid.Serial)
	}
	for _, ttl := range []time.Duration{time.Second, 25 * time.Hour} {
		if _, err := a.SignNodeSVID(ctx, "web-1", csrOf(t, key), ttl); !errors.Is(err, ErrInvalid) {
			t.Errorf("SignNodeSVID(ttl %s) = %v, want ErrInvalid", ttl, err)
		}
	}
	if _, err := a.SignNodeSVID(ctx, "ghost", csrOf(t, key), time.Hour); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("SignNodeSVID(unknown node) = %v, want ErrNotFound", err)
	}
	res, err := a.EvictNode(ctx, "web-1", 0)
	if err != nil || res.Revoked != 1 || !a.Snapshot().SerialRevoked(svid.Serial) {
		t.Errorf("EvictNode = %+v, %v; want the node SVID revoked", res, err)
	}
	if _, err := a.SignNodeSVID(ctx, "web-1", csrOf(t, key), time.Hour); !errors.Is(err, ErrNodeEvicted) {
		t.Errorf("SignNodeSVID(evicted) = %v, want ErrNodeEvicted", err)
	}
}

// lostNodeBindings is lostBindings for a store that keeps nodes.
type lostNodeBindings struct{ *bbolt.Store }

func (lostNodeBindings) BindSerial(context.Context, storage.Serial) error { return nil }

// TestNodeSVIDLostBinding: a node SVID whose binding was lost in a crash
// is revoked at the next start for its whole lifetime, not only the
// pool's reservation span.
func TestNodeSVIDLostBinding(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	a, err := New(ctx, env.config(func(c *Config) { c.Store = lostNodeBindings{env.store} }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RegisterNode(ctx, NodeAttestation{Name: "web-1", Method: storage.AttestX509PoP}); err != nil {
		t.Fatal(err)
	}
	svid, err := a.SignNodeSVID(ctx, "web-1", csrOf(t, ecKey(t, elliptic.P256())), MaxNodeSVIDTTL)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	env.store.Close()
	env.store = openStore(t, filepath.Dir(env.keyDir), true)
	b := env.open(t, nil)
	_, revoked := b.Revocations()
	if len(revoked) != 1 || revoked[0].Serial != svid.Serial || revoked[0].NotAfter.Before(svid.NotAfter) {
		t.Fatalf("revoked after the crash: %+v; want serial %s until at least %s", revoked, svid.Serial, svid.NotAfter)
	}
}

// TestRegisterNodeNewProof: an evicted x509pop node is refused with proof
// made before its eviction and accepted, eviction lifted, with proof made
// after.
func TestRegisterNodeNewProof(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	ctx := context.Background()
	att := NodeAttestation{Name: "web-1", Method: storage.AttestX509PoP, ProofNotBefore: env.clock.Now().Add(-time.Hour)}
	if _, err := a.RegisterNode(ctx, att); err != nil {
		t.Fatal(err)
	}
	if _, err := a.EvictNode(ctx, "web-1", 0); err != nil {
		t.Fatal(err)
	}
	evictedAt := env.clock.Now()
	env.clock.Advance(time.Minute)
	for _, nb := range []time.Time{att.ProofNotBefore, evictedAt} {
		if _, err := a.RegisterNode(ctx, NodeAttestation{Name: "web-1", Method: storage.AttestX509PoP, ProofNotBefore: nb}); !errors.Is(err, ErrNodeEvicted) {
			t.Errorf("RegisterNode with proof of %s (evicted %s) = %v, want ErrNodeEvicted", nb, evictedAt, err)
		}
	}
	n, err := a.RegisterNode(ctx, NodeAttestation{Name: "web-1", Method: storage.AttestX509PoP, ProofNotBefore: evictedAt.Add(time.Second)})
	if err != nil || n.Evicted() {
		t.Fatalf("RegisterNode with proof made after the eviction = %+v, %v", n, err)
	}
	id, _ := a.NodeID("web-1")
	if a.Snapshot().NodeEvicted("web-1") {
		t.Error("the snapshot still reports the node evicted")
	}
	if r, ok := a.Snapshot().Revoked(id); ok && r.Blocked {
		t.Error("the node SVID ID is still blocked")
	}
	nodes, _ := a.ListNodes(ctx)
	if len(nodes) != 1 || nodes[0].Evicted() {
		t.Errorf("stored node %+v, want not evicted", nodes)
	}
	if _, err := a.SignNodeSVID(ctx, "web-1", csrOf(t, ecKey(t, elliptic.P256())), time.Hour); err != nil {
		t.Errorf("SignNodeSVID after new proof: %v", err)
	}
}

// TestNodeEntries: what an agent serves, blocked entries flagged, and the
// lookup by id.
func TestNodeEntries(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	ctx := context.Background()
	create := func(id string, nodes ...string) string {
		env.clock.Advance(time.Second)
		e, err := a.CreateEntry(ctx, EntryRequest{SPIFFEID: id, Selectors: []string{"unix:uid:1"}, Nodes: nodes})
		if err != nil {
			t.Fatal(err)
		}
		return e.ID
	}
	own := create("spiffe://example.org/own", "web-1", "web-2")
	create("spiffe://example.org/other", "db-1")
	create("spiffe://example.org/local")
	all := create("spiffe://example.org/all", "*")
	if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/all", Block: true}); err != nil {
		t.Fatal(err)
	}
	s := a.Snapshot()
	var got []string
	for _, e := range s.NodeEntries("web-1") {
		got = append(got, e.ID.Path()+map[bool]string{true: " blocked"}[e.Blocked])
	}
	if want := []string{"/own", "/all blocked"}; !slices.Equal(got, want) {
		t.Errorf("NodeEntries(web-1) = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		node, id string
		ok       bool
	}{
		{"web-1", own, true}, {"web-2", own, true}, {"db-1", own, false}, {"web-1", all, true}, {"web-1", "nope", false}, {"*", all, false},
	} {
		if _, ok := s.NodeEntry(tc.node, tc.id); ok != tc.ok {
			t.Errorf("NodeEntry(%s, %s) = %v, want %v", tc.node, tc.id, ok, tc.ok)
		}
	}
}
