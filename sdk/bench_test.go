package sdk

// Compare the SDK with plain crypto/tls:
//
//	go test -run '^$' -bench . -benchmem -count=6 ./sdk/ > bench.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /impl bench.txt

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// benchSetup holds a server and a client identity, served both by
// X509Sources following a (fake) Workload API and as static certificates.
type benchSetup struct {
	ca                 *testCA
	orders, payments   *x509svid.SVID
	ordersSrc, paysSrc *X509Source
}

func newBenchSetup(b *testing.B) *benchSetup {
	b.Helper()
	ca := newTestCA(b, td)
	s := &benchSetup{ca: ca}
	// The DNS name lets plain crypto/tls verify the server the usual way.
	s.payments = ca.svid(b, paymentID, func(c *x509.Certificate) { c.DNSNames = []string{"payments.example.org"} })
	s.orders = ca.svid(b, ordersID)
	dir := shortTempDir(b)
	ordersAPI := startFakeAPI(b, filepath.Join(dir, "orders.sock"))
	paymentsAPI := startFakeAPI(b, filepath.Join(dir, "payments.sock"))
	ordersAPI.Push(ca.response(b, []*x509svid.SVID{s.orders}))
	paymentsAPI.Push(ca.response(b, []*x509svid.SVID{s.payments}))
	s.ordersSrc, s.paysSrc = newSource(b, ordersAPI), newSource(b, paymentsAPI)
	return s
}

func tlsCert(svid *x509svid.SVID) tls.Certificate {
	c := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, x := range svid.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// plainConfigs are crypto/tls configurations with the same certificates
// and standard x509 verification (root pool, host name on the client).
func (s *benchSetup) plainConfigs() (server, client *tls.Config) {
	roots := x509.NewCertPool()
	roots.AddCert(s.ca.root)
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{tlsCert(s.payments)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{tlsCert(s.orders)},
		RootCAs:      roots,
		ServerName:   "payments.example.org",
	}
	return server, client
}

func (s *benchSetup) sdkConfigs() (server, client *tls.Config) {
	return ServerConfig(s.paysSrc, AuthorizeID(ordersID)), ClientConfig(s.ordersSrc, AuthorizeID(paymentID))
}

// handshake runs one full mutual TLS handshake over net.Pipe.
func handshake(b *testing.B, server, client *tls.Config) {
	c1, c2 := net.Pipe()
	srv, cli := tls.Server(c1, server), tls.Client(c2, client)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	c1.Close()
	c2.Close()
}

// BenchmarkHandshake measures a full mutual TLS 1.3 handshake (both
// sides) with the SDK configurations against plain crypto/tls. Session
// tickets are off on both so every handshake is a full one, and so that
// net.Pipe, which has no buffer, does not block on the ticket. Besides
// wall time it reports cpu-ns/op, the process CPU time per handshake,
// which stays comparable on a busy machine.
func BenchmarkHandshake(b *testing.B) {
	s := newBenchSetup(b)
	plainServer, plainClient := s.plainConfigs()
	sdkServer, sdkClient := s.sdkConfigs()
	for _, bc := range []struct {
		name           string
		server, client *tls.Config
	}{
		{"impl=plain", plainServer, plainClient},
		{"impl=sdk", sdkServer, sdkClient},
	} {
		bc.server.SessionTicketsDisabled = true
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			start, ok := processCPU()
			n := 0
			for b.Loop() {
				handshake(b, bc.server, bc.client)
				n++
			}
			if end, _ := processCPU(); ok {
				b.ReportMetric(float64(end-start)/float64(n), "cpu-ns/op")
			}
		})
	}
}

// BenchmarkGetCertificate measures picking the certificate for one
// handshake: an atomic load for X509Source, against go-spiffe's
// tlsconfig.GetCertificate, which rebuilds a tls.Certificate each time.
func BenchmarkGetCertificate(b *testing.B) {
	s := newBenchSetup(b)
	hello := &tls.ClientHelloInfo{}
	for _, bc := range []struct {
		name string
		get  func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	}{
		{"impl=sdk", ServerConfig(s.paysSrc, AuthorizeAny()).GetCertificate},
		{"impl=sdk-static-source", ServerConfig(newStaticSource(s.payments, s.ca.bundle()), AuthorizeAny()).GetCertificate},
		{"impl=go-spiffe", tlsconfig.GetCertificate(s.paysSrc)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.get(hello); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyPeer measures the server's check of a client chain: the
// SDK's VerifyConnection (SPIFFE chain verification, revocation lookup
// against 100,000 revoked serials, authorizer) against a plain
// x509.Certificate.Verify with prebuilt pools.
func BenchmarkVerifyPeer(b *testing.B) {
	s := newBenchSetup(b)
	rl := bigRevocationList(b, 100_000)
	v := newVerifier(s.paysSrc, AuthorizeOneOf(manyIDs(100, ordersID)...), []ConfigOption{WithRevocationChecker(rl)})
	cs := tls.ConnectionState{PeerCertificates: s.orders.Certificates}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(s.ca.root)
	inter.AddCert(s.ca.inter)
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}

	b.Run("impl=plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.orders.Certificates[0].Verify(opts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=sdk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := v.verifyConnection(cs); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAuthorizeAndRevocation measures the per-handshake policy cost
// on top of chain verification: the authorizer (one of 100 IDs) and the
// revocation lookup, for revocation lists of growing size. The cost must
// not grow with the list.
func BenchmarkAuthorizeAndRevocation(b *testing.B) {
	ca := newTestCA(b, td)
	leaf := ca.svid(b, ordersID).Certificates[0]
	authz := AuthorizeOneOf(manyIDs(100, ordersID)...)
	for _, n := range []int{0, 1_000, 100_000, 1_000_000} {
		rl := bigRevocationList(b, n)
		b.Run(fmt.Sprintf("revoked=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := rl.CheckRevocation(ordersID, leaf); err != nil {
					b.Fatal(err)
				}
				if err := authz(ordersID, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rl.Len()), "entries")
		})
	}
}

func bigRevocationList(b *testing.B, n int) *RevocationList {
	b.Helper()
	serials := make([]RevokedSerial, n)
	for i := range serials {
		serials[i] = RevokedSerial{TrustDomain: td, Serial: new(big.Int).Lsh(big.NewInt(int64(i+1)), 64)}
	}
	return NewRevocationList(serials, nil)
}

func manyIDs(n int, last spiffeid.ID) []spiffeid.ID {
	ids := make([]spiffeid.ID, 0, n)
	for i := range n - 1 {
		ids = append(ids, spiffeid.RequireFromString(fmt.Sprintf("spiffe://example.org/service-%d", i)))
	}
	return append(ids, last)
}
