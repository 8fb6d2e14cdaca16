package sdk

import (
	"crypto/x509"
	"errors"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestRevocationList(t *testing.T) {
	blockedAt := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	l := NewRevocationList(
		[]RevokedSerial{{TrustDomain: td, Serial: big.NewInt(7)}, {TrustDomain: td, Serial: big.NewInt(7)}, {TrustDomain: otherTD, Serial: big.NewInt(8)}},
		[]BlockedID{{ID: invID, RevokedAt: blockedAt.Add(-time.Hour)}, {ID: invID, RevokedAt: blockedAt}},
	)
	if l.Len() != 3 {
		t.Errorf("Len = %d, want 3 (duplicates collapse)", l.Len())
	}
	cert := func(serial int64, notBefore time.Time) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: notBefore}
	}
	for _, tc := range []struct {
		name   string
		list   *RevocationList
		id     spiffeid.ID
		leaf   *x509.Certificate
		reason Reason // 0: accepted
	}{
		{"revoked serial", l, ordersID, cert(7, blockedAt), ReasonRevoked},
		{"same serial in another trust domain", l, spiffeid.RequireFromString("spiffe://another.org/x"), cert(7, blockedAt), 0},
		{"revoked in the other trust domain", l, spiffeid.RequireFromString("spiffe://another.org/x"), cert(8, blockedAt), ReasonRevoked},
		{"other serial", l, ordersID, cert(9, blockedAt), 0},
		{"blocked ID, issued before the block", l, invID, cert(9, blockedAt.Add(-time.Minute)), ReasonBlocked},
		{"blocked ID, the later block wins", l, invID, cert(9, blockedAt.Add(-30*time.Minute)), ReasonBlocked},
		{"blocked ID, issued at the block", l, invID, cert(9, blockedAt), 0},
		{"blocked ID, issued after the block", l, invID, cert(9, blockedAt.Add(time.Minute)), 0},
		{"nil list", nil, ordersID, cert(7, blockedAt), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.list.CheckRevocation(tc.id, tc.leaf)
			if tc.reason == 0 {
				if err != nil {
					t.Fatalf("CheckRevocation = %v, want nil", err)
				}
				return
			}
			wantAuthError(t, "CheckRevocation", err, tc.id, tc.reason)
		})
	}
	if at, ok := l.BlockedSince(invID); !ok || !at.Equal(blockedAt) {
		t.Errorf("BlockedSince = %v, %v; want %v", at, ok, blockedAt)
	}
	if !l.IsRevoked(td, big.NewInt(7)) || l.IsRevoked(td, big.NewInt(-7)) {
		t.Error("IsRevoked: want 7 revoked and -7 not")
	}
	// Serials longer than RFC 5280's 20 octets and negative ones (both
	// parse) take the slow path; they must still be found.
	huge, negative := new(big.Int).Lsh(big.NewInt(1), 200), big.NewInt(-9)
	odd := NewRevocationList([]RevokedSerial{{TrustDomain: td, Serial: huge}, {TrustDomain: td, Serial: negative}}, nil)
	if !odd.IsRevoked(td, huge) || !odd.IsRevoked(td, negative) || odd.IsRevoked(td, big.NewInt(9)) {
		t.Error("IsRevoked: long or negative serials are not matched exactly")
	}
	merged := l.merge(NewRevocationList([]RevokedSerial{{TrustDomain: td, Serial: big.NewInt(10)}}, nil))
	if merged.Len() != 4 || !merged.IsRevoked(td, big.NewInt(7)) || !merged.IsRevoked(td, big.NewInt(10)) {
		t.Errorf("merge lost entries: Len = %d", merged.Len())
	}
}

