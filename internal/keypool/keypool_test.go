package keypool

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitLen waits until p holds n items, or fails the test.
func waitLen[T any](t *testing.T, p *Pool[T], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for p.Len() < n {
		if time.Now().After(deadline) {
			t.Fatalf("pool holds %d items after 10s, want %d", p.Len(), n)
		}
		<-tick.C
	}
}

// TestPool checks the pool's invariants: it fills to its size and no
// further, every key it hands out (from the pool or generated inline, to
// concurrent takers) is distinct and matches its PKCS#8 encoding, and stop
// ends the generator and drops the keys left.
func TestPool(t *testing.T) {
	const size = 4
	var made atomic.Int64
	p := New(size, func() (Key, error) {
		made.Add(1)
		return NewP256()
	})
	if _, err := p.Take(); err != nil || made.Load() != 1 {
		t.Fatalf("Take before Start: %v, %d generated; want one generated inline", err, made.Load())
	}
	stop := p.Start()
	waitLen(t, p, size)
	if n, c := p.Len(), cap(p.items); n != size || c != size {
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
				k, err := p.Take()
				if err != nil {
					t.Error(err)
					return
				}
				parsed, err := x509.ParsePKCS8PrivateKey(k.PKCS8)
				if err != nil {
					t.Error(err)
					return
				}
				if !k.Private.Equal(parsed) {
					t.Error("PKCS#8 encoding is not the key handed out")
				}
				mu.Lock()
				if seen[string(k.PKCS8)] {
					t.Error("a key was handed out twice")
				}
				seen[string(k.PKCS8)] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != takers*each {
		t.Fatalf("%d distinct keys, want %d", len(seen), takers*each)
	}

	waitLen(t, p, size)
	stop()
	if n := p.Len(); n != 0 {
		t.Fatalf("%d keys left in the pool after stop", n)
	}
	before := made.Load()
	stop() // idempotent
	if _, err := p.Take(); err != nil {
		t.Fatalf("Take after stop: %v", err)
	}
	if n, m := p.Len(), made.Load(); n != 0 || m != before+1 {
		t.Fatalf("after stop: pool holds %d, %d generated; want 0, and only the one taken (%d)", n, m-before, 1)
	}
}

// TestPoolGenerationFails checks that a failing generator ends the filling
// and that Take reports its error.
func TestPoolGenerationFails(t *testing.T) {
	errGen := errors.New("no entropy")
	p := New(2, func() (int, error) { return 0, errGen })
	stop := p.Start()
	stop() // returns: the filler ended on the error, or on stop
	if _, err := p.Take(); !errors.Is(err, errGen) {
		t.Fatalf("Take: %v, want %v", err, errGen)
	}
}

// TestPKCS8P256 checks that the PKCS#8 template gives
// x509.MarshalPKCS8PrivateKey's bytes for every key, that the keys parse
// back, and that a key of another curve is encoded by the standard library.
func TestPKCS8P256(t *testing.T) {
	if pkcs8().tmpl == nil {
		t.Fatal("no PKCS#8 template: every key is encoded by x509.MarshalPKCS8PrivateKey")
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
		got, err := MarshalPKCS8(key)
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
	if got, err := MarshalPKCS8(p384); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("P-384 key: %v, %x; want %x", err, got, want)
	}
}
