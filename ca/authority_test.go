package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/storage"
)

// keyRecords returns the store's key records by kind, in store order.
func keyRecords(t *testing.T, s Store) map[string][]storage.Key {
	t.Helper()
	recs, err := s.ListKeys(context.Background())
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	out := make(map[string][]storage.Key)
	for _, r := range recs {
		out[r.Kind] = append(out[r.Kind], r)
	}
	return out
}

func checkCAKey(t *testing.T, what string, c *x509.Certificate, td spiffeid.TrustDomain) {
	t.Helper()
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("%s: IsCA = %v, BasicConstraintsValid = %v; want a CA", what, c.IsCA, c.BasicConstraintsValid)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("%s: KeyUsage %#x lacks certSign", what, c.KeyUsage)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("%s: public key is %T, want ECDSA P-256", what, c.PublicKey)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != td.IDString() {
		t.Errorf("%s: URI SANs = %v, want [%s]", what, c.URIs, td.IDString())
	}
}

func TestNewCreatesKeyHierarchy(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	now := env.clock.Now()
	snap := a.Snapshot()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	if snap.TrustDomain() != td || a.TrustDomain() != td {
		t.Fatalf("trust domain = %s / %s, want the default %s", snap.TrustDomain(), a.TrustDomain(), td)
	}

	roots := snap.Bundle().X509Authorities()
	if len(roots) != 1 {
		t.Fatalf("bundle holds %d authorities, want the one root", len(roots))
	}
	root := roots[0]
	if !bytes.Equal(snap.BundleDER(), root.Raw) {
		t.Errorf("BundleDER is not the root certificate")
	}
	t.Run("root", func(t *testing.T) {
		checkCAKey(t, "root", root, td)
		if err := root.CheckSignatureFrom(root); err != nil {
			t.Errorf("root is not self-signed: %v", err)
		}
		if !bytes.Equal(root.RawSubject, root.RawIssuer) {
			t.Errorf("root issuer %q differs from its subject %q", root.Issuer, root.Subject)
		}
		if want := now.Add(-Backdate); !root.NotBefore.Equal(want) {
			t.Errorf("root NotBefore = %v, want %v", root.NotBefore, want)
		}
		if want := now.Add(DefaultRootTTL); !root.NotAfter.Equal(want) {
			t.Errorf("root NotAfter = %v, want %v", root.NotAfter, want)
		}
	})

	inter := snap.signer.cert
	t.Run("intermediate", func(t *testing.T) {
		checkCAKey(t, "intermediate", inter, td)
		if err := inter.CheckSignatureFrom(root); err != nil {
			t.Errorf("intermediate is not signed by the root: %v", err)
		}
		if inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
			t.Errorf("intermediate MaxPathLen = %d, MaxPathLenZero = %v; want 0, true", inter.MaxPathLen, inter.MaxPathLenZero)
		}
		if want := now.Add(-Backdate); !inter.NotBefore.Equal(want) {
			t.Errorf("intermediate NotBefore = %v, want %v", inter.NotBefore, want)
		}
		if want := now.Add(DefaultIntermediateTTL); !inter.NotAfter.Equal(want) {
			t.Errorf("intermediate NotAfter = %v, want %v (24h default)", inter.NotAfter, want)
		}
		if !bytes.Equal(snap.chainDER, inter.Raw) {
			t.Errorf("the chain appended to leaves is not the intermediate")
		}
	})

	t.Run("records and key files", func(t *testing.T) {
		fi, err := os.Stat(env.keyDir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("key directory mode = %#o, want 0700", fi.Mode().Perm())
		}
		recs := keyRecords(t, env.store)
		for kind, cert := range map[string]*x509.Certificate{kindRoot: root, kindIntermediate: inter} {
			if len(recs[kind]) != 1 {
				t.Fatalf("%d %s records, want 1", len(recs[kind]), kind)
			}
			rec := recs[kind][0]
			if rec.State != storage.KeyActive || !bytes.Equal(rec.Certificate, cert.Raw) || !rec.NotAfter.Equal(cert.NotAfter) {
				t.Errorf("%s record = %+v, want the active certificate", kind, rec)
			}
			pub, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rec.PublicKey, pub) {
				t.Errorf("%s record's public key is not the certificate's", kind)
			}
			fi, err := os.Stat(filepath.Join(env.keyDir, rec.PrivateRef))
			if err != nil {
				t.Fatalf("%s key file: %v", kind, err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s key file mode = %#o, want 0600", kind, fi.Mode().Perm())
			}
		}
	})
}

