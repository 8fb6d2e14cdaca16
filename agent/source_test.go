package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/testclock"
)

// TestWorkloadKey checks what the key pool makes ahead of demand: the
// PKCS#8 encoding is the key's, and the request is for that key, signed by
// it (the server's own parser, ca.ParseCSR, accepts it and returns the
// key) and names nothing.
func TestWorkloadKey(t *testing.T) {
	seen := map[string]bool{}
	for range 3 {
		k, err := newWorkloadKey()
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(k.der)] {
			t.Fatal("the same key made twice")
		}
		seen[string(k.der)] = true
		parsed, err := x509.ParsePKCS8PrivateKey(k.der)
		if err != nil || !k.key.Equal(parsed) {
			t.Fatalf("PKCS#8 encoding is not the key: %v", err)
		}
		want, err := x509.MarshalPKCS8PrivateKey(k.key)
		if err != nil || !bytes.Equal(k.der, want) {
			t.Fatalf("PKCS#8 encoding differs from x509.MarshalPKCS8PrivateKey's: %v", err)
		}
		pub, err := ca.ParseCSR(k.csr)
		if err != nil {
			t.Fatalf("the server refuses the request: %v", err)
		}
		if !k.key.PublicKey.Equal(pub) {
			t.Fatal("the request is not for the key")
		}
		csr, err := x509.ParseCertificateRequest(k.csr)
		if err != nil {
			t.Fatal(err)
		}
		if len(csr.Subject.Names) != 0 || len(csr.DNSNames) != 0 || len(csr.URIs) != 0 || len(csr.Extensions) != 0 {
			t.Fatalf("the request names %v, DNS %v, URIs %v, %d extensions; want none", csr.Subject, csr.DNSNames, csr.URIs, len(csr.Extensions))
		}
	}
}

// TestWorkloadKeyPool checks that the agent's pool is full while it runs,
// that a fresh fetch takes its key from it and sends that key's request
// (the SVID certifies the key handed out), and that the keys left are
// dropped when Run returns.
func TestWorkloadKeyPool(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	f.addEntry("e1", "spiffe://example.org/web", "unix:uid:1001")
	a, err := newTestAgent(t, dataDir(t), clock, f, func(c *Config) { c.JoinToken = f.token("web-1") })
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop := a.run(t)
	a.waitState(t, "a sync", synced)
	a.waitConn(t, "", false)
	waitPool(t, a, workloadKeyPoolSize)

	u, err := a.Source().X509(context.Background(), workload.X509Request{Caller: caller("1001")})
	if err != nil || len(u.SVIDs) != 1 {
		t.Fatalf("X509: %v, %d SVIDs", err, len(u.SVIDs))
	}
	sv := u.SVIDs[0]
	key, err := x509.ParsePKCS8PrivateKey(sv.KeyDER)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := x509.ParseCertificates(sv.CertChainDER)
	if err != nil || len(certs) != 2 {
		t.Fatalf("chain of %d certificates: %v; want leaf and intermediate", len(certs), err)
	}
	if !publicKeyEqual(certs[0].PublicKey, key.(crypto.Signer).Public()) {
		t.Fatal("the SVID does not certify the key handed out with it")
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := a.keys.Len(); n != 0 {
		t.Fatalf("%d workload keys left in the pool after Run returned", n)
	}
}

// waitPool waits until the agent's key pool holds n keys: there is no
// event for that, so it polls.
func waitPool(t *testing.T, a *testAgent, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for a.keys.Len() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the key pool holds %d keys after 10s, want %d", a.keys.Len(), n)
		}
		<-tick.C
	}
}

