package sdk

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// tlsServer accepts TLS connections on 127.0.0.1, completes the
// handshake, writes one byte and reports each outcome on results.
type tlsServer struct {
	addr    string
	results chan serverResult
}

type serverResult struct {
	err   error
	state tls.ConnectionState
}

func startTLSServer(t testing.TB, cfg *tls.Config) *tlsServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startTLSServerOn(t, l, cfg)
}

// startTLSServerOn serves on l. Outcomes beyond the first 1024 unread
// ones are dropped.
func startTLSServerOn(t testing.TB, l net.Listener, cfg *tls.Config) *tlsServer {
	t.Helper()
	s := &tlsServer{addr: l.Addr().String(), results: make(chan serverResult, 1024)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				err := tc.HandshakeContext(ctx)
				if err == nil {
					_, err = tc.Write([]byte{'k'})
				}
				select {
				case s.results <- serverResult{err: err, state: tc.ConnectionState()}:
				default:
				}
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return s
}

// next returns the outcome of the next server-side handshake.
func (s *tlsServer) next(t testing.TB) serverResult {
	t.Helper()
	select {
	case r := <-s.results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no server-side handshake")
		return serverResult{}
	}
}

// dial connects, handshakes and reads the server's byte, so that a
// refusal by the server (sent after the client's handshake completes in
// TLS 1.3) is seen too.
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadFull(tc, make([]byte, 1))
	return tc.ConnectionState(), err
}

func wantAuthError(t testing.TB, side string, err error, id spiffeid.ID, reason Reason) {
	t.Helper()
	var ae *AuthorizationError
	if !errors.As(err, &ae) {
		t.Fatalf("%s: err = %v, want an *AuthorizationError", side, err)
	}
	if ae.ID != id || ae.Reason != reason {
		t.Fatalf("%s: refused %q for %v, want %q for %q", side, ae.ID, ae.Reason, id, reason)
	}
}

// wantAlert checks that the refused side saw a bad_certificate alert from
// its peer. crypto/tls reports it as a *net.OpError "remote error" around
// an unexported uint8 alert type.
func wantAlert(t testing.TB, side string, err error) {
	t.Helper()
	const badCertificate = 42
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" {
		if v := reflect.ValueOf(oe.Err); v.Kind() == reflect.Uint8 && v.Uint() == badCertificate {
			return
		}
	}
	t.Fatalf("%s: err = %v, want a bad_certificate alert from the peer", side, err)
}

