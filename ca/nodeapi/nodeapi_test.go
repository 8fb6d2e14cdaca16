package nodeapi_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.step.sm/crypto/minica"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/nodeapi"
	"github.com/badge-dev/badge/internal/nodeproto"
)

// TestAttestSyncSign is the agent's path: attest with a join token, open
// Sync, sign a CSR for an entry of the node.
func TestAttestSyncSign(t *testing.T) {
	f := newFixture(t, nil)
	entryID := f.entry("spiffe://example.org/web", 2*time.Minute, "web-1")
	f.entry("spiffe://example.org/elsewhere", 0, "db-1")
	f.entry("spiffe://example.org/local", 0)
	all := f.entry("spiffe://example.org/all", 0, "*")

	key := newKey(t)
	resp, err := f.dial(nil).Attest(ctxT(t), &nodeproto.AttestRequest{JoinToken: f.token("web-1"), Csr: csrFor(t, key)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.NodeName != "web-1" || len(resp.Svid) != 2 || len(resp.Bundle) != 1 {
		t.Fatalf("Attest = node %q, %d certificates, %d roots", resp.NodeName, len(resp.Svid), len(resp.Bundle))
	}
	nodeCert := tlsCert(t, resp.Svid, key)
	inter, err := x509.ParseCertificate(resp.Svid[1])
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := x509svid.Verify([]*x509.Certificate{nodeCert.Leaf, inter}, f.bundle(), x509svid.WithTime(f.clock.Now()))
	if err != nil || id.String() != "spiffe://example.org/badge/node/web-1" {
		t.Fatalf("node SVID = %v, %v", id, err)
	}
	if got := nodeCert.Leaf.NotAfter.Sub(f.clock.Now()); got != ca.DefaultNodeSVIDTTL {
		t.Errorf("node SVID lives %s from now, want %s", got, ca.DefaultNodeSVIDTTL)
	}

	c := f.dial(nodeCert)
	sync, err := c.Sync(ctxT(t), &nodeproto.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := sync.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range u.Entries {
		ids = append(ids, e.SpiffeId)
	}
	if strings.Join(ids, " ") != "spiffe://example.org/web spiffe://example.org/all" {
		t.Errorf("Sync entries = %v, want web and all, in creation order", ids)
	}
	if u.TrustDomain != "example.org" || len(u.Bundle) != 1 || len(u.Crl) == 0 || len(u.JwtBundle) == 0 || u.SvidTtlSeconds != 300 || u.Revision == 0 {
		t.Errorf("Sync update = %+v", u)
	}

	wkey := newKey(t)
	sr, err := c.SignX509(ctxT(t), &nodeproto.SignX509Request{EntryId: entryID, EntryRevision: u.Entries[0].Revision, Csr: csrFor(t, wkey)})
	if err != nil {
		t.Fatal(err)
	}
	certs := make([]*x509.Certificate, len(sr.Svid))
	for i, der := range sr.Svid {
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			t.Fatal(err)
		}
	}
	id, _, err = x509svid.Verify(certs, f.bundle(), x509svid.WithTime(f.clock.Now()))
	if err != nil || id.String() != "spiffe://example.org/web" {
		t.Fatalf("SignX509 = %v, %v; want the entry's ID, verified by the bundle", id, err)
	}
	leaf := certs[0]
	if got := leaf.NotAfter.Sub(f.clock.Now()); got != 2*time.Minute {
		t.Errorf("SVID lives %s from now, want the entry's 2m", got)
	}
	if len(leaf.URIs) != 1 || strings.Join(leaf.DNSNames, ",") != "svc.example.org" || leaf.Subject.CommonName == "evil.example" {
		t.Errorf("SVID has URIs %v, DNS %v, CN %q: the CSR's names leaked in", leaf.URIs, leaf.DNSNames, leaf.Subject.CommonName)
	}
	if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(wkey.Public()) {
		t.Error("SVID is not for the CSR's key")
	}
	// Revocation by ID finds the serial signed for the agent.
	if _, err := f.auth.RevokeID(context.Background(), ca.RevokeRequest{SPIFFEID: "spiffe://example.org/web"}); err != nil {
		t.Fatal(err)
	}
	if !f.auth.Snapshot().SerialRevoked(leaf.SerialNumber.Text(16)) {
		t.Error("revoke --id did not revoke the SVID signed for the agent")
	}

	// An entry of "*" is served too; one of another node is not.
	if _, err := c.SignX509(ctxT(t), &nodeproto.SignX509Request{EntryId: all, EntryRevision: 1, Csr: csrFor(t, wkey)}); err != nil {
		t.Errorf("SignX509 of a '*' entry: %v", err)
	}
}

// TestHandshakeClasses: what each kind of client certificate may call.
func TestHandshakeClasses(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	entryID := f.entry("spiffe://example.org/web", 0, "*")

	node := f.attest("node-1")
	revoked := f.attest("revoked-1")
	if _, err := f.auth.RevokeSerial(ctx, revoked.Leaf.SerialNumber.Text(16), "test", 0); err != nil {
		t.Fatal(err)
	}
	evicted := f.attest("evicted-1")
	if _, err := f.auth.EvictNode(ctx, "evicted-1", 0); err != nil {
		t.Fatal(err)
	}
	// A node SVID of one minute, then two minutes pass.
	stale := func() *tls.Certificate {
		key := newKey(t)
		if _, err := f.auth.ConsumeJoinToken(ctx, f.token("stale-1")); err != nil {
			t.Fatal(err)
		}
		svid, err := f.auth.SignNodeSVID(ctx, "stale-1", csrFor(t, key), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		chain, _ := x509.ParseCertificates(svid.CertChainDER)
		return tlsCert(t, [][]byte{chain[0].Raw, chain[1].Raw}, key)
	}()
	f.clock.Advance(2 * time.Minute)

	// A workload SVID of the trust domain, and a node SVID of another.
	wl := func() *tls.Certificate {
		key := newKey(t)
		e := f.auth.Snapshot().Entries()[0]
		svid, err := f.auth.SignCSR(ctx, f.auth.Snapshot(), e, csrFor(t, key))
		if err != nil {
			t.Fatal(err)
		}
		chain, _ := x509.ParseCertificates(svid.CertChainDER)
		return tlsCert(t, [][]byte{chain[0].Raw, chain[1].Raw}, key)
	}()
	foreign := func() *tls.Certificate {
		o := otherAuthority(t, f.clock)
		key := newKey(t)
		_, tok, err := o.CreateJoinToken(ctx, ca.JoinTokenRequest{Node: "node-1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.ConsumeJoinToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		svid, err := o.SignNodeSVID(ctx, "node-1", csrFor(t, key), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		chain, _ := x509.ParseCertificates(svid.CertChainDER)
		return tlsCert(t, [][]byte{chain[0].Raw, chain[1].Raw}, key)
	}()
	strangerCA, err := minica.New(minica.WithName("stranger"))
	if err != nil {
		t.Fatal(err)
	}

	const (
		ok   = codes.OK
		deny = codes.PermissionDenied
		hs   = codes.Unavailable // the handshake fails
	)
	calls := []string{"attest-token", "attest-pop", "renew", "sync", "sign"}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		want []codes.Code // per call
	}{
		{"none", nil, []codes.Code{ok, deny, deny, deny, deny}},
		{"node CA host certificate", f.hostCert(f.hostCA, "", []string{"host-1.example"}, time.Time{}), []codes.Code{codes.InvalidArgument, ok, deny, deny, deny}},
		{"node SVID", node, []codes.Code{deny, deny, ok, ok, ok}},
		{"node SVID of another trust domain", foreign, []codes.Code{hs, hs, hs, hs, hs}},
		{"expired node SVID", stale, []codes.Code{hs, hs, hs, hs, hs}},
		{"revoked node SVID", revoked, []codes.Code{hs, hs, hs, hs, hs}},
		{"evicted node", evicted, []codes.Code{hs, hs, hs, hs, hs}},
		{"workload SVID", wl, []codes.Code{hs, hs, hs, hs, hs}},
		{"host certificate of another CA", f.hostCert(strangerCA, "host-2.example", nil, time.Time{}), []codes.Code{hs, hs, hs, hs, hs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dial(tc.cert)
			for i, call := range calls {
				var err error
				ctx := ctxT(t)
				switch call {
				case "attest-token":
					_, err = c.Attest(ctx, &nodeproto.AttestRequest{JoinToken: f.token("token-node"), Csr: csrFor(t, newKey(t))})
				case "attest-pop":
					_, err = c.Attest(ctx, &nodeproto.AttestRequest{Csr: csrFor(t, newKey(t))})
				case "renew":
					_, err = c.RenewNode(ctx, &nodeproto.RenewNodeRequest{Csr: csrFor(t, newKey(t))})
				case "sync":
					var s nodeproto.Node_SyncClient
					if s, err = c.Sync(ctx, &nodeproto.SyncRequest{}); err == nil {
						_, err = s.Recv()
					}
				case "sign":
					_, err = c.SignX509(ctx, &nodeproto.SignX509Request{EntryId: entryID, EntryRevision: 1, Csr: csrFor(t, newKey(t))})
				}
				if got := status.Code(err); got != tc.want[i] {
					t.Errorf("%s: %v, want %v", call, err, tc.want[i])
				}
			}
		})
	}
	if len(f.logs.lines("agent handshake refused")) == 0 {
		t.Error("refused handshakes are not logged")
	}
}

// otherAuthority is an authority of another trust domain.
func otherAuthority(t *testing.T, clock interface {
	Now() time.Time
	Monotonic() time.Duration
}) *ca.Authority {
	t.Helper()
	dir := t.TempDir()
	store := openStore(t, dir)
	td := mustID("spiffe://other.org").TrustDomain()
	a, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Store: store, KeyDir: dir + "/keys", Time: clock.Now, Monotonic: clock.Monotonic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestJoinTokenRefusals: a used, expired or unknown token gets the same
// answer; the log says which, with the agent's address.
func TestJoinTokenRefusals(t *testing.T) {
	f := newFixture(t, nil)
	used := f.token("web-1")
	if _, err := f.auth.ConsumeJoinToken(context.Background(), used); err != nil {
		t.Fatal(err)
	}
	expired := f.token("web-2")
	f.clock.Advance(ca.DefaultJoinTokenTTL + time.Second)
	c := f.dial(nil)
	// Unknown: the used token with its first character changed (to one
	// it cannot already be, or 1 run in 32 would try the used token).
	unknown := "x" + used[1:]
	if used[0] == 'x' {
		unknown = "y" + used[1:]
	}
	for _, tc := range []struct{ token, reason string }{
		{used, "token used"},
		{expired, "token expired"},
		{unknown, "token unknown"},
	} {
		_, err := c.Attest(ctxT(t), &nodeproto.AttestRequest{JoinToken: tc.token, Csr: csrFor(t, newKey(t))})
		if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "attestation refused" {
			t.Errorf("%s: %v, want PermissionDenied \"attestation refused\"", tc.reason, err)
		}
		if len(f.logs.lines("node attestation refused", `reason="`+tc.reason+`"`, "remote=127.0.0.1:")) != 1 {
			t.Errorf("no log line for %s with the address", tc.reason)
		}
	}
	// A bad CSR is refused before the token is spent.
	good := f.token("web-3")
	if _, err := c.Attest(ctxT(t), &nodeproto.AttestRequest{JoinToken: good, Csr: []byte("junk")}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Attest with a bad CSR: %v, want InvalidArgument", err)
	}
	if _, err := c.Attest(ctxT(t), &nodeproto.AttestRequest{JoinToken: good, Csr: csrFor(t, newKey(t))}); err != nil {
		t.Errorf("the token was spent by a refused CSR: %v", err)
	}
	if strings.Contains(f.logs.String(), used) {
		t.Error("a join token is in the log")
	}
	// The refusals are one audit record for the address, with the counts.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _, err := f.auth.AuditList(context.Background(), 0, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	for _, r := range recs {
		if r.Action == ca.AuditNodeRefused {
			refused = append(refused, r.Target+": "+r.Detail)
		}
	}
	if len(refused) != 1 || !strings.HasPrefix(refused[0], "127.0.0.1: 3 attestations refused") ||
		!strings.Contains(refused[0], "token expired=1 token unknown=1 token used=1") {
		t.Errorf("audit records of refusals = %q, want one for 127.0.0.1 counting each reason", refused)
	}
}

// TestSyncPushes: Sync sends a new state within 200ms of a change that
// concerns the node (new entry, revocation), and ends with PermissionDenied
// at eviction, which also closes the connection and refuses the next
// handshake.
func TestSyncPushes(t *testing.T) {
	f := newFixture(t, nil)
	node := f.attest("web-1")
	c := f.dial(node)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.Sync(ctx, &nodeproto.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	updates := make(chan *nodeproto.SyncUpdate, 16)
	ended := make(chan error, 1)
	go func() {
		for {
			u, err := s.Recv()
			if err != nil {
				ended <- err
				return
			}
			updates <- u
		}
	}()
	next := func(what string) *nodeproto.SyncUpdate {
		t.Helper()
		select {
		case u := <-updates:
			return u
		case err := <-ended:
			t.Fatalf("%s: Sync ended: %v", what, err)
		case <-time.After(200 * time.Millisecond):
			t.Fatalf("%s: no Sync update within 200ms", what)
		}
		return nil
	}
	first := next("open")
	if len(first.Entries) != 0 {
		t.Fatalf("first update has entries %v", first.Entries)
	}
	// An entry of another node changes nothing the node serves: the next
	// update is the one of its own entry.
	f.entry("spiffe://example.org/db", 0, "db-1")
	f.entry("spiffe://example.org/web", 0, "web-1")
	u := next("entry created")
	if len(u.Entries) != 1 || u.Entries[0].SpiffeId != "spiffe://example.org/web" || u.Revision <= first.Revision {
		t.Fatalf("update after entry created = %v (revision %d after %d)", u.Entries, u.Revision, first.Revision)
	}
	if _, err := f.auth.RevokeID(context.Background(), ca.RevokeRequest{SPIFFEID: "spiffe://example.org/web", Block: true}); err != nil {
		t.Fatal(err)
	}
	r := next("revocation")
	if string(r.Crl) == string(u.Crl) || len(r.Entries) != 1 || !r.Entries[0].Blocked {
		t.Errorf("update after a blocking revocation: CRL changed %v, entries %v", string(r.Crl) != string(u.Crl), r.Entries)
	}

	if _, err := f.auth.EvictNode(context.Background(), "web-1", 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("Sync ended with %v, want PermissionDenied", err)
		}
	case u := <-updates:
		t.Fatalf("update after eviction: %v", u)
	case <-time.After(time.Second):
		t.Fatal("Sync still open 1s after eviction")
	}
	// The connection is closed by the server.
	wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer wcancel()
	for st := c.conn.GetState(); st == connectivity.Ready; st = c.conn.GetState() {
		if !c.conn.WaitForStateChange(wctx, st) {
			t.Fatal("the evicted node's connection is still open after 2s")
		}
	}
	if _, err := f.dial(node).RenewNode(ctxT(t), &nodeproto.RenewNodeRequest{Csr: csrFor(t, newKey(t))}); status.Code(err) != codes.Unavailable {
		t.Errorf("new connection of the evicted node: %v, want a refused handshake", err)
	}
}

// TestSignRefusals: an entry not scoped to the node, a stale revision, a
// CSR whose signature does not verify.
func TestSignRefusals(t *testing.T) {
	f := newFixture(t, nil)
	own := f.entry("spiffe://example.org/web", 0, "web-1")
	theirs := f.entry("spiffe://example.org/db", 0, "db-1")
	local := f.entry("spiffe://example.org/local", 0)
	c := f.dial(f.attest("web-1"))
	csr := csrFor(t, newKey(t))
	bad := append([]byte(nil), csr...)
	bad[len(bad)-3] ^= 0xff // in the signature
	for _, tc := range []struct {
		name     string
		entry    string
		revision uint64
		csr      []byte
		want     codes.Code
	}{
		{"own", own, 1, csr, codes.OK},
		{"another node's", theirs, 1, csr, codes.PermissionDenied},
		{"the server's own", local, 1, csr, codes.PermissionDenied},
		{"unknown", "nope", 1, csr, codes.PermissionDenied},
		{"stale revision", own, 7, csr, codes.FailedPrecondition},
		{"bad CSR signature", own, 1, bad, codes.InvalidArgument},
	} {
		_, err := c.SignX509(ctxT(t), &nodeproto.SignX509Request{EntryId: tc.entry, EntryRevision: tc.revision, Csr: tc.csr})
		if status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if len(f.logs.lines("node asked for an entry not scoped to it", "node=web-1", "entry_id="+theirs)) != 1 {
		t.Error("the request for another node's entry is not logged with node and entry id")
	}
}

// TestNodeLimits: the signing rate and the Sync streams of one node.
func TestNodeLimits(t *testing.T) {
	f := newFixture(t, func(c *nodeapi.Config) {
		c.Limits.SignRate, c.Limits.SignBurst, c.Limits.StreamsPerNode = 1, 2, 1
	})
	own := f.entry("spiffe://example.org/web", 0, "web-1")
	c := f.dial(f.attest("web-1"))
	var codesGot []codes.Code
	for range 3 {
		_, err := c.SignX509(ctxT(t), &nodeproto.SignX509Request{EntryId: own, EntryRevision: 1, Csr: csrFor(t, newKey(t))})
		codesGot = append(codesGot, status.Code(err))
	}
	if codesGot[0] != codes.OK || codesGot[1] != codes.OK || codesGot[2] != codes.ResourceExhausted {
		t.Errorf("three signings with a burst of 2: %v", codesGot)
	}
	f.clock.Advance(time.Second)
	if _, err := c.SignX509(ctxT(t), &nodeproto.SignX509Request{EntryId: own, EntryRevision: 1, Csr: csrFor(t, newKey(t))}); err != nil {
		t.Errorf("signing a second later: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s1, err := c.Sync(ctx, &nodeproto.SyncRequest{})
	if err == nil {
		_, err = s1.Recv()
	}
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c.Sync(ctx, &nodeproto.SyncRequest{})
	if err == nil {
		_, err = s2.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second Sync with a limit of 1: %v", err)
	}
	if n := len(f.logs.lines("agent listener limit reached", "node=web-1")); n != 1 {
		t.Errorf("%d log lines about the node's limits within a minute, want 1", n)
	}
}

// TestAttestBackoff: failed attestations from an address make its next
// attempt wait, without touching the store.
func TestAttestBackoff(t *testing.T) {
	f := newFixture(t, func(c *nodeapi.Config) { c.Limits.AttestBackoff = time.Second })
	c := f.dial(nil)
	attest := func(tok string) error {
		_, err := c.Attest(ctxT(t), &nodeproto.AttestRequest{JoinToken: tok, Csr: csrFor(t, newKey(t))})
		return err
	}
	if err := attest("unknown"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("unknown token: %v", err)
	}
	good := f.token("web-1")
	if err := attest(good); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("attempt right after a failure: %v, want ResourceExhausted", err)
	}
	f.clock.Advance(time.Second)
	if err := attest(good); err != nil {
		t.Fatalf("attempt after the backoff: %v (the token must not have been spent while waiting)", err)
	}
}

// TestX509PoP: a host certificate of the node CA attests the node it
// names; after an eviction only a certificate issued since brings it back.
func TestX509PoP(t *testing.T) {
	f := newFixture(t, nil)
	pop := func(cert *tls.Certificate) (*nodeproto.AttestResponse, error) {
		return f.dial(cert).Attest(ctxT(t), &nodeproto.AttestRequest{Csr: csrFor(t, newKey(t))})
	}
	for _, tc := range []struct {
		cn   string
		dns  []string
		want string
	}{
		{"ignored", []string{"Web-7.Example", "other.example"}, "web-7.example"},
		{"db-2", nil, "db-2"},
	} {
		resp, err := pop(f.hostCert(f.hostCA, tc.cn, tc.dns, time.Time{}))
		if err != nil || resp.NodeName != tc.want {
			t.Errorf("x509pop with CN %q, DNS %v: %v, %v; want node %s", tc.cn, tc.dns, resp.GetNodeName(), err, tc.want)
		}
	}
	if _, err := pop(f.hostCert(f.hostCA, "bad_name", nil, time.Time{})); status.Code(err) != codes.Unavailable {
		t.Errorf("host certificate naming no valid node: %v, want a refused handshake", err)
	}
	old := f.hostCert(f.hostCA, "", []string{"db-2"}, time.Time{})
	if _, err := f.auth.EvictNode(context.Background(), "db-2", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := pop(old); status.Code(err) != codes.PermissionDenied {
		t.Errorf("evicted node with its old certificate: %v, want PermissionDenied", err)
	}
	if len(f.logs.lines("node attestation refused", `reason=evicted`, "node=db-2")) != 1 {
		t.Error("the evicted node's refusal is not logged")
	}
	fresh := f.hostCert(f.hostCA, "", []string{"db-2"}, f.clock.Now().Add(time.Second))
	f.clock.Advance(2 * time.Second)
	if _, err := pop(fresh); err != nil {
		t.Fatalf("evicted node with a certificate issued after the eviction: %v", err)
	}
	if f.auth.Snapshot().NodeEvicted("db-2") {
		t.Error("the node is still evicted after new proof")
	}
}

// TestShutdownEndsSync: Shutdown does not wait for Sync streams forever.
func TestShutdownEndsSync(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(f.attest("web-1"))
	s, err := c.Sync(context.Background(), &nodeproto.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := s.Recv(); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("Sync after Shutdown: %v, want an error status", err)
	}
}

// TestNodeSVIDEnds: a node connection may act only while its node SVID
// is unrevoked and unexpired: revoking it ends Sync at once with
// PermissionDenied; an expired one is refused on the next call with
// Unauthenticated, which tells the agent to dial again with its renewed
// node SVID.
func TestNodeSVIDEnds(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(f *fixture, cert *tls.Certificate) error
	}{
		{"revoke --serial", func(f *fixture, cert *tls.Certificate) error {
			_, err := f.auth.RevokeSerial(context.Background(), cert.Leaf.SerialNumber.Text(16), "stolen", 0)
			return err
		}},
		{"revoke --id", func(f *fixture, cert *tls.Certificate) error {
			_, err := f.auth.RevokeID(context.Background(), ca.RevokeRequest{SPIFFEID: cert.Leaf.URIs[0].String()})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			cert := f.attest("web-1")
			s, err := f.dial(cert).Sync(ctxT(t), &nodeproto.SyncRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			if err != nil {
				t.Fatal(err)
			}
			ended := make(chan error, 1)
			go func() {
				for {
					if _, err := s.Recv(); err != nil {
						ended <- err
						return
					}
				}
			}()
			if err := tc.end(f, cert); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-ended:
				if status.Code(err) != codes.PermissionDenied {
					t.Errorf("Sync ended with %v, want PermissionDenied", err)
				}
			case <-time.After(time.Second):
				t.Fatal("Sync still open 1s after the revocation")
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		f := newFixture(t, func(c *nodeapi.Config) { c.NodeSVIDTTL = ca.MinNodeSVIDTTL })
		f.entry("spiffe://example.org/web", 0, "web-1")
		c := f.dial(f.attest("web-1"))
		if _, err := c.RenewNode(ctxT(t), &nodeproto.RenewNodeRequest{Csr: csrFor(t, newKey(t))}); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(ca.MinNodeSVIDTTL)
		if _, err := c.RenewNode(ctxT(t), &nodeproto.RenewNodeRequest{Csr: csrFor(t, newKey(t))}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("RenewNode on the connection of an expired node SVID: %v, want Unauthenticated (dial again)", err)
		}
	})
}

// TestSyncCoalesces: an agent that does not read is sent the newest state
// once it reads again, not every state in between: what waits for it is
// bounded by the flow-control windows, not by the number of changes.
func TestSyncCoalesces(t *testing.T) {
	f := newFixture(t, nil)
	node := f.attest("web-1")
	// A fixed window, so that the client does not grow it while it does
	// not read.
	conn, err := grpc.NewClient("passthrough:///"+f.addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithTransportCredentials(credentials.NewTLS(f.clientTLS(node))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := nodeproto.NewNodeClient(conn).Sync(ctxT(t), &nodeproto.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	const changes = 200
	for i := range changes {
		f.entry(fmt.Sprintf("spiffe://example.org/web/%d", i), 0, "web-1")
	}
	received := 0
	for {
		u, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		received++
		if len(u.Entries) == changes {
			break
		}
	}
	if received >= changes/2 {
		t.Errorf("%d updates for %d changes the agent did not read in time, want them coalesced", received, changes)
	}
	t.Logf("%d changes arrived in %d updates", changes, received)
}
