package sdk

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Test identities.
var (
	td        = spiffeid.RequireTrustDomainFromString("example.org")
	otherTD   = spiffeid.RequireTrustDomainFromString("another.org")
	ordersID  = spiffeid.RequireFromString("spiffe://example.org/orders")
	paymentID = spiffeid.RequireFromString("spiffe://example.org/payments")
	invID     = spiffeid.RequireFromString("spiffe://example.org/inventory")
)

// testCA is a root and an intermediate for one trust domain, minted in
// process. SVIDs are issued by the intermediate, as the daemon does.
type testCA struct {
	td       spiffeid.TrustDomain
	root     *x509.Certificate
	rootKey  crypto.Signer
	inter    *x509.Certificate
	interKey crypto.Signer
}

func newTestCA(t testing.TB, trustDomain spiffeid.TrustDomain) *testCA {
	t.Helper()
	ca := &testCA{td: trustDomain}
	now := time.Now()
	ca.rootKey = newKey(t)
	ca.root = createCert(t, &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"badge test"}, CommonName: trustDomain.Name() + " root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{trustDomain.ID().URL()},
	}, nil, ca.rootKey.Public(), ca.rootKey)
	ca.interKey = newKey(t)
	ca.inter = createCert(t, &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"badge test"}, CommonName: trustDomain.Name() + " intermediate"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(12 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{trustDomain.ID().URL()},
	}, ca.root, ca.interKey.Public(), ca.rootKey)
	return ca
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newSerial(t testing.TB) *big.Int {
	t.Helper()
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	return s.Add(s, big.NewInt(1))
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = newSerial(t)
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// svid issues an X509-SVID for id from the intermediate; mods adjust the
// leaf template (validity, DNS names, ...).
func (ca *testCA) svid(t testing.TB, id spiffeid.ID, mods ...func(*x509.Certificate)) *x509svid.SVID {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{id.URL()},
	}
	for _, m := range mods {
		m(tmpl)
	}
	leaf := createCert(t, tmpl, ca.inter, key.Public(), ca.interKey)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, ca.inter}, PrivateKey: key}
}

func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.root})
}

// crl returns a DER CRL revoking serials, signed by the intermediate (or
// by the root when byRoot is set).
func (ca *testCA) crl(t testing.TB, byRoot bool, serials ...*big.Int) []byte {
	t.Helper()
	issuer, key := ca.inter, ca.interKey
	if byRoot {
		issuer, key = ca.root, ca.rootKey
	}
	return signCRL(t, issuer, key, serials...)
}

func signCRL(t testing.TB, issuer *x509.Certificate, key crypto.Signer, serials ...*big.Int) []byte {
	t.Helper()
	now := time.Now()
	tmpl := &x509.RevocationList{
		Number:     newSerial(t),
		ThisUpdate: now.Add(-time.Minute),
		NextUpdate: now.Add(time.Hour),
	}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// svidMsg encodes svid as the Workload API sends it, with ca's bundle.
func (ca *testCA) svidMsg(t testing.TB, svid *x509svid.SVID, hint string) *workload.X509SVID {
	t.Helper()
	certs, key, err := svid.MarshalRaw()
	if err != nil {
		t.Fatal(err)
	}
	return &workload.X509SVID{
		SpiffeId:    svid.ID.String(),
		X509Svid:    certs,
		X509SvidKey: key,
		Bundle:      ca.root.Raw,
		Hint:        hint,
	}
}

// response is a Workload API response carrying svids (each with ca's
// bundle) and crls.
func (ca *testCA) response(t testing.TB, svids []*x509svid.SVID, crls ...[]byte) *workload.X509SVIDResponse {
	t.Helper()
	resp := &workload.X509SVIDResponse{Crl: crls}
	for _, s := range svids {
		resp.Svids = append(resp.Svids, ca.svidMsg(t, s, ""))
	}
	return resp
}

// shortTempDir returns a directory short enough for a Unix socket path
// (t.TempDir can exceed the 108-byte limit with long test names).
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// sameCert reports whether a and b are the same certificate.
func sameCert(a, b *x509.Certificate) bool {
	return a != nil && b != nil && bytes.Equal(a.Raw, b.Raw)
}

// waitFor waits until cond holds, re-checking each time changed's channel
// closes, and fails the test after 10 seconds.
func waitFor(t testing.TB, changed func() <-chan struct{}, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		ch := changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// staticSource is a fixed Source, for tests that do not need a Workload
// API and to exercise the path for Sources other than X509Source.
type staticSource struct {
	svid    *x509svid.SVID
	bundles *x509bundle.Set
}

func newStaticSource(svid *x509svid.SVID, bundles ...*x509bundle.Bundle) *staticSource {
	return &staticSource{svid: svid, bundles: x509bundle.NewSet(bundles...)}
}

func (s *staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

func (s *staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundles.GetX509BundleForTrustDomain(td)
}

// mutableRevocations is a RevocationChecker whose list the test swaps.
type mutableRevocations struct {
	p atomic.Pointer[RevocationList]
}

func (m *mutableRevocations) set(l *RevocationList) { m.p.Store(l) }

func (m *mutableRevocations) CheckRevocation(id spiffeid.ID, leaf *x509.Certificate) error {
	return m.p.Load().CheckRevocation(id, leaf)
}
