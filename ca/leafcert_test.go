package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/badge-dev/badge/storage"
)

// signBothWays signs the template of e with serial, validity and pub twice,
// from the same deterministic randomness: by x509.CreateCertificate and by
// enc. Equal inputs and equal random bytes give equal ECDSA signatures, so
// the two certificates must be equal byte for byte.
func signBothWays(t *testing.T, enc *leafEncoder, e *Entry, s *Snapshot, serial *big.Int, notBefore, notAfter time.Time, pub crypto.PublicKey) (want, got []byte, wantErr, gotErr error) {
	t.Helper()
	tmpl := *e.tmpl
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, notBefore, notAfter
	cryptotest.SetGlobalRandom(t, 7)
	want, wantErr = x509.CreateCertificate(rand.Reader, &tmpl, s.signer.cert, pub, s.signer.signer)
	cryptotest.SetGlobalRandom(t, 7)
	got, gotErr = enc.sign(serial, notBefore, notAfter, pub.(*ecdsa.PublicKey), nil)
	return want, got, wantErr, gotErr
}

// quietAuthority is a test authority whose key pool is stopped, so that
// nothing draws on the process's randomness behind a test's back.
func quietAuthority(tb testing.TB) *Authority {
	a, _ := newTestAuthority(tb, nil)
	a.svidKeys.close()
	return a
}

// mustKey generates a key on curve c.
func mustKey(tb testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// TestLeafEncoderMatchesCreateCertificate checks the encoder's invariant:
// for every entry shape, serial length, validity and subject key type, its
// certificate is byte for byte the one x509.CreateCertificate makes from
// the same inputs and randomness, and verifies against the intermediate.
func TestLeafEncoderMatchesCreateCertificate(t *testing.T) {
	a := quietAuthority(t)
	ctx := context.Background()
	withDNS, err := a.CreateEntry(ctx, EntryRequest{
		SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1000"},
		DNSNames: []string{"api.example.org", "api.internal", "*.api.example.org"},
	})
	if err != nil {
		t.Fatal(err)
	}
	oneDNS, err := a.CreateEntry(ctx, EntryRequest{
		SPIFFEID: "spiffe://example.org/ns/prod/sa/web", Selectors: []string{"unix:uid:1002"},
		DNSNames: []string{"web"},
	})
	if err != nil {
		t.Fatal(err)
	}
	plain := mustCreate(t, a, "spiffe://example.org/plain", "unix:uid:1001")
	s := a.Snapshot()
	server, err := a.ServerEntry([]string{"badge.example.org", "127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	hexSerial := func(h string) *big.Int {
		n, ok := new(big.Int).SetString(h, 16)
		if !ok {
			t.Fatalf("bad serial %q", h)
		}
		return n
	}
	p256, p384, p521 := mustKey(t, elliptic.P256()), mustKey(t, elliptic.P384()), mustKey(t, elliptic.P521())
	for _, tc := range []struct {
		name      string
		e         *Entry
		serial    *big.Int
		notBefore time.Time
		notAfter  time.Time
		key       *ecdsa.PrivateKey
	}{
		{"dns names, default TTL", entryFor(t, s, withDNS.ID), big.NewInt(0x1234567), now.Add(-Backdate), now.Add(DefaultSVIDTTL), p256},
		{"one dns name, one-minute TTL", entryFor(t, s, oneDNS.ID), big.NewInt(0x0102), now.Add(-Backdate), now.Add(time.Minute), p256},
		{"no dns names", entryFor(t, s, plain), big.NewInt(1), now.Add(-Backdate), now.Add(DefaultSVIDTTL), p256},
		{"serial zero", entryFor(t, s, plain), big.NewInt(0), now, now.Add(time.Minute), p256},
		{"serial 0x80: a leading zero byte", entryFor(t, s, plain), big.NewInt(0x80), now, now.Add(time.Minute), p256},
		{"serial 0x7f", entryFor(t, s, plain), big.NewInt(0x7f), now, now.Add(time.Minute), p256},
		{"127-bit serial, as badge draws them", entryFor(t, s, withDNS.ID), hexSerial("7fffffffffffffffffffffffffffffff"), now, now.Add(time.Minute), p256},
		{"128-bit serial with the top bit set", entryFor(t, s, withDNS.ID), hexSerial("80000000000000000000000000000001"), now, now.Add(time.Minute), p256},
		{"20-octet serial", entryFor(t, s, plain), hexSerial("7f" + strings.Repeat("a5", 19)), now, now.Add(time.Minute), p256},
		{"21-octet serial", entryFor(t, s, plain), hexSerial("ff" + strings.Repeat("a5", 19)), now, now.Add(time.Minute), p256},
		{"server entry with IPs", server, big.NewInt(99), now, now.Add(time.Hour), p256},
		{"sub-second times", entryFor(t, s, plain), big.NewInt(5), now.Add(123 * time.Millisecond), now.Add(time.Minute + 999*time.Millisecond), p256},
		{"non-UTC location", entryFor(t, s, plain), big.NewInt(77), now.In(time.FixedZone("X", 5*3600)), now.Add(time.Hour).In(time.FixedZone("Y", -7*3600)), p256},
		{"UTCTime to GeneralizedTime at 2050", entryFor(t, s, plain), big.NewInt(2), time.Date(2049, 12, 31, 23, 0, 0, 0, time.UTC), time.Date(2050, 1, 1, 1, 0, 0, 0, time.UTC), p256},
		{"GeneralizedTime before 1950", entryFor(t, s, plain), big.NewInt(3), time.Date(1949, 12, 31, 23, 0, 0, 0, time.UTC), time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC), p256},
		{"P-384 subject key", entryFor(t, s, withDNS.ID), big.NewInt(4), now, now.Add(time.Minute), p384},
		{"P-521 subject key", entryFor(t, s, plain), big.NewInt(6), now, now.Add(time.Minute), p521},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := newLeafEncoder(tc.e.tmpl, s.signer.cert, s.signer.signer)
			if err != nil {
				t.Fatal(err)
			}
			want, got, wantErr, gotErr := signBothWays(t, enc, tc.e, s, tc.serial, tc.notBefore, tc.notAfter, tc.key.Public())
			if wantErr != nil || gotErr != nil {
				t.Fatalf("x509.CreateCertificate: %v; encoder: %v", wantErr, gotErr)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("certificate differs from x509.CreateCertificate's:\n got %x\nwant %x", got, want)
			}
			leaf, err := x509.ParseCertificate(got)
			if err != nil {
				t.Fatal(err)
			}
			if err := leaf.CheckSignatureFrom(s.signer.cert); err != nil {
				t.Fatalf("signature does not verify against the intermediate: %v", err)
			}
		})
	}
}