func TestMutualTLS(t *testing.T) {
	ca, other := newTestCA(t, td), newTestCA(t, otherTD)
	rogue := newTestCA(t, td) // same trust domain name, different keys
	payments := ca.svid(t, paymentID)
	orders := ca.svid(t, ordersID)
	ordersOld := ca.svid(t, ordersID, func(c *x509.Certificate) { c.NotBefore = time.Now().Add(-2 * time.Hour) })
	bundles := []*x509bundle.Bundle{ca.bundle()}

	revoked := NewRevocationList([]RevokedSerial{{TrustDomain: td, Serial: orders.Certificates[0].SerialNumber}}, nil)
	blockedAt := time.Now().Add(-time.Hour)
	blocked := NewRevocationList(nil, []BlockedID{{ID: ordersID, RevokedAt: blockedAt}})

	for _, tc := range []struct {
		name       string
		client     *x509svid.SVID
		server     *x509svid.SVID
		serverAuth Authorizer
		clientAuth Authorizer
		serverRC   RevocationChecker
		// The side that refuses, and what it reports.
		refusedBy  string // "", "server" or "client"
		wantID     spiffeid.ID
		wantReason Reason
	}{
		{name: "authorized", client: orders, server: payments, serverAuth: AuthorizeID(ordersID), clientAuth: AuthorizeID(paymentID)},
		{name: "server refuses another ID", client: ca.svid(t, invID), server: payments, serverAuth: AuthorizeID(ordersID), clientAuth: AuthorizeID(paymentID),
			refusedBy: "server", wantID: invID, wantReason: ReasonNotAuthorized},
		{name: "client refuses another server", client: orders, server: ca.svid(t, invID), serverAuth: AuthorizeID(ordersID), clientAuth: AuthorizeID(paymentID),
			refusedBy: "client", wantID: invID, wantReason: ReasonNotAuthorized},
		{name: "unknown trust domain", client: other.svid(t, spiffeid.RequireFromString("spiffe://another.org/orders")), server: payments, serverAuth: AuthorizeAny(), clientAuth: AuthorizeAny(),
			refusedBy: "server", wantID: spiffeid.RequireFromString("spiffe://another.org/orders"), wantReason: ReasonUntrusted},
		{name: "rogue CA with the same trust domain name", client: rogue.svid(t, ordersID), server: payments, serverAuth: AuthorizeAny(), clientAuth: AuthorizeAny(),
			refusedBy: "server", wantID: ordersID, wantReason: ReasonUntrusted},
		{name: "expired client certificate", client: ca.svid(t, ordersID, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Second) }), server: payments, serverAuth: AuthorizeAny(), clientAuth: AuthorizeAny(),
			refusedBy: "server", wantID: ordersID, wantReason: ReasonUntrusted},
		{name: "revoked serial", client: orders, server: payments, serverAuth: AuthorizeAny(), clientAuth: AuthorizeAny(), serverRC: revoked,
			refusedBy: "server", wantID: ordersID, wantReason: ReasonRevoked},
		{name: "blocked ID, certificate from before the block", client: ordersOld, server: payments, serverAuth: AuthorizeAny(), clientAuth: AuthorizeAny(), serverRC: blocked,
			refusedBy: "server", wantID: ordersID, wantReason: ReasonBlocked},
		{name: "blocked ID, certificate issued after the block", client: orders, server: payments, serverAuth: AuthorizeAny(), clientAuth: AuthorizeAny(), serverRC: blocked},
		{name: "nil authorizer refuses", client: orders, server: payments, serverAuth: nil, clientAuth: AuthorizeAny(),
			refusedBy: "server", wantID: ordersID, wantReason: ReasonNotAuthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []ConfigOption
			if tc.serverRC != nil {
				opts = append(opts, WithRevocationChecker(tc.serverRC))
			}
			srv := startTLSServer(t, ServerConfig(newStaticSource(tc.server, bundles...), tc.serverAuth, opts...))
			cs, clientErr := dial(srv.addr, ClientConfig(newStaticSource(tc.client, bundles...), tc.clientAuth))
			res := srv.next(t)

			switch tc.refusedBy {
			case "":
				if clientErr != nil || res.err != nil {
					t.Fatalf("client err = %v, server err = %v; want success", clientErr, res.err)
				}
				if cs.Version != tls.VersionTLS13 {
					t.Errorf("negotiated %x, want TLS 1.3", cs.Version)
				}
				if id, _ := x509svid.IDFromCert(res.state.PeerCertificates[0]); id != tc.client.ID {
					t.Errorf("server sees %s, want %s", id, tc.client.ID)
				}
				if id, _ := x509svid.IDFromCert(cs.PeerCertificates[0]); id != tc.server.ID {
					t.Errorf("client sees %s, want %s", id, tc.server.ID)
				}
			case "server":
				wantAuthError(t, "server", res.err, tc.wantID, tc.wantReason)
				wantAlert(t, "client", clientErr)
			case "client":
				wantAuthError(t, "client", clientErr, tc.wantID, tc.wantReason)
				wantAlert(t, "server", res.err)
			}
		})
	}
}

func TestTLSVersionFloor(t *testing.T) {
	ca := newTestCA(t, td)
	src := newStaticSource(ca.svid(t, paymentID), ca.bundle())
	srv := startTLSServer(t, ServerConfig(src, AuthorizeAny()))
	cfg := ClientConfig(newStaticSource(ca.svid(t, ordersID), ca.bundle()), AuthorizeAny())
	cfg.MaxVersion = tls.VersionTLS12
	if _, err := dial(srv.addr, cfg); err == nil {
		t.Fatal("a TLS 1.2 client connected")
	}
	if res := srv.next(t); res.err == nil {
		t.Fatal("the server accepted TLS 1.2")
	}
	if ServerConfig(src, nil).MinVersion != tls.VersionTLS13 || ClientConfig(src, nil).MinVersion != tls.VersionTLS13 {
		t.Error("MinVersion is not TLS 1.3")
	}
}

func TestVerifyPeerWithoutCertificate(t *testing.T) {
	ca := newTestCA(t, td)
	v := newVerifier(newStaticSource(ca.svid(t, paymentID), ca.bundle()), AuthorizeAny(), nil)
	_, err := v.verifyPeer(nil)
	wantAuthError(t, "verifyPeer", err, spiffeid.ID{}, ReasonNoCertificate)
}

