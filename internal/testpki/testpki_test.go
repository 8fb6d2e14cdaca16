package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestChain: a root, an intermediate and a client certificate verify as
// a chain for client authentication; a CA with path length 0 signs
// certificates that verify, but none through a CA below it; the options
// set the validity.
func TestChain(t *testing.T) {
	root := NewCA(t, "root", nil, Options{})
	inter := NewCA(t, "intermediate", root, Options{})
	leaf := NewClient(t, "client", inter, Options{})
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	inters.AddCert(inter.Cert)
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := leaf.Cert.Verify(opts); err != nil {
		t.Errorf("client certificate does not verify: %v", err)
	}
	if leaf.Cert.IsCA || !inter.Cert.IsCA || inter.Cert.Subject.CommonName != "intermediate" {
		t.Errorf("IsCA: leaf %v, intermediate %v (%q)", leaf.Cert.IsCA, inter.Cert.IsCA, inter.Cert.Subject.CommonName)
	}
	if err := root.Cert.CheckSignatureFrom(root.Cert); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}

	capped := NewCA(t, "path length 0", root, Options{MaxPathLenZero: true})
	below := NewCA(t, "below", capped, Options{})
	inters.AddCert(capped.Cert)
	inters.AddCert(below.Cert)
	if _, err := NewClient(t, "client", below, Options{}).Cert.Verify(opts); err == nil {
		t.Error("a certificate of a CA below a path-length-0 CA verifies")
	}
	if _, err := NewClient(t, "client", capped, Options{}).Cert.Verify(opts); err != nil {
		t.Errorf("a certificate of a path-length-0 CA does not verify: %v", err)
	}

	from, to := time.Date(2041, 3, 4, 5, 6, 7, 0, time.UTC), time.Date(2051, 3, 4, 5, 6, 7, 0, time.UTC)
	if c := NewCA(t, "dated", nil, Options{NotBefore: from, NotAfter: to}).Cert; !c.NotBefore.Equal(from) || !c.NotAfter.Equal(to) {
		t.Errorf("validity %s to %s, want %s to %s", c.NotBefore, c.NotAfter, from, to)
	}
	if c := root.Cert; time.Until(c.NotBefore) > 0 || time.Until(c.NotAfter) < 23*time.Hour {
		t.Errorf("default validity %s to %s does not hold now and the next day", c.NotBefore, c.NotAfter)
	}
}

// TestFiles: the files written load as a TLS key pair, the key file with
// mode 0600 and the certificate file with 0644.
func TestFiles(t *testing.T) {
	dir := t.TempDir()
	root := NewCA(t, "root", nil, Options{})
	inter := NewCA(t, "intermediate", root, Options{})
	certFile := WriteCerts(t, filepath.Join(dir, "ca.crt"), inter.Cert, root.Cert)
	keyFile := WriteKey(t, filepath.Join(dir, "ca.key"), inter.Key)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadX509KeyPair: %v", err)
	}
	if len(pair.Certificate) != 2 || !pair.Leaf.Equal(inter.Cert) {
		t.Errorf("loaded %d certificates, leaf %q; want the intermediate and the root", len(pair.Certificate), pair.Leaf.Subject.CommonName)
	}
	for path, want := range map[string]os.FileMode{certFile: 0o644, keyFile: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s has mode %o, want at most %o", filepath.Base(path), got, want)
		}
	}
}