// TestLeafEncoderRefuses checks that what x509.CreateCertificate refuses,
// or encodes from the subject key, is not spliced: a negative serial is an
// error, and a CA template or a signer other than an in-process P-256 key
// gets no encoder.
func TestLeafEncoderRefuses(t *testing.T) {
	a := quietAuthority(t)
	id := mustCreate(t, a, "spiffe://example.org/api", "unix:uid:1000")
	s := a.Snapshot()
	e := entryFor(t, s, id)
	enc, err := newLeafEncoder(e.tmpl, s.signer.cert, s.signer.signer)
	if err != nil {
		t.Fatal(err)
	}
	key := mustKey(t, elliptic.P256())
	now := time.Now()
	for _, serial := range []*big.Int{big.NewInt(-1), big.NewInt(-0x80), nil} {
		if _, err := enc.sign(serial, now, now.Add(time.Minute), &key.PublicKey, nil); !errors.Is(err, errLeafSerial) {
			t.Errorf("serial %v: err = %v, want %v", serial, err, errLeafSerial)
		}
	}
	if _, err := enc.sign(big.NewInt(1), now, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), &key.PublicKey, nil); err == nil {
		t.Error("NotAfter in the year 10000 encoded; x509.CreateCertificate refuses it")
	}

	ca := *e.tmpl
	ca.IsCA = true
	p384 := mustKey(t, elliptic.P384())
	for _, tc := range []struct {
		name   string
		tmpl   *x509.Certificate
		signer crypto.Signer
	}{
		{"CA template", &ca, s.signer.signer},
		{"opaque signer", e.tmpl, opaqueSigner{s.signer.signer}},
		{"P-384 signer", e.tmpl, p384},
	} {
		if _, err := newLeafEncoder(tc.tmpl, s.signer.cert, tc.signer); !errors.Is(err, errLeafEncoder) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, errLeafEncoder)
		}
	}
}

