package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/badge-dev/badge/storage"
)

func TestReadRootKEK(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, n), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		path string
		ok   bool
	}{
		{"32 bytes 0600", write("good", 32, 0o600), true},
		{"short", write("short", 31, 0o600), false},
		{"long", write("long", 33, 0o600), false},
		{"group readable", write("group", 32, 0o640), false},
		{"missing", filepath.Join(dir, "missing"), false},
		{"directory", dir, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kek, err := ReadRootKEK(tc.path)
			if tc.ok != (err == nil) || tc.ok && len(kek) != RootKEKSize {
				t.Fatalf("ReadRootKEK: %d bytes, %v; want ok=%v", len(kek), err, tc.ok)
			}
		})
	}
}

// TestSealedKeyBoundToRecord: a sealed root opens only under its KEK, in
// its own record, and never for another public key.
func TestSealedKeyBoundToRecord(t *testing.T) {
	kek := make([]byte, RootKEKSize)
	rand.Read(kek)
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sealed, err := sealKey(kek, "x509-root-1", priv)
	if err != nil {
		t.Fatal(err)
	}
	rec := storage.Key{ID: "x509-root-1", PrivateRef: storage.SealedRef, Sealed: sealed}
	if s, err := unsealKey(kek, rec, priv.Public()); err != nil || !s.Public().(*ecdsa.PublicKey).Equal(priv.Public()) {
		t.Fatalf("unseal: %v", err)
	}
	wrong := make([]byte, RootKEKSize)
	moved := rec
	moved.ID = "x509-root-2"
	flipped := rec
	flipped.Sealed = append([]byte(nil), sealed...)
	flipped.Sealed[len(sealed)-1] ^= 1
	for _, tc := range []struct {
		name string
		kek  []byte
		rec  storage.Key
		pub  any
	}{
		{"another KEK", wrong, rec, priv.Public()},
		{"no KEK", nil, rec, priv.Public()},
		{"another record", kek, moved, priv.Public()},
		{"altered", kek, flipped, priv.Public()},
		{"another public key", kek, rec, other.Public()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := unsealKey(tc.kek, tc.rec, tc.pub); !errors.Is(err, ErrSealed) {
				t.Fatalf("unseal: %v, want ErrSealed", err)
			}
		})
	}
}

// FuzzUnsealKey: a sealed key read from the shared store never panics
// the server, whatever its bytes.
func FuzzUnsealKey(f *testing.F) {
	kek := make([]byte, RootKEKSize)
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sealed, _ := sealKey(kek, "x509-root-1", priv)
	f.Add(sealed, "x509-root-1")
	f.Add([]byte{}, "")
	f.Add(make([]byte, 12), "x")
	f.Fuzz(func(t *testing.T, b []byte, id string) {
		_, err := unsealKey(kek, storage.Key{ID: id, Sealed: b}, priv.Public())
		if err != nil && !errors.Is(err, ErrSealed) {
			t.Fatalf("unseal: %v does not wrap ErrSealed", err)
		}
	})
}
