package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.step.sm/crypto/minica"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/metrics"
	"github.com/badge-dev/badge/internal/nodeproto"
)

var agentListenAddr = regexp.MustCompile(`msg="agent listener ready" address=(\S+)`)

// agentAddr is the address of the daemon's agent listener, as its latest
// start logged it.
func (d *daemon) agentAddr() string {
	d.t.Helper()
	m := agentListenAddr.FindAllStringSubmatch(d.logs(), -1)
	if len(m) == 0 {
		d.t.Fatalf("the daemon did not log its agent listener:\n%s", d.logs())
	}
	return m[len(m)-1][1]
}

// nodeClient dials the daemon's agent listener as an agent would: TLS 1.3,
// the server verified as spiffe://TD/badge/server by the bundle of `badge
// bundle show`, presenting cert (nil: none).
func (d *daemon) nodeClient(cert *tls.Certificate) nodeproto.NodeClient {
	d.t.Helper()
	var roots []*x509.Certificate
	rest := []byte(d.mustBadge("bundle", "show"))
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			d.t.Fatal(err)
		}
		roots = append(roots, c)
	}
	bundle := x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("example.org"), roots)
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified as an SVID below
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, _, err := x509svid.Verify(cs.PeerCertificates, bundle)
			if err != nil {
				return err
			}
			if id.String() != "spiffe://example.org/badge/server" {
				return errors.New("the server is " + id.String())
			}
			return nil
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient("passthrough:///"+d.agentAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { conn.Close() })
	return nodeproto.NewNodeClient(conn)
}