// FuzzLeafEncoder drives random entries, serials, validities and subject
// keys through x509.CreateCertificate and the encoder: both refuse, or
// both give the same bytes.
func FuzzLeafEncoder(f *testing.F) {
	a := quietAuthority(f)
	s := a.Snapshot()
	keys := []*ecdsa.PrivateKey{mustKey(f, elliptic.P256()), mustKey(f, elliptic.P384()), mustKey(f, elliptic.P521())}
	now := time.Now().Unix()
	f.Add("api", "api.example.org,api.internal", []byte{0x12, 0x34}, false, now, int64(300_000), uint8(0))
	f.Add("plain", "", []byte{0x80}, false, now, int64(60_000), uint8(0))
	f.Add("x/y/z", "web", []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false, now, int64(1), uint8(1))
	f.Add("neg", "", []byte{0x01}, true, now, int64(1000), uint8(2))
	f.Add("zero", "a,b,c", []byte{}, false, int64(2524607000), int64(3_600_000), uint8(0))     // across 2050
	f.Add("old", "", []byte{0xff, 0xff}, false, int64(-631152100), int64(3_600_000), uint8(0)) // across 1950
	f.Add("far", "", []byte{0x01}, false, int64(253402300700), int64(3_600_000), uint8(0))     // across the year 9999
	f.Add("bad dns", "caf\u00e9.example", []byte{0x01}, false, now, int64(1000), uint8(0))     // not IA5
	f.Fuzz(func(t *testing.T, path, dns string, serialBytes []byte, negative bool, notBeforeUnix, ttlMillis int64, keyType uint8) {
		rec := storage.Entry{ID: "fuzz", SPIFFEID: "spiffe://example.org/" + path, Selectors: []string{"unix:uid:1"}}
		if dns != "" {
			rec.DNSNames = strings.Split(dns, ",")
		}
		e, err := prepareEntry(s.TrustDomain(), rec)
		if err != nil {
			return // not an entry badge would hold
		}
		serial := new(big.Int).SetBytes(serialBytes)
		if negative {
			serial.Neg(serial)
		}
		notBefore := time.Unix(notBeforeUnix, 0)
		notAfter := notBefore.Add(time.Duration(ttlMillis) * time.Millisecond)
		key := keys[int(keyType)%len(keys)]
		enc, encErr := newLeafEncoder(e.tmpl, s.signer.cert, s.signer.signer)
		if encErr != nil {
			tmpl := *e.tmpl
			tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(1), s.signer.cert.NotBefore, s.signer.cert.NotAfter
			if _, err := x509.CreateCertificate(rand.Reader, &tmpl, s.signer.cert, key.Public(), s.signer.signer); err == nil {
				t.Fatalf("no encoder (%v) for a template x509.CreateCertificate signs", encErr)
			}
			return
		}
		want, got, wantErr, gotErr := signBothWays(t, enc, e, s, serial, notBefore, notAfter, key.Public())
		switch {
		case (wantErr == nil) != (gotErr == nil):
			t.Fatalf("x509.CreateCertificate: %v; encoder: %v", wantErr, gotErr)
		case wantErr == nil && !bytes.Equal(got, want):
			t.Fatalf("certificate differs from x509.CreateCertificate's:\n got %x\nwant %x", got, want)
		}
	})
}

// opaqueSigner hides the key type of a signer, as a hardware or KMS signer
// would.
type opaqueSigner struct{ s crypto.Signer }

func (o opaqueSigner) Public() crypto.PublicKey { return o.s.Public() }
func (o opaqueSigner) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.s.Sign(r, d, opts)
}

// TestLeafEncoderCache checks that an entry keeps one encoder per signing
// key, replaces it on rotation, and that a signer the encoder cannot use
// falls back to x509.CreateCertificate, remembered rather than retried.
func TestLeafEncoderCache(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	id := mustCreate(t, a, "spiffe://example.org/api", "unix:uid:1000")
	s := a.Snapshot()
	e := entryFor(t, s, id)
	ctx := context.Background()

	sv, err := a.SignX509SVID(ctx, s, e)
	if err != nil {
		t.Fatal(err)
	}
	first := e.leaf.p.Load()
	if first == nil || first.err != nil {
		t.Fatalf("no usable encoder after issuance: %+v", first)
	}
	certs, err := x509.ParseCertificates(sv.CertChainDER)
	if err != nil || len(certs) != 2 {
		t.Fatalf("chain: %d certificates, %v", len(certs), err)
	}
	if err := certs[0].CheckSignatureFrom(s.signer.cert); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	if _, err := a.SignX509SVID(ctx, s, e); err != nil {
		t.Fatal(err)
	}
	if e.leaf.p.Load() != first {
		t.Fatal("encoder rebuilt for the same signing key")
	}

	// Another signer for the same certificate (as after a reload) gets
	// its own encoder.
	other := &caKey{cert: s.signer.cert, signer: opaqueSigner{s.signer.signer}}
	if enc := e.leaf.get(e.tmpl, other.cert, other.signer); enc != nil {
		t.Fatal("encoder used for a signer whose key type is hidden")
	}
	failed := e.leaf.p.Load()
	if failed == first || failed.err == nil {
		t.Fatalf("unusable signer not remembered: %+v", failed)
	}
	if e.leaf.get(e.tmpl, other.cert, other.signer) != nil || e.leaf.p.Load() != failed {
		t.Fatal("unusable signer tried again")
	}
	s2 := *s
	s2.signer = other
	sv2, err := a.SignX509SVID(ctx, &s2, e)
	if err != nil {
		t.Fatalf("fallback to x509.CreateCertificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(sv2.CertChainDER[:len(sv2.CertChainDER)-len(s.chainDER)])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(s.signer.cert); err != nil {
		t.Fatalf("fallback leaf does not verify: %v", err)
	}
	if enc := e.leaf.get(e.tmpl, s.signer.cert, s.signer.signer); enc == nil || enc == first {
		t.Fatalf("back on the first key: encoder %p, want a fresh one", enc)
	}
}
