package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"testing"
)

// TestSVIDKeysDistinct checks that SVIDs signed in a row, drawing on the
// authority's pool, carry distinct keys matching their certificates, and
// that Close stops the pool.
func TestSVIDKeysDistinct(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	id := mustCreate(t, a, "spiffe://example.org/api", "unix:uid:1000")
	s := a.Snapshot()
	e := entryFor(t, s, id)
	seen := map[string]bool{}
	for range 2*svidKeyPoolSize + 3 {
		sv, err := a.SignX509SVID(context.Background(), s, e)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(sv.KeyDER)] {
			t.Fatal("two SVIDs carry the same key")
		}
		seen[string(sv.KeyDER)] = true
		key, err := x509.ParsePKCS8PrivateKey(sv.KeyDER)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(sv.CertChainDER[:len(sv.CertChainDER)-len(s.chainDER)])
		if err != nil {
			t.Fatal(err)
		}
		priv, ok := key.(*ecdsa.PrivateKey)
		if !ok || !priv.PublicKey.Equal(leaf.PublicKey) {
			t.Fatal("certificate is not for the key handed out with it")
		}
	}
	a.Close()
	// Close waits for the generator and drops the keys left: none is
	// made afterwards.
	if n := a.svidKeys.keys.Len(); n != 0 {
		t.Fatalf("%d keys left in the pool after Close", n)
	}
}
