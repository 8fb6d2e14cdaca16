// Package upstream holds the upstream authorities badge's intermediates
// can be signed by in place of a root of its own (ca.Config.Upstream):
// Disk, an operator's CA certificate and key in files. The step-ca one is
// in the subpackage stepca, which links smallstep/certificates.
//
// Invariants: a file an upstream reads is refused unless it and every
// directory above it are owned by root or the server's uid and writable by
// no one else (the key file: owned by the server's uid, readable by it
// alone, not a symbolic link); its key must match its certificate, which
// must be a CA allowed to sign certificates; what it signs is an
// intermediate CA for exactly the subject and URI SAN of the request,
// never longer-lived than the signing certificate.
package upstream

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"

	"github.com/badge-dev/badge/internal/localtrust"
)

// ErrFile is wrapped by every refusal of a certificate or key file.
var ErrFile = errors.New("upstream: unusable file")

// Backdate is how far before the request a signed certificate's NotBefore
// is set, for clock skew (as ca.Backdate).
const Backdate = 30 * time.Second

// maxFile bounds the size of a certificate or key file.
const maxFile = 1 << 20

// intermediateTemplate is the x509util template of the intermediates Disk
// signs: the request's subject and SANs (the trust domain's SPIFFE ID),
// a CA that signs certificates and CRLs, and nothing below it but leaves.
const intermediateTemplate = `{
	"subject": {{ toJson .Subject }},
	"sans": {{ toJson .SANs }},
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": 0}
}`

// Disk is an upstream authority whose CA certificate and private key are
// files: an operator's root, or an intermediate of the operator's PKI
// with its chain up to the root. It is safe for concurrent use.
type Disk struct {
	cert   *x509.Certificate   // signs
	chain  []*x509.Certificate // the certificates between cert and a root
	roots  []*x509.Certificate // what verifiers trust
	signer crypto.Signer
	// Now returns the current time. LoadDisk sets time.Now.
	Now func() time.Time
}

// LoadDisk reads the CA certificate file (PEM: the signing certificate
// first, then the certificates of its chain, which must end with the
// self-signed root unless the signing certificate is the root) and the
// private key file (PEM, unencrypted) of the signing certificate.
func LoadDisk(certFile, keyFile string) (*Disk, error) {
	data, err := ReadTrusted(certFile, false)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrFile, certFile, err)
	}
	d := &Disk{cert: certs[0], Now: time.Now}
	for _, c := range certs {
		if selfSigned(c) {
			d.roots = append(d.roots, c)
		} else if c != certs[0] {
			d.chain = append(d.chain, c)
		}
	}
	if len(d.roots) == 0 {
		return nil, fmt.Errorf("%w: %s holds no self-signed root certificate: put the signing certificate first, then its chain up to and including the root", ErrFile, certFile)
	}
	if !d.cert.IsCA || !d.cert.BasicConstraintsValid || d.cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: %s: the first certificate (%s) is not a CA allowed to sign certificates", ErrFile, certFile, d.cert.Subject)
	}
	if d.cert.MaxPathLenZero && !selfSigned(d.cert) {
		return nil, fmt.Errorf("%w: %s: the first certificate (%s) has path length 0: it cannot sign an intermediate", ErrFile, certFile, d.cert.Subject)
	}
	if now := time.Now(); !now.Before(d.cert.NotAfter) {
		return nil, fmt.Errorf("%w: %s: the first certificate (%s) expired at %s", ErrFile, certFile, d.cert.Subject, d.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	// The chain of signatures, at a time every certificate of the file is
	// valid (when each is valid is judged when it signs).
	at := d.cert.NotBefore
	for _, c := range certs {
		if c.NotBefore.After(at) {
			at = c.NotBefore
		}
	}
	if _, err := d.verify(d.cert, at.Add(time.Second)); err != nil {
		return nil, fmt.Errorf("%w: %s: the first certificate does not chain to a root in the file: %w", ErrFile, certFile, err)
	}
	data, err = ReadTrusted(keyFile, true)
	if err != nil {
		return nil, err
	}
	v, err := pemutil.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrFile, keyFile, err)
	}
	signer, ok := v.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %s does not hold a private key", ErrFile, keyFile)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if p, ok := signer.Public().(equaler); !ok || !p.Equal(d.cert.PublicKey) {
		return nil, fmt.Errorf("%w: the key in %s does not match the certificate in %s", ErrFile, keyFile, certFile)
	}
	d.signer = signer
	return d, nil
}

