package upstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/internal/testpki"
)

// write writes data to path with exactly mode, past the umask (the
// tests give files modes LoadDisk must refuse), and returns path.
func write(t *testing.T, path string, data []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadDisk: the files of a disk upstream are refused, with a message
// naming what is wrong, unless they are a CA that may sign an
// intermediate, its chain to a root, and its key, in files only the
// server's uid (or root) controls.
func TestLoadDisk(t *testing.T) {
	year := time.Now().Add(365 * 24 * time.Hour)
	root := testpki.NewCA(t, "root", nil, testpki.Options{NotAfter: year})
	inter := testpki.NewCA(t, "intermediate", root, testpki.Options{NotAfter: year})
	leafCA := testpki.NewCA(t, "path length 0", root, testpki.Options{NotAfter: year, MaxPathLenZero: true})
	expired := testpki.NewCA(t, "expired", root, testpki.Options{NotAfter: time.Now().Add(-time.Minute)})
	other := testpki.NewCA(t, "other root", nil, testpki.Options{NotAfter: year})
	for _, tc := range []struct {
		name     string
		certs    []byte
		key      []byte
		keyMode  os.FileMode
		certMode os.FileMode
		symlink  bool
		want     string // "" for success
	}{
		{name: "root", certs: testpki.PEMCerts(root.Cert), key: testpki.PEMKey(t, root.Key)},
		{name: "intermediate and root", certs: testpki.PEMCerts(inter.Cert, root.Cert), key: testpki.PEMKey(t, inter.Key)},
		{name: "no root", certs: testpki.PEMCerts(inter.Cert), key: testpki.PEMKey(t, inter.Key), want: "no self-signed root"},
		{name: "wrong root", certs: testpki.PEMCerts(inter.Cert, other.Cert), key: testpki.PEMKey(t, inter.Key), want: "does not chain"},
		{name: "path length 0", certs: testpki.PEMCerts(leafCA.Cert, root.Cert), key: testpki.PEMKey(t, leafCA.Key), want: "path length 0"},
		{name: "expired", certs: testpki.PEMCerts(expired.Cert, root.Cert), key: testpki.PEMKey(t, expired.Key), want: "expired"},
		{name: "key of another", certs: testpki.PEMCerts(root.Cert), key: testpki.PEMKey(t, other.Key), want: "does not match"},
		{name: "not PEM", certs: []byte("hello"), key: testpki.PEMKey(t, root.Key), want: "no PEM CERTIFICATE"},
		{name: "key in cert file", certs: testpki.PEMKey(t, root.Key), key: testpki.PEMKey(t, root.Key), want: "unexpected PEM block"},
		{name: "key readable by group", certs: testpki.PEMCerts(root.Cert), key: testpki.PEMKey(t, root.Key), keyMode: 0o640, want: "chmod 600"},
		{name: "cert writable by others", certs: testpki.PEMCerts(root.Cert), key: testpki.PEMKey(t, root.Key), certMode: 0o666, want: "no one but its owner may write"},
		{name: "key a symbolic link", certs: testpki.PEMCerts(root.Cert), key: testpki.PEMKey(t, root.Key), symlink: true, want: "symbolic link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.keyMode == 0 {
				tc.keyMode = 0o600
			}
			if tc.certMode == 0 {
				tc.certMode = 0o644
			}
			certFile := write(t, filepath.Join(dir, "ca.crt"), tc.certs, tc.certMode)
			keyFile := write(t, filepath.Join(dir, "ca.key"), tc.key, tc.keyMode)
			if tc.symlink {
				link := filepath.Join(dir, "link.key")
				if err := os.Symlink(keyFile, link); err != nil {
					t.Fatal(err)
				}
				keyFile = link
			}
			d, err := LoadDisk(certFile, keyFile)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("LoadDisk: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrFile) {
				t.Fatalf("LoadDisk = %v, %v; want an error wrapping ErrFile", d, err)
			}
			if tc.symlink {
				return // O_NOFOLLOW: "too many levels of symbolic links"
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadDisk error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestDiskSignIntermediate: Disk signs an intermediate CA for exactly the
// request's key, subject and URI SAN, no longer than asked nor than its
// own certificate, and returns the chain without the root, and the root.
func TestDiskSignIntermediate(t *testing.T) {
	soon := time.Now().Add(3 * time.Hour)
	root := testpki.NewCA(t, "root", nil, testpki.Options{NotAfter: time.Now().Add(365 * 24 * time.Hour)})
	inter := testpki.NewCA(t, "intermediate", root, testpki.Options{NotAfter: soon})
	dir := t.TempDir()
	d, err := LoadDisk(write(t, filepath.Join(dir, "c"), testpki.PEMCerts(inter.Cert, root.Cert), 0o644), write(t, filepath.Join(dir, "k"), testpki.PEMKey(t, inter.Key), 0o600))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := url.Parse("spiffe://example.org")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "badge", Organization: []string{"badge"}}, URIs: []*url.URL{id}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	for _, tc := range []struct {
		life time.Duration
		want time.Time
	}{{time.Hour, time.Now().Add(time.Hour)}, {24 * time.Hour, inter.Cert.NotAfter}} {
		chain, roots, err := d.SignIntermediate(context.Background(), csr, tc.life)
		if err != nil {
			t.Fatal(err)
		}
		c := chain[0]
		if len(chain) != 2 || !chain[1].Equal(inter.Cert) || len(roots) != 1 || !roots[0].Equal(root.Cert) {
			t.Fatalf("chain of %d, roots of %d: want [new, operator intermediate] and [root]", len(chain), len(roots))
		}
		if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 || !c.MaxPathLenZero || c.Subject.CommonName != "badge" ||
			len(c.URIs) != 1 || c.URIs[0].String() != id.String() || !key.PublicKey.Equal(c.PublicKey) {
			t.Fatalf("signed certificate %+v is not a path-length-0 CA for the request", c.Subject)
		}
		if d := c.NotAfter.Sub(tc.want); d < -time.Minute || d > time.Minute {
			t.Errorf("lifetime %s: NotAfter %s, want about %s", tc.life, c.NotAfter, tc.want)
		}
	}
	csr.Signature[len(csr.Signature)-1] ^= 1
	if _, _, err := d.SignIntermediate(context.Background(), csr, time.Hour); err == nil {
		t.Fatal("a request with a broken signature was signed")
	}
}

// FuzzParseCerts: the certificate file parser never panics, and what it
// returns parsed.
func FuzzParseCerts(f *testing.F) {
	root := testpki.NewCA(f, "root", nil, testpki.Options{NotAfter: time.Now().Add(time.Hour)})
	f.Add(testpki.PEMCerts(root.Cert))
	f.Add(testpki.PEMCerts(root.Cert, root.Cert))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := parseCerts(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificate")
		}
	})
}