// TestResumedSessionsAreChecked shows why every check runs in
// VerifyConnection: a client that resumes a TLS 1.3 session skips
// VerifyPeerCertificate (and so go-spiffe's authorizers), but not
// VerifyConnection.
func TestResumedSessionsAreChecked(t *testing.T) {
	ca := newTestCA(t, td)
	orders, payments := ca.svid(t, ordersID), ca.svid(t, paymentID)
	serverSrc := newStaticSource(payments, ca.bundle())
	clientSrc := newStaticSource(orders, ca.bundle())

	// Each case makes the server (or client) refuse the peer after the
	// first session was established.
	type setup struct {
		server, client *tls.Config
		refuse         func()
		resumed        *atomic.Int32 // resumed handshakes seen by the refusing side's trace
	}
	traceResumed := func(n *atomic.Int32) ConfigOption {
		return WithTrace(Trace{VerifiedPeer: func(i VerifiedPeerInfo) {
			if i.DidResume && i.Err != nil {
				n.Add(1)
			}
		}})
	}
	for _, tc := range []struct {
		name      string
		setup     func() setup
		refusedBy string // "" means the resumed handshake wrongly succeeds
		reason    Reason
	}{
		{
			name: "go-spiffe VerifyPeerCertificate config: authorizer bypassed",
			setup: func() setup {
				var deny atomic.Bool
				authz := tlsconfig.Authorizer(func(id spiffeid.ID, _ [][]*x509.Certificate) error {
					if deny.Load() {
						return errors.New("denied")
					}
					return nil
				})
				return setup{
					server: tlsconfig.MTLSServerConfig(serverSrc, serverSrc, authz),
					client: ClientConfig(clientSrc, AuthorizeID(paymentID)),
					refuse: func() { deny.Store(true) },
				}
			},
		},
		{
			name: "SDK server: authorizer outcome changes",
			setup: func() setup {
				var deny atomic.Bool
				n := new(atomic.Int32)
				authz := AuthorizeFunc(func(id spiffeid.ID) error {
					if deny.Load() {
						return errors.New("denied")
					}
					return nil
				})
				return setup{
					server:  ServerConfig(serverSrc, authz, traceResumed(n)),
					client:  ClientConfig(clientSrc, AuthorizeID(paymentID)),
					refuse:  func() { deny.Store(true) },
					resumed: n,
				}
			},
			refusedBy: "server", reason: ReasonNotAuthorized,
		},
		{
			name: "SDK server: client certificate revoked",
			setup: func() setup {
				rc := &mutableRevocations{}
				n := new(atomic.Int32)
				return setup{
					server: ServerConfig(serverSrc, AuthorizeID(ordersID), WithRevocationChecker(rc), traceResumed(n)),
					client: ClientConfig(clientSrc, AuthorizeID(paymentID)),
					refuse: func() {
						rc.set(NewRevocationList([]RevokedSerial{{TrustDomain: td, Serial: orders.Certificates[0].SerialNumber}}, nil))
					},
					resumed: n,
				}
			},
			refusedBy: "server", reason: ReasonRevoked,
		},
		{
			name: "SDK client: server certificate revoked",
			setup: func() setup {
				rc := &mutableRevocations{}
				n := new(atomic.Int32)
				return setup{
					server: ServerConfig(serverSrc, AuthorizeID(ordersID)),
					client: ClientConfig(clientSrc, AuthorizeID(paymentID), WithRevocationChecker(rc), traceResumed(n)),
					refuse: func() {
						rc.set(NewRevocationList([]RevokedSerial{{TrustDomain: td, Serial: payments.Certificates[0].SerialNumber}}, nil))
					},
					resumed: n,
				}
			},
			refusedBy: "client", reason: ReasonRevoked,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.setup()
			s.client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			srv := startTLSServer(t, s.server)

			// A full handshake stores a session ticket, and a second
			// connection resumes it.
			for i, wantResume := range []bool{false, true} {
				cs, err := dial(srv.addr, s.client)
				res := srv.next(t)
				if err != nil || res.err != nil {
					t.Fatalf("connection %d: client %v, server %v", i, err, res.err)
				}
				if cs.DidResume != wantResume || res.state.DidResume != wantResume {
					t.Fatalf("connection %d: DidResume client=%v server=%v, want %v", i, cs.DidResume, res.state.DidResume, wantResume)
				}
			}

			s.refuse()
			cs, clientErr := dial(srv.addr, s.client)
			res := srv.next(t)
			switch tc.refusedBy {
			case "":
				// The old way: the peer that should now be refused gets in
				// by resuming its session.
				if clientErr != nil || res.err != nil {
					t.Fatalf("client %v, server %v; want the resumed handshake to succeed", clientErr, res.err)
				}
				if !cs.DidResume || !res.state.DidResume {
					t.Fatal("the handshake did not resume; the comparison is void")
				}
			case "server":
				wantAuthError(t, "server", res.err, ordersID, tc.reason)
				wantAlert(t, "client", clientErr)
			case "client":
				wantAuthError(t, "client", clientErr, paymentID, tc.reason)
			}
			if s.resumed != nil && s.resumed.Load() != 1 {
				t.Errorf("%d refusals on a resumed handshake, want 1 (the refused handshake was a resumption)", s.resumed.Load())
			}
		})
	}
}