func TestRevocationsFromCRLs(t *testing.T) {
	ca, other, rogue := newTestCA(t, td), newTestCA(t, otherTD), newTestCA(t, td)
	orders := ca.svid(t, ordersID)
	// An SVID chain that carries a rogue intermediate: a CRL signed by it
	// must not be trusted, since the intermediate does not chain to the
	// bundle.
	rogueChain := rogue.svid(t, invID)
	bundles := x509bundle.NewSet(ca.bundle(), other.bundle())
	svids := []*x509svid.SVID{orders, rogueChain}
	s1, s2 := newSerial(t), newSerial(t)

	for _, tc := range []struct {
		name    string
		crl     []byte
		wantTD  spiffeid.TrustDomain
		wantErr bool
	}{
		{name: "signed by the intermediate in the SVID chain", crl: ca.crl(t, false, s1, s2), wantTD: td},
		{name: "signed by the root", crl: ca.crl(t, true, s1, s2), wantTD: td},
		{name: "signed by a federated root", crl: other.crl(t, true, s1, s2), wantTD: otherTD},
		{name: "signed by an intermediate with the same name but another key", crl: rogue.crl(t, false, s1), wantErr: true},
		{name: "signed by an intermediate that does not chain to the bundle", crl: signCRL(t, rogue.inter, rogue.interKey, s1), wantErr: true},
		{name: "signed by a root outside the bundles", crl: rogue.crl(t, true, s1), wantErr: true},
		{name: "not DER", crl: []byte("garbage"), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := revocationsFromCRLs([][]byte{tc.crl}, bundles, svids, time.Now())
			if tc.wantErr {
				if err == nil {
					t.Fatal("err = nil, want the CRL rejected")
				}
				if l.Len() != 0 {
					t.Errorf("a rejected CRL added %d entries", l.Len())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !l.IsRevoked(tc.wantTD, s1) || l.IsRevoked(tc.wantTD, orders.Certificates[0].SerialNumber) {
				t.Errorf("revoked set is wrong for %s", tc.wantTD)
			}
		})
	}

	// One bad CRL does not drop the good ones next to it.
	l, err := revocationsFromCRLs([][]byte{[]byte("garbage"), ca.crl(t, false, s1)}, bundles, svids, time.Now())
	if err == nil || !l.IsRevoked(td, s1) {
		t.Errorf("mixed CRLs: err = %v, revoked = %v; want an error and s1 revoked", err, l.IsRevoked(td, s1))
	}
}

func FuzzRevocationsFromCRLs(f *testing.F) {
	ca := newTestCA(f, td)
	bundles := x509bundle.NewSet(ca.bundle())
	svids := []*x509svid.SVID{ca.svid(f, ordersID)}
	f.Add(ca.crl(f, false, big.NewInt(1)))
	f.Add(ca.crl(f, true))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		l, err := revocationsFromCRLs([][]byte{der}, bundles, svids, time.Now())
		if err != nil && l.Len() != 0 {
			t.Errorf("a rejected CRL added %d entries", l.Len())
		}
	})
}

