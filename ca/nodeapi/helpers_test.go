package nodeapi_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.step.sm/crypto/minica"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/nodeapi"
	"github.com/badge-dev/badge/internal/nodeproto"
	"github.com/badge-dev/badge/internal/testclock"
	"github.com/badge-dev/badge/storage/bbolt"
)

// fixture is a real authority on a bbolt file, the agent listener on
// 127.0.0.1 and a CA of host certificates (x509pop).
type fixture struct {
	t      *testing.T
	auth   *ca.Authority
	clock  *testclock.Clock
	srv    *nodeapi.Server
	addr   string
	logs   *logBuffer
	hostCA *minica.CA
}

// logBuffer collects log lines, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines returns the log lines that contain every one of want.
func (l *logBuffer) lines(want ...string) []string {
	var out []string
next:
	for _, line := range strings.Split(l.String(), "\n") {
		for _, w := range want {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// openStore opens a real bbolt file in dir, closed at the end of the test.
func openStore(t *testing.T, dir string) *bbolt.Store {
	t.Helper()
	store, err := bbolt.Open(filepath.Join(dir, "badge.db"), &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func newFixture(t *testing.T, mod func(*nodeapi.Config)) *fixture {
	t.Helper()
	return newFixtureIn(t, t.TempDir(), nil, mod)
}

// newFixtureIn is newFixture on the bbolt file and keys of dir, the
// authority's store being wrap(store) if wrap is set.
func newFixtureIn(t *testing.T, dir string, wrap func(*bbolt.Store) ca.Store, mod func(*nodeapi.Config)) *fixture {
	t.Helper()
	var store ca.Store = openStore(t, dir)
	if wrap != nil {
		store = wrap(store.(*bbolt.Store))
	}
	// The clock starts at the real time, since minica dates its CAs by
	// the real clock (NotBefore is that time, whole seconds in the
	// certificate); tests move it forward to expire things. The host CA
	// is made first, so that the clock is never a second before it.
	hostCA, err := minica.New(minica.WithName("hosts"))
	if err != nil {
		t.Fatal(err)
	}
	clock := testclock.New(time.Now().Truncate(time.Second))
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	auth, err := ca.New(context.Background(), ca.Config{Store: store, KeyDir: filepath.Join(dir, "keys"), Time: clock.Now,
		Monotonic: clock.Monotonic, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auth.Close() })
	cfg := nodeapi.Config{Authority: auth, NodeCAs: []*x509.Certificate{hostCA.Root}, Time: clock.Now, Logger: log,
		Limits: nodeapi.Limits{AttestBackoff: -1}}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := nodeapi.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	return &fixture{t: t, auth: auth, clock: clock, srv: srv, addr: l.Addr().String(), logs: logs, hostCA: hostCA}
}

// client is the in-test agent's connection: the generated client over
// TLS 1.3 with the given certificate (nil: none), verifying that the
// server presents spiffe://TD/badge/server.
type client struct {
	nodeproto.NodeClient
	conn *grpc.ClientConn
}

func (f *fixture) dial(cert *tls.Certificate) *client {
	f.t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+f.addr, grpc.WithTransportCredentials(credentials.NewTLS(f.clientTLS(cert))))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { conn.Close() })
	return &client{NodeClient: nodeproto.NewNodeClient(conn), conn: conn}
}

// clientTLS is the agent's TLS configuration.
func (f *fixture) clientTLS(cert *tls.Certificate) *tls.Config {
	td := f.auth.TrustDomain()
	want := td.ID().String() + ca.ServerPath
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified as an SVID below
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, _, err := x509svid.Verify(cs.PeerCertificates, f.auth.Snapshot().Bundle(), x509svid.WithTime(f.clock.Now()))
			if err != nil {
				return err
			}
			if id.String() != want {
				return errors.New("server is " + id.String())
			}
			return nil
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrFor makes a CSR for key that asks for things the server must ignore.
func csrFor(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	evil, _ := url.Parse("spiffe://example.org/evil")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "evil.example"}, DNSNames: []string{"evil.example"}, URIs: []*url.URL{evil},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (f *fixture) token(node string) string {
	f.t.Helper()
	_, tok, err := f.auth.CreateJoinToken(context.Background(), ca.JoinTokenRequest{Node: node})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tlsCert is a client certificate from a DER chain and its key.
func tlsCert(t *testing.T, chain [][]byte, key crypto.Signer) *tls.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}

// attest attests node with a join token and returns its node SVID.
func (f *fixture) attest(node string) *tls.Certificate {
	f.t.Helper()
	key := newKey(f.t)
	resp, err := f.dial(nil).Attest(ctxT(f.t), &nodeproto.AttestRequest{JoinToken: f.token(node), Csr: csrFor(f.t, key)})
	if err != nil {
		f.t.Fatalf("Attest %s: %v", node, err)
	}
	return tlsCert(f.t, resp.Svid, key)
}

// hostCertAt is a leaf host certificate of ca for cn, valid now.
func (f *fixture) hostCertAt(ca *minica.CA, cn string) *x509.Certificate {
	f.t.Helper()
	key := newKey(f.t)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	c, err := ca.Sign(&x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, PublicKey: key.Public(),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// hostCert is a host certificate of the fixture's node CA for the DNS
// names (or, with none, the CN cn), valid from notBefore (zero: now).
func (f *fixture) hostCert(ca *minica.CA, cn string, dns []string, notBefore time.Time) *tls.Certificate {
	f.t.Helper()
	key := newKey(f.t)
	if notBefore.IsZero() {
		notBefore = f.clock.Now().Add(-time.Minute)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	c, err := ca.Sign(&x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: dns, PublicKey: key.Public(),
		NotBefore: notBefore, NotAfter: notBefore.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw, ca.Intermediate.Raw}, PrivateKey: key, Leaf: c}
}

// entry creates an entry scoped to nodes, a second after the previous
// one, so that entries are ordered as created.
func (f *fixture) entry(id string, ttl time.Duration, nodes ...string) string {
	f.t.Helper()
	f.clock.Advance(time.Second)
	e, err := f.auth.CreateEntry(context.Background(), ca.EntryRequest{SPIFFEID: id, Selectors: []string{"unix:uid:1001"}, TTL: ttl,
		DNSNames: []string{"svc.example.org"}, Nodes: nodes})
	if err != nil {
		f.t.Fatal(err)
	}
	return e.ID
}

// bundle is the authority's current X.509 bundle.
func (f *fixture) bundle() *x509bundle.Bundle { return f.auth.Snapshot().Bundle() }

func mustID(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