// TestSVIDOfChain checks the agent's check of what the server signed, in
// a row of calls sharing one issuerCache: the certificates after the leaf
// are parsed when they differ from the last chain's that parsed (an
// intermediate that changed, or a broken one, is parsed again and a broken
// one refused) and only then; the leaf is always parsed and checked.
func TestSVIDOfChain(t *testing.T) {
	clock := testclock.New(time.Now())
	f1 := newFakeServer(t, clock.Now)
	f2 := newFakeServer(t, clock.Now) // another intermediate CA
	e := &entry{id: "e1", spiffeID: spiffeid.RequireFromString("spiffe://example.org/web"), revision: 3}
	leafFor := func(f *fakeServer, k workloadKey, id string) []byte {
		t.Helper()
		c, err := f.issue(id, k.key.Public(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return c.Raw
	}
	inter1, inter2 := f1.ca.Intermediate.Raw, f2.ca.Intermediate.Raw
	broken := []byte{0x30, 0x03, 0x02, 0x01, 0x01}
	var c issuerCache
	for _, step := range []struct {
		name    string
		chain   func(k workloadKey) [][]byte
		wantErr string // "" for none
		cached  []byte // the intermediate the cache holds afterwards
		parsed  bool   // whether the cache was replaced (the issuers parsed)
	}{
		{"first chain", func(k workloadKey) [][]byte { return [][]byte{leafFor(f1, k, e.spiffeID.String()), inter1} }, "", inter1, true},
		{"same intermediate", func(k workloadKey) [][]byte { return [][]byte{leafFor(f1, k, e.spiffeID.String()), inter1} }, "", inter1, false},
		{"broken intermediate", func(k workloadKey) [][]byte { return [][]byte{leafFor(f1, k, e.spiffeID.String()), broken} }, "certificate 1", inter1, false},
		{"intermediate changed", func(k workloadKey) [][]byte { return [][]byte{leafFor(f2, k, e.spiffeID.String()), inter2} }, "", inter2, true},
		{"one more, broken", func(k workloadKey) [][]byte { return [][]byte{leafFor(f2, k, e.spiffeID.String()), inter2, broken} }, "certificate 2", inter2, false},
		{"broken leaf", func(workloadKey) [][]byte { return [][]byte{broken, inter2} }, "certificate 0", inter2, false},
		{"no certificate", func(workloadKey) [][]byte { return nil }, "no certificate", inter2, false},
		{"another key", func(workloadKey) [][]byte {
			other, err := newWorkloadKey()
			if err != nil {
				t.Fatal(err)
			}
			return [][]byte{leafFor(f2, other, e.spiffeID.String()), inter2}
		}, "does not certify the key", inter2, false},
		{"another ID", func(k workloadKey) [][]byte { return [][]byte{leafFor(f2, k, "spiffe://example.org/db"), inter2} }, "naming spiffe://example.org/db", inter2, false},
	} {
		t.Run(step.name, func(t *testing.T) {
			k, err := newWorkloadKey()
			if err != nil {
				t.Fatal(err)
			}
			chain := step.chain(k)
			before := c.last.Load()
			sv, err := svidOf(e, k, chain, &c)
			switch {
			case step.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case step.wantErr != "" && (err == nil || !strings.Contains(err.Error(), step.wantErr)):
				t.Fatalf("error %v, want one saying %q", err, step.wantErr)
			}
			if err == nil {
				if !bytes.Equal(sv.CertChainDER, bytes.Join(chain, nil)) || !bytes.Equal(sv.KeyDER, k.der) || sv.ID != e.spiffeID ||
					sv.EntryID != e.id || sv.Revision != e.revision {
					t.Errorf("SVID %+v does not carry the chain, key and entry", sv)
				}
				leaf, _ := x509.ParseCertificate(chain[0])
				if sv.Serial != leaf.SerialNumber.Text(16) || !sv.NotAfter.Equal(leaf.NotAfter) {
					t.Errorf("serial %s, expiry %v; want the leaf's %x, %v", sv.Serial, sv.NotAfter, leaf.SerialNumber, leaf.NotAfter)
				}
			}
			last := c.last.Load()
			if last == nil || len(*last) != 1 || !bytes.Equal((*last)[0], step.cached) {
				t.Errorf("the cache holds another intermediate than the one wanted")
			}
			if replaced := last != before; replaced != step.parsed {
				t.Errorf("cache replaced: %v, want %v", replaced, step.parsed)
			}
		})
	}
}