func TestNewReopensSameKeys(t *testing.T) {
	env := newEnv(t)
	a1 := env.open(t, nil)
	s1 := a1.Snapshot()
	a1.Close()

	env.clock.Advance(time.Hour) // well before the intermediate's half-life
	a2 := env.open(t, nil)
	s2 := a2.Snapshot()
	if !s2.Bundle().Equal(s1.Bundle()) || !bytes.Equal(s2.BundleDER(), s1.BundleDER()) {
		t.Errorf("reopened authority has a different bundle")
	}
	if !bytes.Equal(s2.signer.cert.Raw, s1.signer.cert.Raw) || s2.signer.id != s1.signer.id {
		t.Errorf("reopened authority signs with intermediate %s, want %s", s2.signer.id, s1.signer.id)
	}
	if n := len(keyRecords(t, env.store)[kindIntermediate]); n != 1 {
		t.Errorf("%d intermediate records after reopening, want 1 (nothing new created)", n)
	}
}

func TestNewRotatesStaleIntermediate(t *testing.T) {
	env := newEnv(t)
	a1 := env.open(t, nil)
	s1 := a1.Snapshot()
	a1.Close()

	env.clock.Advance(DefaultIntermediateTTL/2 + time.Minute)
	s2 := env.open(t, nil).Snapshot()
	if !s2.Bundle().Equal(s1.Bundle()) {
		t.Errorf("the root changed; only the intermediate is due")
	}
	if s2.signer.id == s1.signer.id {
		t.Fatalf("an intermediate past half its life is still used after reopening")
	}
	if want := env.clock.Now().Add(DefaultIntermediateTTL); !s2.signer.cert.NotAfter.Equal(want) {
		t.Errorf("new intermediate NotAfter = %v, want %v", s2.signer.cert.NotAfter, want)
	}
	for _, rec := range keyRecords(t, env.store)[kindIntermediate] {
		want := storage.KeyActive
		if rec.ID == s1.signer.id {
			want = storage.KeyRetired
		}
		if rec.State != want {
			t.Errorf("intermediate %s is %s, want %s", rec.ID, rec.State, want)
		}
	}
}

