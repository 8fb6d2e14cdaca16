package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"sync"
	"testing"
	"time"
)

// waitFull waits until p holds n keys, or fails the test.
func waitFull(t *testing.T, p *keyPool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for len(p.keys) < n {
		if time.Now().After(deadline) {
			t.Fatalf("pool holds %d keys after 10s, want %d", len(p.keys), n)
		}
		<-tick.C
	}
}

// TestKeyPool checks the pool's invariants: it fills to its size and no
// further, every key it hands out (from the pool or generated inline, to
// concurrent takers) is distinct and matches its PKCS#8 encoding, and close
// stops the generator and drops the keys left.
func TestKeyPool(t *testing.T) {
	const size = 4
	p := newKeyPool(size)
	waitFull(t, p, size)
	if n, c := len(p.keys), cap(p.keys); n != size || c != size {
		t.Fatalf("pool holds %d of capacity %d, want %d of %d", n, c, size, size)
	}

	// More takers than pooled keys: the rest are generated inline.
	const takers, each = 4, 3 * size
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range takers {
		wg.Go(func() {
			for range each {
				k, err := p.take()
				if err != nil {
					t.Error(err)
					return
				}
				parsed, err := x509.ParsePKCS8PrivateKey(k.der)
				if err != nil {
					t.Error(err)
					return
				}
				if !k.key.Equal(parsed) {
					t.Error("PKCS#8 encoding is not the key handed out")
				}
				mu.Lock()
				if seen[string(k.der)] {
					t.Error("a key was handed out twice")
				}
				seen[string(k.der)] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != takers*each {
		t.Fatalf("%d distinct keys, want %d", len(seen), takers*each)
	}

	waitFull(t, p, size)
	p.close()
	select {
	case <-p.done:
	default:
		t.Fatal("generator still running after close")
	}
	if n := len(p.keys); n != 0 {
		t.Fatalf("%d keys left in the pool after close", n)
	}
	p.close() // idempotent
	if _, err := p.take(); err != nil {
		t.Fatalf("take after close: %v", err)
	}
	if n := len(p.keys); n != 0 {
		t.Fatalf("pool refilled after close: %d keys", n)
	}
}

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
	select {
	case <-a.svidKeys.done:
	default:
		t.Fatal("key pool still running after Close")
	}
}

// TestPKCS8P256 checks that the SVID keys' PKCS#8 template gives
// x509.MarshalPKCS8PrivateKey's bytes for every key, that the keys parse
// back, and that a key of another curve is encoded by the standard library.
func TestPKCS8P256(t *testing.T) {
	if pkcs8().tmpl == nil {
		t.Fatal("no PKCS#8 template: every SVID key is encoded by x509.MarshalPKCS8PrivateKey")
	}
	for i := range 200 {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// A scalar with leading zero bytes keeps its 32 bytes.
			key, err = ecdsa.ParseRawPrivateKey(elliptic.P256(), append(make([]byte, 31), 7))
			if err != nil {
				t.Fatal(err)
			}
		}
		want, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pkcs8().marshal(key)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("key %d: PKCS#8 differs from x509.MarshalPKCS8PrivateKey's:\n got %x\nwant %x", i, got, want)
		}
		back, err := x509.ParsePKCS8PrivateKey(got)
		if err != nil || !key.Equal(back) {
			t.Fatalf("key %d does not parse back: %v", i, err)
		}
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := x509.MarshalPKCS8PrivateKey(p384)
	if got, err := pkcs8().marshal(p384); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("P-384 key: %v, %x; want %x", err, got, want)
	}
}
