// Package testpki mints, in process, the operator PKI that tests of
// upstream authorities and host attestation need: CA and client
// certificates with their P-256 keys, and the PEM files a server loads
// them from. It is for tests only: its functions end the test with
// tb.Fatal on any failure, and its keys come from crypto/rand with no
// care for their lifetime.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"testing"
	"time"
)

// Cert is a certificate and its private key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Options shapes a certificate. The zero value is a certificate valid
// from an hour before now to a day after now, by the real clock.
type Options struct {
	// NotBefore and NotAfter bound the validity; zero means an hour ago
	// and a day from now.
	NotBefore, NotAfter time.Time
	// MaxPathLenZero makes a CA that may sign no CA below it.
	MaxPathLenZero bool
}

// NewCA makes a CA certificate named cn (certificate and CRL signing),
// signed by parent, or self-signed when parent is nil.
func NewCA(tb testing.TB, cn string, parent *Cert, opts Options) *Cert {
	tb.Helper()
	return issue(tb, parent, opts, &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, MaxPathLenZero: opts.MaxPathLenZero,
	})
}

// NewClient makes a client certificate named cn (digital signature,
// client authentication) issued by parent.
func NewClient(tb testing.TB, cn string, parent *Cert, opts Options) *Cert {
	tb.Helper()
	return issue(tb, parent, opts, &x509.Certificate{
		Subject:  pkix.Name{CommonName: cn},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// issue fills in tmpl's serial and validity, signs it for a new key with
// parent (tmpl itself when nil) and parses the result.
func issue(tb testing.TB, parent *Cert, opts Options, tmpl *x509.Certificate) *Cert {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, big.NewInt(1<<62)); err != nil {
		tb.Fatal(err)
	}
	tmpl.NotBefore, tmpl.NotAfter = opts.NotBefore, opts.NotAfter
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	signerCert, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signer)
	if err != nil {
		tb.Fatalf("testpki: signing %q: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &Cert{Cert: cert, Key: key}
}

// PEMCerts encodes certs, in order, as PEM CERTIFICATE blocks.
func PEMCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// PEMKey encodes key as a PKCS #8 PEM PRIVATE KEY block.
func PEMKey(tb testing.TB, key crypto.Signer) []byte {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteCerts writes certs, in order, as PEM to path with mode 0644, and
// returns path.
func WriteCerts(tb testing.TB, path string, certs ...*x509.Certificate) string {
	tb.Helper()
	if err := os.WriteFile(path, PEMCerts(certs...), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// WriteKey writes key as PKCS #8 PEM to path with mode 0600, and returns
// path.
func WriteKey(tb testing.TB, path string, key crypto.Signer) string {
	tb.Helper()
	if err := os.WriteFile(path, PEMKey(tb, key), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