func TestNewKeyFileProblems(t *testing.T) {
	tests := []struct {
		name string
		// damage breaks the key files of an authority that was opened once.
		damage func(t *testing.T, root, inter string)
		// is is a sentinel the error must match, if any.
		is error
		// names is the path the error must name, so that an operator
		// knows which file to look at.
		names func(root, inter string) string
	}{
		{
			name:   "root key mode 0644",
			damage: func(t *testing.T, root, _ string) { chmod(t, root, 0o644) },
			names:  func(root, _ string) string { return root },
		},
		{
			name:   "intermediate key mode 0640",
			damage: func(t *testing.T, _, inter string) { chmod(t, inter, 0o640) },
			names:  func(_, inter string) string { return inter },
		},
		{
			name:   "intermediate key file holds the root key",
			damage: func(t *testing.T, root, inter string) { copyFile(t, root, inter) },
			names:  func(_, inter string) string { return inter },
		},
		{
			name:   "root key file holds the intermediate key",
			damage: func(t *testing.T, root, inter string) { copyFile(t, inter, root) },
			names:  func(root, _ string) string { return root },
		},
		{
			name:   "root key file is not PEM",
			damage: func(t *testing.T, root, _ string) { writeFile(t, root, []byte("not a key\n")) },
			names:  func(root, _ string) string { return root },
		},
		{
			name:   "missing root key file",
			damage: func(t *testing.T, root, _ string) { remove(t, root) },
			is:     fs.ErrNotExist,
		},
		{
			name:   "missing intermediate key file",
			damage: func(t *testing.T, _, inter string) { remove(t, inter) },
			is:     fs.ErrNotExist,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t)
			a := env.open(t, nil)
			a.Close()
			before := keyRecords(t, env.store)
			root := filepath.Join(env.keyDir, before[kindRoot][0].PrivateRef)
			inter := filepath.Join(env.keyDir, before[kindIntermediate][0].PrivateRef)
			tt.damage(t, root, inter)

			a, err := New(context.Background(), env.config(nil))
			if err == nil {
				a.Close()
				t.Fatal("New succeeded with a damaged key file")
			}
			t.Logf("New: %v", err)
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error does not match %v", tt.is)
			}
			if tt.names != nil && !strings.Contains(err.Error(), tt.names(root, inter)) {
				t.Errorf("error does not name the key file %s", tt.names(root, inter))
			}
			// A damaged key is reported, never silently replaced.
			after := keyRecords(t, env.store)
			if len(after[kindRoot]) != 1 || len(after[kindIntermediate]) != 1 {
				t.Errorf("key records changed after a failed New: %d roots, %d intermediates", len(after[kindRoot]), len(after[kindIntermediate]))
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, data)
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func TestRotateIntermediate(t *testing.T) {
	ctx := context.Background()
	a, env := newTestAuthority(t, nil)
	id := mustCreate(t, a, "spiffe://example.org/api", "unix:uid:1000")
	old := a.Snapshot()
	oldInter := old.signer

	// Half its life is counted over the certificate's validity, which
	// starts Backdate before its creation.
	start := env.clock.Now()
	half := oldInter.rotateAt()
	if lo, hi := start.Add(DefaultIntermediateTTL/2-Backdate), start.Add(DefaultIntermediateTTL/2); half.Before(lo) || half.After(hi) {
		t.Fatalf("rotateAt = %v, want half-way through the intermediate's life, in [%v, %v]", half, lo, hi)
	}

	// Before half-life nothing happens.
	env.clock.Advance(half.Sub(start) - time.Second)
	if _, err := a.rotateIntermediate(ctx); err != nil {
		t.Fatalf("rotateIntermediate before half-life: %v", err)
	}
	if a.Snapshot() != old {
		t.Fatal("snapshot replaced before the intermediate reached half its life")
	}

	env.clock.Advance(time.Second)
	if _, err := a.rotateIntermediate(ctx); err != nil {
		t.Fatalf("rotateIntermediate: %v", err)
	}
	cur := a.Snapshot()
	if cur == old {
		t.Fatal("snapshot not replaced after rotation")
	}
	if !replaced(old) {
		t.Error("old snapshot's Done is not closed")
	}
	if replaced(cur) {
		t.Error("new snapshot's Done is closed")
	}
	if !cur.Bundle().Equal(old.Bundle()) || !bytes.Equal(cur.BundleDER(), old.BundleDER()) {
		t.Error("bundle changed; rotation must keep the root")
	}
	inter := cur.signer
	if inter.id == oldInter.id || bytes.Equal(inter.cert.Raw, oldInter.cert.Raw) {
		t.Fatal("the signing intermediate did not change")
	}
	root := cur.Bundle().X509Authorities()[0]
	if err := inter.cert.CheckSignatureFrom(root); err != nil {
		t.Errorf("new intermediate is not signed by the root: %v", err)
	}
	now := env.clock.Now()
	if !inter.cert.NotBefore.Equal(now.Add(-Backdate)) || !inter.cert.NotAfter.Equal(now.Add(DefaultIntermediateTTL)) {
		t.Errorf("new intermediate valid %v to %v, want %v to %v", inter.cert.NotBefore, inter.cert.NotAfter, now.Add(-Backdate), now.Add(DefaultIntermediateTTL))
	}
	if len(cur.Entries()) != 1 || cur.Entries()[0].Record.ID != id {
		t.Errorf("entries lost in rotation: %d", len(cur.Entries()))
	}

	// A second call is a no-op: the new intermediate is young.
	if _, err := a.rotateIntermediate(ctx); err != nil || a.Snapshot() != cur {
		t.Errorf("second rotateIntermediate: err %v, snapshot replaced %v", err, a.Snapshot() != cur)
	}

	states := make(map[string]storage.KeyState)
	for _, rec := range keyRecords(t, env.store)[kindIntermediate] {
		states[rec.ID] = rec.State
	}
	want := map[string]storage.KeyState{oldInter.id: storage.KeyRetired, inter.id: storage.KeyActive}
	if len(states) != len(want) || states[oldInter.id] != want[oldInter.id] || states[inter.id] != want[inter.id] {
		t.Errorf("intermediate records = %v, want %v", states, want)
	}

	// New SVIDs chain to the new intermediate.
	svid, err := a.SignX509SVID(ctx, cur, entryFor(t, cur, id))
	if err != nil {
		t.Fatal(err)
	}
	chain := parseChain(t, svid.CertChainDER)
	if len(chain) != 2 || !bytes.Equal(chain[1].Raw, inter.cert.Raw) {
		t.Errorf("SVID chain does not end in the new intermediate")
	}
	if err := chain[0].CheckSignatureFrom(inter.cert); err != nil {
		t.Errorf("SVID not signed by the new intermediate: %v", err)
	}

	// And a restart keeps the new intermediate.
	a.Close()
	if got := env.open(t, nil).Snapshot().signer.id; got != inter.id {
		t.Errorf("after restart the intermediate is %s, want %s", got, inter.id)
	}
}

func parseChain(t testing.TB, der []byte) []*x509.Certificate {
	t.Helper()
	certs, err := x509.ParseCertificates(der)
	if err != nil {
		t.Fatalf("parsing chain: %v", err)
	}
	return certs
}

func TestConfigRejected(t *testing.T) {
	tests := []struct {
		name string
		mod  func(env *testEnv, c *Config)
	}{
		{"missing store", func(_ *testEnv, c *Config) { c.Store = nil }},
		{"missing key dir", func(_ *testEnv, c *Config) { c.KeyDir = "" }},
		{"SVID TTL over the default maximum", func(_ *testEnv, c *Config) { c.SVIDTTL = DefaultMaxSVIDTTL + time.Second }},
		{"SVID TTL over the maximum", func(_ *testEnv, c *Config) { c.SVIDTTL, c.MaxSVIDTTL = 2*time.Minute, time.Minute }},
		{"SVID TTL below the minimum", func(_ *testEnv, c *Config) { c.SVIDTTL = MinSVIDTTL - time.Second }},
		{"maximum SVID TTL below the minimum", func(_ *testEnv, c *Config) { c.MaxSVIDTTL = MinSVIDTTL - time.Second }},
		{"negative SVID TTL", func(_ *testEnv, c *Config) { c.SVIDTTL = -time.Minute }},
		{"intermediate TTL under four maximum SVID TTLs", func(_ *testEnv, c *Config) { c.IntermediateTTL = 4*DefaultMaxSVIDTTL - time.Second }},
		{"root TTL not longer than the intermediate TTL", func(_ *testEnv, c *Config) { c.RootTTL = DefaultIntermediateTTL }},
		{"root prepare lead beyond the time a root signs", func(_ *testEnv, c *Config) {
			c.RootTTL, c.IntermediateTTL, c.RootPrepareLead = 3*time.Hour, time.Hour, 2*time.Hour+time.Second
		}},
		{"negative root prepare lead", func(_ *testEnv, c *Config) { c.RootPrepareLead = -time.Hour }},
		{"JWT key TTL under the JWT TTL", func(_ *testEnv, c *Config) { c.JWTKeyTTL = DefaultJWTTTL - time.Second }},
		{"JWT prepare lead under the JWT TTL", func(_ *testEnv, c *Config) { c.JWTPrepareLead = DefaultJWTTTL - time.Second }},
		{"JWT prepare lead over the JWT key TTL", func(_ *testEnv, c *Config) { c.JWTKeyTTL, c.JWTPrepareLead = time.Hour, time.Hour+time.Second }},
		{"root TTL over the maximum", func(_ *testEnv, c *Config) { c.RootTTL = MaxKeyTTL + time.Hour }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t)
			cfg := env.config(nil)
			tt.mod(env, &cfg)
			a, err := New(context.Background(), cfg)
			if err == nil {
				a.Close()
				t.Fatalf("New accepted %+v", cfg)
			}
			t.Logf("New: %v", err)
			if n := len(keyRecords(t, env.store)); n != 0 {
				t.Errorf("a rejected config created %d kinds of keys", n)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name                string
		mod                 func(*Config)
		svidTTL, maxSVIDTTL time.Duration
		interTTL            time.Duration
		td                  string
	}{
		{"zero", nil, DefaultSVIDTTL, DefaultMaxSVIDTTL, DefaultIntermediateTTL, "example.org"},
		{"lower maximum lowers the default TTL", func(c *Config) { c.MaxSVIDTTL = time.Minute }, time.Minute, time.Minute, DefaultIntermediateTTL, "example.org"},
		{"shortest allowed", func(c *Config) {
			c.SVIDTTL, c.MaxSVIDTTL, c.IntermediateTTL = MinSVIDTTL, MinSVIDTTL, 4*MinSVIDTTL
		}, MinSVIDTTL, MinSVIDTTL, 4 * MinSVIDTTL, "example.org"},
		{"raised maximum", func(c *Config) {
			c.TrustDomain = spiffeid.RequireTrustDomainFromString("prod.test")
			c.MaxSVIDTTL = time.Hour
		}, DefaultSVIDTTL, time.Hour, DefaultIntermediateTTL, "prod.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := newTestAuthority(t, tt.mod)
			c := a.cfg
			if c.SVIDTTL != tt.svidTTL || c.MaxSVIDTTL != tt.maxSVIDTTL || c.IntermediateTTL != tt.interTTL || c.TrustDomain.Name() != tt.td {
				t.Errorf("effective config: SVIDTTL %s, MaxSVIDTTL %s, IntermediateTTL %s, trust domain %s; want %s, %s, %s, %s",
					c.SVIDTTL, c.MaxSVIDTTL, c.IntermediateTTL, c.TrustDomain.Name(), tt.svidTTL, tt.maxSVIDTTL, tt.interTTL, tt.td)
			}
			if got := a.Snapshot().signer.cert; got.NotAfter.Sub(got.NotBefore) != tt.interTTL+Backdate {
				t.Errorf("intermediate lives %s, want %s", got.NotAfter.Sub(got.NotBefore), tt.interTTL+Backdate)
			}
		})
	}
}
