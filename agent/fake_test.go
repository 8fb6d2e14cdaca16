package agent

// A fake badge server for the agent's tests: a real gRPC server over real
// TLS on 127.0.0.1, implementing nodeproto.NodeServer with a minica as
// its authority. It decides who calls from the TLS handshake alone, as the
// protocol says, and signs only for entries it serves.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.step.sm/crypto/minica"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/internal/nodeproto"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

type fakeServer struct {
	nodeproto.UnimplementedNodeServer
	t      *testing.T
	ca     *minica.CA // the trust domain's authority
	nodeCA *minica.CA // the operator's host PKI, for x509pop
	now    func() time.Time

	nodeTTL, svidTTL time.Duration

	mu       sync.Mutex
	tokens   map[string]string // unused join token → node
	entries  []*nodeproto.Entry
	revoked  []*big.Int
	evicted  map[string]bool
	revision uint64
	changed  chan struct{} // closed on every change
	calls    map[string]int
	renewed  chan struct{}
	// lastSerial is the serial of the node SVID of the last call.
	lastSerial string

	addr string
	srv  *grpc.Server
}

func newFakeServer(t *testing.T, now func() time.Time) *fakeServer {
	t.Helper()
	ca, err := minica.New(minica.WithName("badge test"))
	if err != nil {
		t.Fatal(err)
	}
	nodeCA, err := minica.New(minica.WithName("host pki"))
	if err != nil {
		t.Fatal(err)
	}
	// badge's roots name the trust domain in a URI SAN; minica's do not,
	// which the agent must cope with too.
	return startFake(t, ca, nodeCA, now)
}

func startFake(t *testing.T, ca, nodeCA *minica.CA, now func() time.Time) *fakeServer {
	f := &fakeServer{t: t, ca: ca, nodeCA: nodeCA, now: now, nodeTTL: time.Hour, svidTTL: 5 * time.Minute,
		tokens: map[string]string{}, evicted: map[string]bool{}, changed: make(chan struct{}), calls: map[string]int{},
		renewed: make(chan struct{}, 16)}
	f.start("127.0.0.1:0")
	t.Cleanup(f.stop)
	return f
}

// sibling starts another server of the same trust domain, as a replica.
func (f *fakeServer) sibling(t *testing.T) *fakeServer { return startFake(t, f.ca, f.nodeCA, f.now) }

