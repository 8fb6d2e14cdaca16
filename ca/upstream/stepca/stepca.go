// Package stepca is the upstream authority of badge that is an existing
// step-ca: each intermediate is signed through smallstep/certificates'
// cas/stepcas client, authorised by a JWK provisioner (its password in a
// file) or an X5C provisioner (a certificate and key in files). The
// provisioner's template must allow a CA certificate, for example:
//
//	{"subject": {{ toJson .Subject }}, "sans": {{ toJson .SANs }},
//	 "keyUsage": ["certSign", "crlSign"],
//	 "basicConstraints": {"isCA": true, "maxPathLen": 0}}
//
// Invariants: the step-ca's TLS certificate and the chain it returns are
// trusted only through the root certificate file the operator gave
// (pinned by its SHA-256 fingerprint); every file is checked as
// upstream.ReadTrusted checks (the password and key files are private);
// an unreachable step-ca fails one SignIntermediate, within its context,
// and nothing else: the client is made again on the next call.
package stepca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/smallstep/certificates/cas/apiv1"
	"github.com/smallstep/certificates/cas/stepcas"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"

	"github.com/badge-dev/badge/ca/upstream"
)

// Config configures a step-ca upstream. URL, RootFile and Provisioner are
// required, and either PasswordFile (a JWK provisioner) or X5CCertFile
// and X5CKeyFile (an X5C provisioner).
type Config struct {
	// URL is the step-ca's https URL, such as https://ca.example.org:9000.
	URL string
	// RootFile is the step-ca's root certificate (PEM): it authenticates
	// the step-ca and is the trust bundle of badge's SVIDs.
	RootFile string
	// Provisioner is the name of the JWK or X5C provisioner.
	Provisioner string
	// PasswordFile holds the password of the JWK provisioner's encrypted
	// key, which is fetched from the step-ca (one line; a final newline
	// is dropped). With an X5C provisioner: the password of X5CKeyFile, if
	// it is encrypted.
	PasswordFile string
	// X5CCertFile and X5CKeyFile are the certificate (chain) and key of an
	// X5C provisioner.
	X5CCertFile, X5CKeyFile string
}

// StepCA signs badge's intermediates by an existing step-ca. It is safe
// for concurrent use.
type StepCA struct {
	opts apiv1.Options
	root *x509.Certificate

	mu  sync.Mutex       // held while a request is in flight
	cas *stepcas.StepCAS // made on first use, and again after a failure
}

// New checks cfg and reads its files. It does not reach the step-ca: the
// first SignIntermediate does.
func New(cfg Config) (*StepCA, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		return nil, errors.New("stepca: the step-ca URL is required")
	case err != nil || u.Scheme != "https" || u.Host == "":
		return nil, fmt.Errorf("stepca: the step-ca URL %q is not an https URL", cfg.URL)
	case cfg.RootFile == "":
		return nil, errors.New("stepca: the step-ca root certificate file is required")
	case cfg.Provisioner == "":
		return nil, errors.New("stepca: the provisioner name is required")
	case (cfg.X5CCertFile == "") != (cfg.X5CKeyFile == ""):
		return nil, errors.New("stepca: an X5C provisioner needs both its certificate file and its key file")
	case cfg.X5CCertFile == "" && cfg.PasswordFile == "":
		return nil, errors.New("stepca: a JWK provisioner needs its password file (or give an X5C certificate and key)")
	}
	data, err := upstream.ReadTrusted(cfg.RootFile, false)
	if err != nil {
		return nil, err
	}
	root, err := pemutil.ParseCertificate(data)
	if err != nil {
		return nil, fmt.Errorf("stepca: %s: %w", cfg.RootFile, err)
	}
	iss := &apiv1.CertificateIssuer{Type: "jwk", Provisioner: cfg.Provisioner}
	if cfg.PasswordFile != "" {
		pw, err := upstream.ReadTrusted(cfg.PasswordFile, true)
		if err != nil {
			return nil, err
		}
		pw = bytes.TrimSuffix(bytes.TrimSuffix(pw, []byte("\n")), []byte("\r"))
		if len(pw) == 0 {
			return nil, fmt.Errorf("stepca: the password file %s is empty", cfg.PasswordFile)
		}
		iss.Password = string(pw)
	}
	if cfg.X5CCertFile != "" {
		// stepcas reads them itself, on every request: checked here once.
		if _, err := upstream.ReadTrusted(cfg.X5CCertFile, false); err != nil {
			return nil, err
		}
		if _, err := upstream.ReadTrusted(cfg.X5CKeyFile, true); err != nil {
			return nil, err
		}
		iss.Type, iss.Certificate, iss.Key = "x5c", cfg.X5CCertFile, cfg.X5CKeyFile
	}
	return &StepCA{root: root, opts: apiv1.Options{
		Type:                            apiv1.StepCAS,
		CertificateAuthority:            cfg.URL,
		CertificateAuthorityFingerprint: x509util.Fingerprint(root),
		CertificateIssuer:               iss,
	}}, nil
}

// SignIntermediate has the step-ca sign csr for lifetime (the
// provisioner may cap it). It implements ca.Upstream.
func (s *StepCA) SignIntermediate(ctx context.Context, csr *x509.CertificateRequest, lifetime time.Duration) (chain, roots []*x509.Certificate, err error) {
	type result struct {
		chain []*x509.Certificate
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c, err := s.sign(ctx, csr, lifetime)
		done <- result{c, err}
	}()
	select {
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("stepca: %s: %w", s.opts.CertificateAuthority, ctx.Err())
	case r := <-done:
		if r.err != nil {
			return nil, nil, fmt.Errorf("stepca: %s: %w", s.opts.CertificateAuthority, r.err)
		}
		return r.chain, []*x509.Certificate{s.root}, nil
	}
}

func (s *StepCA) sign(ctx context.Context, csr *x509.CertificateRequest, lifetime time.Duration) ([]*x509.Certificate, error) {
	// One request at a time: a request the step-ca never answers (the
	// client has no deadline of its own) holds the lock, and later calls
	// fail at once rather than pile up behind it.
	if !s.mu.TryLock() {
		return nil, errors.New("the previous request has not been answered yet")
	}
	defer s.mu.Unlock()
	if s.cas == nil {
		c, err := stepcas.New(ctx, s.opts)
		if err != nil {
			return nil, err
		}
		s.cas = c
	}
	tmpl := &x509.Certificate{Subject: csr.Subject, URIs: csr.URIs, DNSNames: csr.DNSNames, PublicKey: csr.PublicKey}
	resp, err := s.cas.CreateCertificate(&apiv1.CreateCertificateRequest{Template: tmpl, CSR: csr, Lifetime: lifetime})
	if err != nil {
		s.cas = nil // reach the step-ca afresh next time
		return nil, err
	}
	return append([]*x509.Certificate{resp.Certificate}, resp.CertificateChain...), nil
}
