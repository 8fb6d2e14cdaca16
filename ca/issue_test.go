package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/badge-dev/badge/storage"
)

func TestSignX509SVID(t *testing.T) {
	ctx := context.Background()
	a, env := newTestAuthority(t, nil)
	rec, err := a.CreateEntry(ctx, EntryRequest{
		SPIFFEID:  "spiffe://example.org/api",
		Selectors: []string{"unix:uid:1000"},
		DNSNames:  []string{"api.example.org", "*.api.example.org"},
	})
	if err != nil {
		t.Fatal(err)
	}
	snap := a.Snapshot()
	e := entryFor(t, snap, rec.ID)
	now := env.clock.Now()

	svid, err := a.SignX509SVID(ctx, snap, e)
	if err != nil {
		t.Fatalf("SignX509SVID: %v", err)
	}
	wantID := spiffeid.RequireFromString("spiffe://example.org/api")
	if svid.ID != wantID || svid.EntryID != rec.ID || svid.Revision != rec.Revision {
		t.Errorf("SVID for %s (entry %s rev %d), want %s (entry %s rev %d)", svid.ID, svid.EntryID, svid.Revision, wantID, rec.ID, rec.Revision)
	}

	parsed, err := x509svid.ParseRaw(svid.CertChainDER, svid.KeyDER)
	if err != nil {
		t.Fatalf("x509svid.ParseRaw: %v", err)
	}
	if parsed.ID != wantID {
		t.Errorf("parsed ID = %s, want %s", parsed.ID, wantID)
	}
	id, chains, err := x509svid.Verify(parsed.Certificates, snap.Bundle(), x509svid.WithTime(now))
	if err != nil {
		t.Fatalf("x509svid.Verify against the snapshot's bundle: %v", err)
	}
	if id != wantID || len(chains) != 1 || len(chains[0]) != 3 {
		t.Errorf("Verify: ID %s, %d chains; want %s and one leaf-intermediate-root chain", id, len(chains), wantID)
	}
	if len(parsed.Certificates) != 2 || !bytes.Equal(parsed.Certificates[1].Raw, snap.signer.cert.Raw) {
		t.Errorf("chain is not leaf then intermediate")
	}

	leaf := parsed.Certificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID.String() {
		t.Errorf("URI SANs = %v, want exactly [%s]", leaf.URIs, wantID)
	}
	if want := []string{"api.example.org", "*.api.example.org"}; !slices.Equal(leaf.DNSNames, want) {
		t.Errorf("DNS SANs = %q, want %q", leaf.DNSNames, want)
	}
	if leaf.Subject.CommonName != "api.example.org" {
		t.Errorf("CommonName = %q, want the first DNS name", leaf.Subject.CommonName)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %#x, want digitalSignature only", leaf.KeyUsage)
	}
	if want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !slices.Equal(leaf.ExtKeyUsage, want) || len(leaf.UnknownExtKeyUsage) != 0 {
		t.Errorf("ExtKeyUsage = %v (+%d unknown), want serverAuth, clientAuth", leaf.ExtKeyUsage, len(leaf.UnknownExtKeyUsage))
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("IsCA = %v, BasicConstraintsValid = %v; want a leaf that says so", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.Text(16) != svid.Serial {
		t.Errorf("serial %x, reported %s; want a positive serial reported as canonical hex (big.Int.Text(16))", leaf.SerialNumber, svid.Serial)
	}
	if _, ok := parsed.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("private key is %T, want ECDSA", parsed.PrivateKey)
	}
	if want := now.Add(-Backdate); !leaf.NotBefore.Equal(want) || !svid.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %v (reported %v), want %v", leaf.NotBefore, svid.NotBefore, want)
	}
	if want := now.Add(DefaultSVIDTTL); !leaf.NotAfter.Equal(want) || !svid.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %v (reported %v), want %v", leaf.NotAfter, svid.NotAfter, want)
	}
	if want := now.Add(DefaultSVIDTTL / 2); !svid.RefreshAt().Equal(want) {
		t.Errorf("RefreshAt = %v, want half the TTL after issuance, %v", svid.RefreshAt(), want)
	}

	// The serial is on record before the SVID is returned.
	recs, err := env.store.SerialsFor(ctx, wantID.String(), now)
	if err != nil {
		t.Fatal(err)
	}
	want := storage.Serial{Serial: svid.Serial, SPIFFEID: wantID.String(), EntryID: rec.ID, NotBefore: svid.NotBefore, NotAfter: svid.NotAfter, IssuedAt: now}
	if len(recs) != 1 || !sameSerial(recs[0], want) {
		t.Errorf("SerialsFor = %+v, want [%+v]", recs, want)
	}
}

func sameSerial(a, b storage.Serial) bool {
	return a.Serial == b.Serial && a.SPIFFEID == b.SPIFFEID && a.EntryID == b.EntryID &&
		a.NotBefore.Equal(b.NotBefore) && a.NotAfter.Equal(b.NotAfter) && a.IssuedAt.Equal(b.IssuedAt)
}