func TestTrace(t *testing.T) {
	ca := newTestCA(t, td)
	orders, payments := ca.svid(t, ordersID), ca.svid(t, paymentID)
	var mu sync.Mutex
	var got []*tls.Certificate
	var verified []VerifiedPeerInfo
	trace := Trace{
		GotCertificate: func(i GotCertificateInfo) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, i.Cert)
		},
		VerifiedPeer: func(i VerifiedPeerInfo) {
			mu.Lock()
			defer mu.Unlock()
			verified = append(verified, i)
		},
	}
	srv := startTLSServer(t, ServerConfig(newStaticSource(payments, ca.bundle()), AuthorizeID(ordersID), WithTrace(trace)))
	if _, err := dial(srv.addr, ClientConfig(newStaticSource(orders, ca.bundle()), AuthorizeAny())); err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || !sameCert(got[0].Leaf, payments.Certificates[0]) {
		t.Errorf("GotCertificate saw %v, want the payments certificate once", got)
	}
	if len(verified) != 1 || verified[0].ID != ordersID || verified[0].Err != nil || verified[0].Serial.Cmp(orders.Certificates[0].SerialNumber) != 0 {
		t.Errorf("VerifiedPeer saw %+v, want orders accepted once", verified)
	}
}

// observed records what one side of a connection saw, so the test can
// wait for a value without sleeping.
type observed struct {
	mu      sync.Mutex
	serials map[string]bool
	changed chan struct{}
}

func newObserved() *observed {
	return &observed{serials: map[string]bool{}, changed: make(chan struct{})}
}

func (o *observed) add(serial *big.Int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.serials[serial.String()] {
		o.serials[serial.String()] = true
		close(o.changed)
		o.changed = make(chan struct{})
	}
}

func (o *observed) Changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

func (o *observed) has(serial *big.Int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.serials[serial.String()]
}

func (o *observed) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.serials)
}

// TestRotationInPlace keeps a client connecting to a server while both
// identities rotate three times; no listener or config is rebuilt.
func TestRotationInPlace(t *testing.T) {
	ca := newTestCA(t, td)
	dir := shortTempDir(t)
	ordersAPI := startFakeAPI(t, filepath.Join(dir, "orders.sock"))
	paymentsAPI := startFakeAPI(t, filepath.Join(dir, "payments.sock"))
	ordersSVID, paymentsSVID := ca.svid(t, ordersID), ca.svid(t, paymentID)
	ordersAPI.Push(ca.response(t, []*x509svid.SVID{ordersSVID}))
	paymentsAPI.Push(ca.response(t, []*x509svid.SVID{paymentsSVID}))
	ordersSrc, paymentsSrc := newSource(t, ordersAPI), newSource(t, paymentsAPI)

	serverSaw, clientSaw := newObserved(), newObserved()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := ServerConfig(paymentsSrc, AuthorizeID(ordersID), WithTrace(Trace{VerifiedPeer: func(i VerifiedPeerInfo) {
		if i.Err == nil {
			serverSaw.add(i.Serial)
		}
	}}))
	srv := startTLSServerOn(t, l, serverCfg)
	clientCfg := ClientConfig(ordersSrc, AuthorizeID(paymentID))

	var failures, connections atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopClient := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	t.Cleanup(stopClient) // also when the test fails early
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cs, err := dial(srv.addr, clientCfg)
				connections.Add(1)
				if err != nil {
					failures.Add(1)
					t.Errorf("connection failed during rotation: %v", err)
					continue
				}
				clientSaw.add(cs.PeerCertificates[0].SerialNumber)
			}
		})
	}

	waitFor(t, serverSaw.Changed, "the server's first connection", func() bool {
		return serverSaw.has(ordersSVID.Certificates[0].SerialNumber)
	})
	waitFor(t, clientSaw.Changed, "the client's first connection", func() bool {
		return clientSaw.has(paymentsSVID.Certificates[0].SerialNumber)
	})
	for i := range 3 {
		ordersSVID, paymentsSVID = ca.svid(t, ordersID), ca.svid(t, paymentID)
		ordersAPI.Push(ca.response(t, []*x509svid.SVID{ordersSVID}))
		paymentsAPI.Push(ca.response(t, []*x509svid.SVID{paymentsSVID}))
		waitFor(t, serverSaw.Changed, "the server to see the new client serial", func() bool {
			return serverSaw.has(ordersSVID.Certificates[0].SerialNumber)
		})
		waitFor(t, clientSaw.Changed, "the client to see the new server serial", func() bool {
			return clientSaw.has(paymentsSVID.Certificates[0].SerialNumber)
		})
		t.Logf("rotation %d done after %d connections", i+1, connections.Load())
	}
	stopClient()

	if failures.Load() != 0 {
		t.Errorf("%d of %d connections failed", failures.Load(), connections.Load())
	}
	if serverSaw.len() != 4 || clientSaw.len() != 4 {
		t.Errorf("serials seen: server %d, client %d; want 4 each (initial + 3 rotations)", serverSaw.len(), clientSaw.len())
	}
}