func (f *fakeServer) start(addr string) {
	f.t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.addr = l.Addr().String()
	key, err := newKey()
	if err != nil {
		f.t.Fatal(err)
	}
	cert, err := f.ca.Sign(&x509.Certificate{PublicKey: key.Public(), URIs: []*url.URL{testTD.ID().URL().JoinPath("badge", "server")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	if err != nil {
		f.t.Fatal(err)
	}
	tc := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{{Certificate: [][]byte{cert.Raw, f.ca.Intermediate.Raw}, PrivateKey: key}},
		ClientAuth:             tls.RequestClientCert,
		SessionTicketsDisabled: true,
	}
	f.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
	nodeproto.RegisterNodeServer(f.srv, f)
	go f.srv.Serve(l)
}

func (f *fakeServer) stop() { f.srv.Stop() }

// restart stops the server and starts it again on the same address.
func (f *fakeServer) restart() {
	f.stop()
	f.start(f.addr)
}

func (f *fakeServer) bundle() []*x509.Certificate { return []*x509.Certificate{f.ca.Root} }

func (f *fakeServer) token(node string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := rand.Text()
	f.tokens[t] = node
	return t
}

func (f *fakeServer) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// update changes the state under the lock and wakes every Sync stream.
func (f *fakeServer) update(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
	f.revision++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeServer) addEntry(id, spiffeID string, selectors ...string) *nodeproto.Entry {
	e := &nodeproto.Entry{Id: id, SpiffeId: spiffeID, Selectors: selectors, Revision: 1, CreatedUnix: time.Now().Unix()}
	f.update(func() { f.entries = append(f.entries, e) })
	return e
}

func (f *fakeServer) revoke(serial string) {
	n, _ := new(big.Int).SetString(serial, 16)
	f.update(func() { f.revoked = append(f.revoked, n) })
}

// issue signs a certificate for pub naming id.
func (f *fakeServer) issue(id string, pub any, ttl time.Duration, usage ...x509.ExtKeyUsage) (*x509.Certificate, error) {
	u, err := url.Parse(id)
	if err != nil {
		return nil, err
	}
	nb := f.now().Add(-backdate)
	return f.ca.Sign(&x509.Certificate{PublicKey: pub, URIs: []*url.URL{u}, NotBefore: nb, NotAfter: nb.Add(backdate + ttl),
		ExtKeyUsage: usage, KeyUsage: x509.KeyUsageDigitalSignature})
}

func (f *fakeServer) peerCerts(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return ti.State.PeerCertificates
}

// node returns the calling node, from its node SVID.
func (f *fakeServer) node(ctx context.Context) (string, error) {
	certs := f.peerCerts(ctx)
	if len(certs) == 0 {
		return "", status.Error(codes.Unauthenticated, "no node SVID")
	}
	if err := verifyChain(append(certs, f.ca.Intermediate), f.bundle(), f.now(), x509.ExtKeyUsageClientAuth); err != nil {
		return "", status.Errorf(codes.Unauthenticated, "node SVID: %v", err)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return "", status.Error(codes.Unauthenticated, err.Error())
	}
	name, ok := strings.CutPrefix(id.Path(), nodePath)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "not a node SVID")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["node:"+name]++
	f.lastSerial = certs[0].SerialNumber.Text(16)
	if f.evicted[name] {
		return "", status.Errorf(codes.PermissionDenied, "node %s is evicted", name)
	}
	return name, nil
}

func (f *fakeServer) nodeSVID(name string, csrDER []byte) ([][]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c, err := f.issue(testTD.IDString()+nodePath+name, csr.PublicKey, f.nodeTTL, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	return [][]byte{c.Raw, f.ca.Intermediate.Raw}, nil
}

func (f *fakeServer) Attest(ctx context.Context, req *nodeproto.AttestRequest) (*nodeproto.AttestResponse, error) {
	f.mu.Lock()
	f.calls["Attest"]++
	var name string
	if certs := f.peerCerts(ctx); len(certs) > 0 {
		if err := verifyChain(certs, []*x509.Certificate{f.nodeCA.Root}, f.now(), x509.ExtKeyUsageClientAuth); err != nil {
			f.mu.Unlock()
			return nil, status.Errorf(codes.PermissionDenied, "host certificate: %v", err)
		}
		name = certs[0].DNSNames[0]
		if f.evicted[name] {
			f.mu.Unlock()
			return nil, status.Errorf(codes.PermissionDenied, "node %s is evicted", name)
		}
	} else {
		n, ok := f.tokens[req.GetJoinToken()]
		if !ok {
			f.mu.Unlock()
			return nil, status.Error(codes.PermissionDenied, "join token refused: unknown, used or expired")
		}
		delete(f.tokens, req.GetJoinToken())
		delete(f.evicted, n)
		name = n
	}
	f.mu.Unlock()
	svid, err := f.nodeSVID(name, req.GetCsr())
	if err != nil {
		return nil, err
	}
	return &nodeproto.AttestResponse{NodeName: name, Svid: svid, Bundle: [][]byte{f.ca.Root.Raw}}, nil
}

func (f *fakeServer) RenewNode(ctx context.Context, req *nodeproto.RenewNodeRequest) (*nodeproto.RenewNodeResponse, error) {
	name, err := f.node(ctx)
	if err != nil {
		return nil, err
	}
	svid, err := f.nodeSVID(name, req.GetCsr())
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.calls["RenewNode"]++
	f.mu.Unlock()
	f.renewed <- struct{}{}
	return &nodeproto.RenewNodeResponse{Svid: svid, Bundle: [][]byte{f.ca.Root.Raw}}, nil
}

func (f *fakeServer) Sync(_ *nodeproto.SyncRequest, stream grpc.ServerStreamingServer[nodeproto.SyncUpdate]) error {
	name, err := f.node(stream.Context())
	if err != nil {
		return err
	}
	for {
		f.mu.Lock()
		if f.evicted[name] {
			f.mu.Unlock()
			return status.Errorf(codes.PermissionDenied, "node %s is evicted", name)
		}
		f.calls["Sync"]++
		crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(int64(f.revision) + 1),
			ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: revokedEntries(f.revoked)},
			f.ca.Intermediate, f.ca.Signer)
		if err != nil {
			f.mu.Unlock()
			return err
		}
		u := &nodeproto.SyncUpdate{Revision: f.revision, TrustDomain: testTD.Name(), Entries: f.entries,
			Bundle: [][]byte{f.ca.Root.Raw}, JwtBundle: []byte(`{"keys":[]}`), Crl: crl, SvidTtlSeconds: int64(f.svidTTL / time.Second)}
		changed := f.changed
		f.mu.Unlock()
		if err := stream.Send(u); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

func revokedEntries(serials []*big.Int) []x509.RevocationListEntry {
	out := make([]x509.RevocationListEntry, len(serials))
	for i, s := range serials {
		out[i] = x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()}
	}
	return out
}

// entry returns the served entry of id, or the refusal.
func (f *fakeServer) entry(id string) (*nodeproto.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.entries {
		if e.Id == id {
			if e.Blocked {
				return nil, status.Errorf(codes.PermissionDenied, "%s is blocked", e.SpiffeId)
			}
			return e, nil
		}
	}
	return nil, status.Errorf(codes.PermissionDenied, "entry %s is not scoped to this node", id)
}

func (f *fakeServer) SignX509(ctx context.Context, req *nodeproto.SignX509Request) (*nodeproto.SignX509Response, error) {
	if _, err := f.node(ctx); err != nil {
		return nil, err
	}
	e, err := f.entry(req.GetEntryId())
	if err != nil {
		return nil, err
	}
	if e.Revision != req.GetEntryRevision() {
		return nil, status.Errorf(codes.FailedPrecondition, "entry %s is at revision %d", e.Id, e.Revision)
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c, err := f.issue(e.SpiffeId, csr.PublicKey, f.svidTTL, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.calls["SignX509"]++
	f.mu.Unlock()
	return &nodeproto.SignX509Response{Svid: [][]byte{c.Raw, f.ca.Intermediate.Raw}}, nil
}

func (f *fakeServer) SignJWT(ctx context.Context, req *nodeproto.SignJWTRequest) (*nodeproto.SignJWTResponse, error) {
	if _, err := f.node(ctx); err != nil {
		return nil, err
	}
	e, err := f.entry(req.GetEntryId())
	if err != nil {
		return nil, err
	}
	if len(req.GetAudience()) == 0 || req.GetAudience()[0] == "bad" {
		return nil, status.Error(codes.InvalidArgument, "audience refused")
	}
	// Not a signed JWT: the agent passes tokens through.
	claims, _ := json.Marshal(map[string]any{"sub": e.SpiffeId, "aud": req.GetAudience(), "iat": f.now().Unix()})
	return &nodeproto.SignJWTResponse{Token: "e30." + b64(claims) + ".sig"}, nil
}

func (f *fakeServer) ValidateJWT(ctx context.Context, req *nodeproto.ValidateJWTRequest) (*nodeproto.ValidateJWTResponse, error) {
	if _, err := f.node(ctx); err != nil {
		return nil, err
	}
	if req.GetToken() == "expired" {
		return nil, status.Error(codes.InvalidArgument, "token expired")
	}
	return &nodeproto.ValidateJWTResponse{SpiffeId: "spiffe://example.org/web", ClaimsJson: []byte(`{"sub":"spiffe://example.org/web"}`)}, nil
}

// hostCert makes a host certificate of the operator's PKI for node name.
func (f *fakeServer) hostCert(t *testing.T, name string) *tls.Certificate {
	t.Helper()
	key, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.nodeCA.Sign(&x509.Certificate{PublicKey: key.Public(), DNSNames: []string{name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw, f.nodeCA.Intermediate.Raw}, PrivateKey: key, Leaf: c}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