func TestSignX509SVIDSerials(t *testing.T) {
	const n = 1000
	ctx := context.Background()
	a, env := newTestAuthority(t, nil)
	id := mustCreate(t, a, "spiffe://example.org/many", "unix:uid:7")
	snap := a.Snapshot()
	e := entryFor(t, snap, id)
	seen := make(map[string]bool, n)
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	for range n {
		svid, err := a.SignX509SVID(ctx, snap, e)
		if err != nil {
			t.Fatal(err)
		}
		leaf := parseChain(t, svid.CertChainDER)[0]
		if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.Cmp(limit) >= 0 {
			t.Fatalf("serial %x is not in [1, 2^127)", leaf.SerialNumber)
		}
		if seen[svid.Serial] {
			t.Fatalf("serial %s issued twice", svid.Serial)
		}
		seen[svid.Serial] = true
	}
	recs, err := env.store.SerialsFor(ctx, "spiffe://example.org/many", env.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n {
		t.Fatalf("%d serials recorded, want %d", len(recs), n)
	}
	for _, r := range recs {
		if !seen[r.Serial] {
			t.Errorf("recorded serial %s was never issued", r.Serial)
		}
	}
}

func TestSVIDLifetime(t *testing.T) {
	tests := []struct {
		name     string
		cfg      func(*Config)
		entryTTL time.Duration // as stored; may exceed today's maximum
		want     time.Duration
	}{
		{"server default", nil, 0, DefaultSVIDTTL},
		{"configured TTL", func(c *Config) { c.SVIDTTL = time.Minute }, 0, time.Minute},
		{"entry TTL", nil, 2 * time.Minute, 2 * time.Minute},
		{"entry TTL shorter than configured", func(c *Config) { c.SVIDTTL = time.Minute }, 30 * time.Second, 30 * time.Second},
		{"entry TTL up to a raised maximum", func(c *Config) { c.MaxSVIDTTL = 10 * time.Minute }, 10 * time.Minute, 10 * time.Minute},
		{"entry TTL capped by a lowered maximum", func(c *Config) { c.MaxSVIDTTL = time.Minute }, 5 * time.Minute, time.Minute},
		{"minimum", func(c *Config) { c.SVIDTTL, c.MaxSVIDTTL, c.IntermediateTTL = MinSVIDTTL, MinSVIDTTL, time.Hour }, 0, MinSVIDTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			env := newEnv(t)
			// Stored directly, as an entry created under an earlier
			// configuration would be.
			err := env.store.CreateEntry(ctx, storage.Entry{
				ID: "e1", SPIFFEID: "spiffe://example.org/ttl", Selectors: []string{"unix:uid:1"},
				TTL: tt.entryTTL, CreatedAt: env.clock.Now(), Revision: 1,
			})
			if err != nil {
				t.Fatal(err)
			}
			a := env.open(t, tt.cfg)
			snap := a.Snapshot()
			svid, err := a.SignX509SVID(ctx, snap, entryFor(t, snap, "e1"))
			if err != nil {
				t.Fatal(err)
			}
			now := env.clock.Now()
			leaf := parseChain(t, svid.CertChainDER)[0]
			if got := leaf.NotAfter.Sub(now); got != tt.want {
				t.Errorf("SVID lives %s after issuance, want %s", got, tt.want)
			}
			if !leaf.NotBefore.Equal(now.Add(-Backdate)) {
				t.Errorf("NotBefore = %v, want %v", leaf.NotBefore, now.Add(-Backdate))
			}
			if got := leaf.NotAfter.Sub(now); got > a.cfg.MaxSVIDTTL {
				t.Errorf("SVID lifetime %s exceeds the maximum %s", got, a.cfg.MaxSVIDTTL)
			}
		})
	}
}

func TestSVIDNotAfterBoundedByIntermediate(t *testing.T) {
	ctx := context.Background()
	a, env := newTestAuthority(t, nil)
	id := mustCreate(t, a, "spiffe://example.org/late", "unix:uid:1")
	snap := a.Snapshot()
	e := entryFor(t, snap, id)
	inter := snap.signer.cert

	// No rotation happens here (the test never calls rotateIntermediate),
	// so the intermediate is about to expire when the SVID is signed.
	env.clock.Advance(inter.NotAfter.Sub(env.clock.Now()) - time.Minute)
	now := env.clock.Now()
	svid, err := a.SignX509SVID(ctx, snap, e)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parseChain(t, svid.CertChainDER)[0]
	if !leaf.NotAfter.Equal(inter.NotAfter) || !svid.NotAfter.Equal(inter.NotAfter) {
		t.Errorf("NotAfter = %v, want the intermediate's %v", leaf.NotAfter, inter.NotAfter)
	}
	if !leaf.NotBefore.Equal(now.Add(-Backdate)) {
		t.Errorf("NotBefore = %v, want %v", leaf.NotBefore, now.Add(-Backdate))
	}
	if _, _, err := x509svid.ParseAndVerify([][]byte{leaf.Raw, inter.Raw}, snap.Bundle(), x509svid.WithTime(now)); err != nil {
		t.Errorf("SVID does not verify: %v", err)
	}
}