// TestSourceRevocations follows CRLs through the Workload API stream into
// the TLS configuration.
func TestSourceRevocations(t *testing.T) {
	ca, rogue := newTestCA(t, td), newTestCA(t, td)
	dir := shortTempDir(t)
	ordersAPI := startFakeAPI(t, filepath.Join(dir, "orders.sock"))
	paymentsAPI := startFakeAPI(t, filepath.Join(dir, "payments.sock"))
	orders, payments := ca.svid(t, ordersID), ca.svid(t, paymentID)
	ordersAPI.Push(ca.response(t, []*x509svid.SVID{orders}))
	paymentsAPI.Push(ca.response(t, []*x509svid.SVID{payments}))
	ordersSrc, paymentsSrc := newSource(t, ordersAPI), newSource(t, paymentsAPI)
	if paymentsSrc.Revocations().Len() != 0 {
		t.Fatal("revocation list not empty before any CRL")
	}

	srv := startTLSServer(t, ServerConfig(paymentsSrc, AuthorizeID(ordersID)))
	client := ClientConfig(ordersSrc, AuthorizeID(paymentID))
	if _, err := dial(srv.addr, client); err != nil {
		t.Fatal(err)
	}
	if res := srv.next(t); res.err != nil {
		t.Fatal(res.err)
	}

	// The daemon revokes the orders certificate.
	revoking := ca.response(t, []*x509svid.SVID{payments}, ca.crl(t, false, orders.Certificates[0].SerialNumber))
	paymentsAPI.Push(revoking)
	waitFor(t, paymentsSrc.Changed, "the CRL", func() bool { return paymentsSrc.Revocations().Len() == 1 })
	if err := paymentsSrc.CheckRevocation(ordersID, orders.Certificates[0]); err == nil {
		t.Fatal("CheckRevocation accepts the revoked certificate")
	}
	_, clientErr := dial(srv.addr, client)
	wantAuthError(t, "server", srv.next(t).err, ordersID, ReasonRevoked)
	wantAlert(t, "client", clientErr)

	// A CRL that does not verify must not un-revoke anything. The update
	// also rotates the SVID, so its arrival can be awaited.
	marker := ca.svid(t, paymentID)
	paymentsAPI.Push(ca.response(t, []*x509svid.SVID{marker}, rogue.crl(t, false)))
	waitFor(t, paymentsSrc.Changed, "the update with a forged CRL", hasLeaf(paymentsSrc, marker))
	if !paymentsSrc.Revocations().IsRevoked(td, orders.Certificates[0].SerialNumber) {
		t.Fatal("a CRL that fails verification dropped a revocation")
	}

	// A valid CRL that no longer lists the serial is the daemon's word.
	paymentsAPI.Push(ca.response(t, []*x509svid.SVID{payments}, ca.crl(t, false)))
	waitFor(t, paymentsSrc.Changed, "the new CRL", func() bool { return paymentsSrc.Revocations().Len() == 0 })
	if _, err := dial(srv.addr, client); err != nil {
		t.Fatalf("after the serial left the CRL: %v", err)
	}
	if res := srv.next(t); res.err != nil {
		t.Fatal(res.err)
	}
}

func TestAuthorizers(t *testing.T) {
	customErr := errors.New("custom refusal")
	for _, tc := range []struct {
		name   string
		authz  Authorizer
		id     spiffeid.ID
		accept bool
		inner  error
	}{
		{"any", AuthorizeAny(), invID, true, nil},
		{"ID: match", AuthorizeID(ordersID), ordersID, true, nil},
		{"ID: other", AuthorizeID(ordersID), invID, false, nil},
		{"one of: match", AuthorizeOneOf(ordersID, paymentID), paymentID, true, nil},
		{"one of: other", AuthorizeOneOf(ordersID, paymentID), invID, false, nil},
		{"one of: empty", AuthorizeOneOf(), ordersID, false, nil},
		{"member of: match", AuthorizeMemberOf(td), invID, true, nil},
		{"member of: other trust domain", AuthorizeMemberOf(td), spiffeid.RequireFromString("spiffe://another.org/orders"), false, nil},
		{"func: accept", AuthorizeFunc(func(spiffeid.ID) error { return nil }), invID, true, nil},
		{"func: refuse", AuthorizeFunc(func(spiffeid.ID) error { return customErr }), invID, false, customErr},
		{"func: go-spiffe matcher", AuthorizeFunc(spiffeid.MatchMemberOf(otherTD)), invID, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.authz(tc.id, nil)
			if tc.accept {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantAuthError(t, "authorizer", err, tc.id, ReasonNotAuthorized)
			if tc.inner != nil && !errors.Is(err, tc.inner) {
				t.Errorf("err = %v, want it to wrap %v", err, tc.inner)
			}
		})
	}
}

func TestAuthorizationErrorMessage(t *testing.T) {
	// The message must name the refused peer and the reason; check the
	// parts rather than the whole string.
	err := AuthorizeID(ordersID)(invID, nil)
	var ae *AuthorizationError
	if !errors.As(err, &ae) || ae.Detail == "" {
		t.Fatalf("err = %#v", err)
	}
	for _, part := range []string{invID.String(), ReasonNotAuthorized.String(), ordersID.String()} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("%q does not mention %q", err.Error(), part)
		}
	}
	if got := (&AuthorizationError{Reason: ReasonNoCertificate}).Error(); !strings.Contains(got, "no SPIFFE ID") {
		t.Errorf("%q does not say the peer had no ID", got)
	}
	if Reason(99).String() == "" {
		t.Error("unknown reason has no name")
	}
}