// Roots returns the root certificates of the file.
func (d *Disk) Roots() []*x509.Certificate { return slices.Clone(d.roots) }

// SignIntermediate signs csr as an intermediate CA valid from Backdate
// ago for lifetime, at most until the signing certificate expires. It
// implements ca.Upstream.
func (d *Disk) SignIntermediate(ctx context.Context, csr *x509.CertificateRequest, lifetime time.Duration) (chain, roots []*x509.Certificate, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("upstream: certificate request: %w", err)
	}
	if lifetime <= 0 {
		return nil, nil, fmt.Errorf("upstream: lifetime %s is not positive", lifetime)
	}
	now := d.Now()
	if !now.Before(d.cert.NotAfter) {
		return nil, nil, fmt.Errorf("upstream: the CA certificate %s expired at %s", d.cert.Subject, d.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	data := x509util.CreateTemplateData(csr.Subject.CommonName, nil)
	data.SetSubject(x509util.Subject{CommonName: csr.Subject.CommonName, Organization: csr.Subject.Organization})
	data.SetSANs(sanStrings(csr))
	c, err := x509util.NewCertificate(csr, x509util.WithTemplate(intermediateTemplate, data))
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: intermediate template: %w", err)
	}
	tmpl := c.GetCertificate()
	tmpl.NotBefore = now.Add(-Backdate)
	tmpl.NotAfter = now.Add(lifetime)
	if tmpl.NotAfter.After(d.cert.NotAfter) {
		tmpl.NotAfter = d.cert.NotAfter
	}
	cert, err := x509util.CreateCertificate(tmpl, d.cert, csr.PublicKey, d.signer)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: signing the intermediate: %w", err)
	}
	chain = []*x509.Certificate{cert}
	if !selfSigned(d.cert) {
		chain = append(chain, d.cert)
	}
	return append(chain, d.chain...), d.Roots(), nil
}

func (d *Disk) verify(c *x509.Certificate, now time.Time) ([][]*x509.Certificate, error) {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range d.roots {
		roots.AddCert(r)
	}
	for _, i := range d.chain {
		inter.AddCert(i)
	}
	return c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
}

func sanStrings(csr *x509.CertificateRequest) []string {
	var out []string
	for _, u := range csr.URIs {
		out = append(out, u.String())
	}
	out = append(out, csr.DNSNames...)
	return out
}

func selfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil && string(c.RawIssuer) == string(c.RawSubject)
}

// parseCerts parses every CERTIFICATE block of PEM data, in order.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for len(data) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q (want CERTIFICATE)", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}

// ReadTrusted reads path, refusing a file (or a directory above it) that
// another user than root or this process's uid owns or may write; a
// private file must moreover be owned by this process's uid, readable by
// it alone, and not a symbolic link. The checks apply to the open file.
func ReadTrusted(path string, private bool) ([]byte, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrFile, path, err)
	}
	if err := localtrust.CheckPath(filepath.Dir(abs), uint32(os.Geteuid()), localtrust.RootOrUID); err != nil {
		return nil, fmt.Errorf("%w: the directory of %s: %w", ErrFile, path, err)
	}
	f, err := os.OpenFile(abs, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFile, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFile, err)
	}
	owner, uid := localtrust.OwnerOf(fi), uint32(os.Geteuid())
	switch {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrFile, path)
	case private && owner != uid:
		return nil, fmt.Errorf("%w: %w: key file %s is owned by uid %d with mode %#o; it must be owned by uid %d, this server's",
			ErrFile, localtrust.ErrUntrustedPath, path, owner, fi.Mode().Perm(), uid)
	case private && fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("%w: key file %s has mode %#o; it must be readable by its owner only (chmod 600)", ErrFile, path, fi.Mode().Perm())
	case owner != uid && owner != 0:
		return nil, fmt.Errorf("%w: %w: %s is owned by uid %d; it must be owned by root or uid %d, this server's", ErrFile, localtrust.ErrUntrustedPath, path, owner, uid)
	case fi.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("%w: %w: %s has mode %#o; no one but its owner may write it", ErrFile, localtrust.ErrUntrustedPath, path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrFile, path, err)
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrFile, path, maxFile)
	}
	return data, nil
}