// TestE2EAgentListener: the real daemon with --agent-listen; a token made
// with the CLI attests an in-test agent, which syncs and has a CSR signed;
// the token does not work twice; status shows the listener and the node.
func TestE2EAgentListener(t *testing.T) {
	d := startDaemon(t, "--agent-listen", "127.0.0.1:0", "--node-svid-ttl", "30m")
	entry := strings.TrimSpace(d.mustBadge("entry", "create", "--id", "spiffe://example.org/web", "--selector", "unix:uid:1001", "--node", "web-1"))
	token := strings.TrimSpace(d.mustBadge("token", "create", "--node", "web-1"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	csr := func() ([]byte, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	der, key := csr()
	resp, err := d.nodeClient(nil).Attest(ctx, &nodeproto.AttestRequest{JoinToken: token, Csr: der})
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	leaf, err := x509.ParseCertificate(resp.Svid[0])
	if err != nil {
		t.Fatal(err)
	}
	if resp.NodeName != "web-1" || leaf.URIs[0].String() != "spiffe://example.org/badge/node/web-1" || leaf.NotAfter.Sub(leaf.NotBefore) != 30*time.Minute+30*time.Second {
		t.Errorf("Attest = node %q, node SVID %v valid %s", resp.NodeName, leaf.URIs, leaf.NotAfter.Sub(leaf.NotBefore))
	}
	if _, err := d.nodeClient(nil).Attest(ctx, &nodeproto.AttestRequest{JoinToken: token, Csr: der}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Attest with the token again: %v, want PermissionDenied", err)
	}
	d.waitLog(t, "node attestation refused", `reason="token used"`)

	node := d.nodeClient(&tls.Certificate{Certificate: resp.Svid, PrivateKey: key})
	sync, err := node.Sync(ctx, &nodeproto.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := sync.Recv()
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if len(u.Entries) != 1 || u.Entries[0].Id != entry {
		t.Fatalf("Sync entries = %v, want %s", u.Entries, entry)
	}
	der, _ = csr()
	sr, err := node.SignX509(ctx, &nodeproto.SignX509Request{EntryId: entry, EntryRevision: u.Entries[0].Revision, Csr: der})
	if err != nil {
		t.Fatalf("SignX509: %v", err)
	}
	svid, err := x509.ParseCertificate(sr.Svid[0])
	if err != nil || svid.URIs[0].String() != "spiffe://example.org/web" {
		t.Fatalf("SignX509 = %v, %v", svid.URIs, err)
	}

	var st metrics.Status
	if err := json.Unmarshal([]byte(d.mustBadge("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.AgentListener == nil || st.AgentListener.Address != d.agentAddr() || st.AgentListener.ConnectedNodes != 1 {
		t.Errorf("status agent_listener = %+v, want %s with 1 node", st.AgentListener, d.agentAddr())
	}
	if out := d.mustBadge("status"); !strings.Contains(out, "agent listener") || !strings.Contains(out, "1 nodes connected") {
		t.Errorf("status does not show the agent listener:\n%s", out)
	}
	var nodes []admin.Node
	if err := json.Unmarshal([]byte(d.mustBadge("node", "list", "--json")), &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].Name != "web-1" || nodes[0].Connections != 1 || nodes[0].SVIDSerial != leaf.SerialNumber.Text(16) {
		t.Errorf("node list --json = %+v, want web-1 with 1 connection and its node SVID's serial", nodes)
	}
	// The serial signed for the agent is found by revoke --id.
	out := d.mustBadge("revoke", "--id", "spiffe://example.org/web")
	if !strings.HasPrefix(out, "1 ") {
		t.Errorf("revoke --id of the agent's SVID: %s", out)
	}
}

// TestE2EAgentListenerConfig: --check-config reads the node CA file and
// refuses bad agent listener settings, naming them.
func TestE2EAgentListenerConfig(t *testing.T) {
	dir := t.TempDir()
	notCA := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(notCA, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--agent-listen", "nonsense"}, "agent-listen"},
		{[]string{"--agent-listen", ":0", "--node-svid-ttl", "48h"}, "node-svid-ttl"},
		{[]string{"--agent-listen", ":0", "--node-ca", notCA}, `want CERTIFICATE blocks only`},
		{[]string{"--agent-listen", ":0", "--node-ca", filepath.Join(dir, "missing.pem")}, "no such file"},
		{[]string{"--node-ca", notCA}, "has no use without agent-listen"},
		{[]string{"--agent-listen", ":0", "--node-sign-burst", "0"}, "node-sign-burst"},
	} {
		var out, errOut strings.Builder
		e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
		args := append([]string{"server", "--check-config", "--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "w.sock"),
			"--admin-socket", filepath.Join(dir, "a.sock")}, tc.args...)
		if code := e.dispatch(context.Background(), args); code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("server --check-config %v = exit %d, stderr %q; want exit 2 naming %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}

// TestE2EX509PoPAndReload: a host certificate of a --node-ca attests its
// node; one of another CA is refused in the handshake; after the file is
// changed, SIGHUP makes the new CA's certificates attest.
func TestE2EX509PoPAndReload(t *testing.T) {
	requireRoot(t)
	ca1, err := minica.New(minica.WithName("hosts-1"))
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := minica.New(minica.WithName("hosts-2"))
	if err != nil {
		t.Fatal(err)
	}
	dir := worldReadableTempDir(t)
	caFile := filepath.Join(dir, "node-ca.pem")
	writeCAs := func(m *minica.CA) {
		if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Root.Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCAs(ca1)
	d, _ := startDaemonConfig(t, "agent-listen = \"127.0.0.1:0\"\nnode-ca = \""+caFile+"\"\nlog-level = \"debug\"\n")
	hostCert := func(m *minica.CA, name string) *tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c, err := m.Sign(&x509.Certificate{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}, PublicKey: key.Public(),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Certificate{Certificate: [][]byte{c.Raw, m.Intermediate.Raw}, PrivateKey: key}
	}
	attest := func(cert *tls.Certificate) (*nodeproto.AttestResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		return d.nodeClient(cert).Attest(ctx, &nodeproto.AttestRequest{Csr: csr})
	}
	if resp, err := attest(hostCert(ca1, "web-1.example")); err != nil || resp.NodeName != "web-1.example" {
		t.Fatalf("x509pop with a certificate of the node CA: %v, %v", resp.GetNodeName(), err)
	}
	if _, err := attest(hostCert(ca2, "web-2.example")); status.Code(err) != codes.Unavailable {
		t.Fatalf("x509pop with a certificate of another CA: %v, want a refused handshake", err)
	}
	d.waitLog(t, "agent handshake refused")
	writeCAs(ca2)
	d.hup("node CAs reloaded")
	if resp, err := attest(hostCert(ca2, "web-2.example")); err != nil || resp.NodeName != "web-2.example" {
		t.Fatalf("x509pop with the reloaded CA: %v, %v", resp.GetNodeName(), err)
	}
	if _, err := attest(hostCert(ca1, "web-3.example")); status.Code(err) != codes.Unavailable {
		t.Errorf("x509pop with the CA taken out of the file: %v, want a refused handshake", err)
	}
	if out := d.mustBadge("node", "list"); !strings.Contains(out, "web-1.example") || !strings.Contains(out, "x509pop") {
		t.Errorf("node list:\n%s", out)
	}
}
