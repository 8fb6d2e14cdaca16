// Package selfcert keeps the TLS certificate of a badge listener current:
// an X.509-SVID the authority signs for itself (spiffe://TD/badge/server),
// signed again when a handshake finds it past half its life. The public
// HTTPS listener and the agent listener both serve from it.
//
// Invariant: Certificate never returns an expired certificate; when
// renewal fails it serves the current one while it is valid, and logs the
// failure.
package selfcert

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/logkey"
)

// Signer signs the listener's certificate: *ca.Authority.
type Signer interface {
	Snapshot() *ca.Snapshot
	SignX509SVID(ctx context.Context, s *ca.Snapshot, e *ca.Entry) (*ca.X509SVID, error)
}

// Config configures a Source.
type Config struct {
	// Signer signs the certificates. Required.
	Signer Signer
	// Entry is the identity of the certificates (ca.Authority.ServerEntry).
	// Required.
	Entry *ca.Entry
	// Name names the listener in log lines, e.g. "public".
	Name string
	// Time returns the current time. Default time.Now.
	Time func() time.Time
	// Logger receives renewals and their failures. Nil discards them.
	Logger *slog.Logger
}

// Source holds a listener's current certificate.
type Source struct {
	cfg     Config
	cur     atomic.Pointer[current]
	renewMu sync.Mutex
}

type current struct {
	cert    *tls.Certificate
	renewAt time.Time
}

// New returns a Source with its first certificate signed.
func New(ctx context.Context, cfg Config) (*Source, error) {
	if cfg.Signer == nil || cfg.Entry == nil {
		return nil, errors.New("selfcert: Config.Signer and Config.Entry are required")
	}
	if cfg.Time == nil {
		cfg.Time = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{cfg: cfg}
	if _, err := s.renew(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Certificate returns the current certificate, renewing it when due: it
// fits tls.Config.GetCertificate.
func (s *Source) Certificate() (*tls.Certificate, error) {
	c := s.cur.Load()
	if s.cfg.Time().Before(c.renewAt) {
		return c.cert, nil
	}
	n, err := s.renew(context.Background())
	if err != nil {
		if s.cfg.Time().Before(c.cert.Leaf.NotAfter) {
			s.cfg.Logger.Error("renewing the "+s.cfg.Name+" listener's certificate failed; serving the current one", slog.Any(logkey.Error, err))
			return c.cert, nil
		}
		return nil, err
	}
	return n.cert, nil
}

// GetCertificate is Certificate as tls.Config.GetCertificate.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Certificate()
}

func (s *Source) renew(ctx context.Context) (*current, error) {
	s.renewMu.Lock()
	defer s.renewMu.Unlock()
	if c := s.cur.Load(); c != nil && s.cfg.Time().Before(c.renewAt) {
		return c, nil // renewed by another handshake meanwhile
	}
	svid, err := s.cfg.Signer.SignX509SVID(ctx, s.cfg.Signer.Snapshot(), s.cfg.Entry)
	if err != nil {
		return nil, fmt.Errorf("%s: signing the listener's certificate: %w", s.cfg.Name, err)
	}
	chain, err := x509.ParseCertificates(svid.CertChainDER)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(svid.KeyDER)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: the listener's key (%T) cannot sign", s.cfg.Name, key)
	}
	tc := &tls.Certificate{PrivateKey: signer, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	c := &current{cert: tc, renewAt: svid.RefreshAt()}
	s.cur.Store(c)
	s.cfg.Logger.Debug(s.cfg.Name+" listener certificate issued", slog.String(logkey.Serial, svid.Serial),
		slog.String("expires", svid.NotAfter.UTC().Format(time.RFC3339)))
	return c, nil
}
