package sdkgrpc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/badge-dev/badge/sdk"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("example.org")
	ordersID  = spiffeid.RequireFromString("spiffe://example.org/orders")
	paymentID = spiffeid.RequireFromString("spiffe://example.org/payments")
	invID     = spiffeid.RequireFromString("spiffe://example.org/inventory")
)

// testCA is a root that issues SVIDs directly; the sdk package's own
// tests cover intermediates.
type testCA struct {
	root *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key := newKey(t)
	root := mint(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "sdkgrpc test root"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, key, key)
	return &testCA{root: root, key: key}
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mint(t *testing.T, tmpl, parent *x509.Certificate, key, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (ca *testCA) svid(t *testing.T, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	key := newKey(t)
	leaf := mint(t, &x509.Certificate{
		KeyUsage: x509.KeyUsageDigitalSignature,
		URIs:     []*url.URL{id.URL()},
	}, ca.root, key, ca.key)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// source is a fixed sdk.Source.
type source struct {
	svid    *x509svid.SVID
	bundles *x509bundle.Set
}

func (ca *testCA) source(t *testing.T, id spiffeid.ID) *source {
	return &source{svid: ca.svid(t, id), bundles: x509bundle.NewSet(x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.root}))}
}

func (s *source) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s *source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundles.GetX509BundleForTrustDomain(td)
}

// revocations is a RevocationChecker the test can switch on.
type revocations struct {
	list atomic.Pointer[sdk.RevocationList]
}

func (r *revocations) CheckRevocation(id spiffeid.ID, leaf *x509.Certificate) error {
	return r.list.Load().CheckRevocation(id, leaf)
}

// whoAmI is a one-method service, described by hand so the test needs no
// generated code. It answers with the caller's SPIFFE ID.
var whoAmI = grpc.ServiceDesc{
	ServiceName: "badge.test.WhoAmI",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Get",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(emptypb.Empty)); err != nil {
				return nil, err
			}
			id, ok := PeerIDFromContext(ctx)
			if !ok {
				return nil, status.Error(codes.Unauthenticated, "no peer SPIFFE ID")
			}
			return wrapperspb.String(id.String()), nil
		},
	}},
}

func startServer(t *testing.T, creds credentials.TransportCredentials) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(creds))
	s.RegisterService(&whoAmI, struct{}{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(l)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return l.Addr().String()
}

func call(t *testing.T, addr string, creds credentials.TransportCredentials) (string, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return invoke(conn)
}

func invoke(conn *grpc.ClientConn) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := new(wrapperspb.StringValue)
	err := conn.Invoke(ctx, "/badge.test.WhoAmI/Get", new(emptypb.Empty), out)
	return out.GetValue(), err
}

// refusals records the peer refusals a config's trace reports.
type refusals struct {
	mu   sync.Mutex
	errs []error
}

func (r *refusals) option() sdk.ConfigOption {
	return sdk.WithTrace(sdk.Trace{VerifiedPeer: func(i sdk.VerifiedPeerInfo) {
		if i.Err != nil {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.errs = append(r.errs, i.Err)
		}
	}})
}

func (r *refusals) only(t *testing.T, id spiffeid.ID, reason sdk.Reason) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) == 0 {
		t.Fatal("no refusal was traced")
	}
	for _, err := range r.errs {
		var ae *sdk.AuthorizationError
		if !errors.As(err, &ae) || ae.ID != id || ae.Reason != reason {
			t.Errorf("refusal %v, want %s refused as %q", err, id, reason)
		}
	}
}

func TestCredentials(t *testing.T) {
	ca := newTestCA(t)
	var serverRefusals refusals
	addr := startServer(t, ServerCredentials(ca.source(t, paymentID), sdk.AuthorizeID(ordersID), serverRefusals.option()))

	t.Run("authorized caller", func(t *testing.T) {
		got, err := call(t, addr, ClientCredentials(ca.source(t, ordersID), sdk.AuthorizeID(paymentID)))
		if err != nil {
			t.Fatal(err)
		}
		if got != ordersID.String() {
			t.Errorf("handler saw %q, want %s", got, ordersID)
		}
	})
	t.Run("server refuses another caller", func(t *testing.T) {
		_, err := call(t, addr, ClientCredentials(ca.source(t, invID), sdk.AuthorizeID(paymentID)))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v, want Unavailable", err)
		}
		serverRefusals.only(t, invID, sdk.ReasonNotAuthorized)
	})
	t.Run("client refuses the server", func(t *testing.T) {
		var clientRefusals refusals
		_, err := call(t, addr, ClientCredentials(ca.source(t, ordersID), sdk.AuthorizeID(invID), clientRefusals.option()))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v, want Unavailable", err)
		}
		clientRefusals.only(t, paymentID, sdk.ReasonNotAuthorized)
	})
}

func TestPeerIDFromContextWithoutPeer(t *testing.T) {
	if id, ok := PeerIDFromContext(context.Background()); ok {
		t.Errorf("PeerIDFromContext = %s, want false", id)
	}
}

func TestWatchConns(t *testing.T) {
	ca := newTestCA(t)
	rc := &revocations{}
	w := sdk.NewConnWatcher(rc)
	addr := startServer(t, WatchConns(ServerCredentials(ca.source(t, paymentID), sdk.AuthorizeAny(), sdk.WithRevocationChecker(rc)), w))

	orders := ca.source(t, ordersID)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(ClientCredentials(orders, sdk.AuthorizeID(paymentID))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := invoke(conn); err != nil {
		t.Fatal(err)
	}
	if w.Len() != 1 {
		t.Fatalf("watching %d connections, want 1", w.Len())
	}

	rc.list.Store(sdk.NewRevocationList([]sdk.RevokedSerial{{TrustDomain: td, Serial: orders.svid.Certificates[0].SerialNumber}}, nil))
	if n := w.Sweep(); n != 1 {
		t.Fatalf("Sweep closed %d connections, want 1", n)
	}
	// The client's connection is gone and it cannot make a new one.
	if _, err := invoke(conn); status.Code(err) != codes.Unavailable {
		t.Fatalf("RPC after revocation: %v, want Unavailable", err)
	}
	if w.Len() != 0 {
		t.Errorf("still watching %d connections", w.Len())
	}
}
