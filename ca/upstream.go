package ca

// An upstream authority. With Config.Upstream set, badge makes no root of
// its own: every intermediate key it prepares is signed by the upstream
// (an operator's root on disk, an existing step-ca), and the trust bundle
// is the upstream's roots. Invariants:
//
//   - An intermediate the upstream returns is used only if it is a CA
//     certificate for the key badge made, for this trust domain's ID, and
//     chains through the upstream's intermediates to one of the roots the
//     upstream named; anything else is refused as if the upstream failed.
//   - The upstream's intermediates and roots are recorded with the
//     intermediate (storage.Key.UpstreamChain, UpstreamRoots), so that a
//     restart serves the same chain and bundle with no upstream reachable.
//   - The roots of every intermediate that has not expired, the retired
//     ones included, stay in the bundle: an SVID verifies until it expires
//     even when the upstream changed its root meanwhile, or the authority
//     left the upstream for a root of its own. They leave it when the last
//     of those intermediates expires (caKey.until), read from the
//     intermediates' records, so a restart keeps them as long.
//   - A failing upstream never stops issuance while the current
//     intermediate is valid: the rotation is tried again with exponential
//     backoff (rotateLoop) and a warning, and New starts on the recorded
//     intermediate.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/badge-dev/badge/storage"
)

// Upstream signs the certificates of the authority's intermediates in
// place of a root of its own.
type Upstream interface {
	// SignIntermediate signs csr (subject, the trust domain's SPIFFE ID as
	// URI SAN, the intermediate's public key) as a CA certificate valid
	// for at most lifetime. chain starts with the new certificate and
	// goes on with the upstream's intermediates up to a root, which it may
	// include; roots are the certificates verifiers must trust.
	SignIntermediate(ctx context.Context, csr *x509.CertificateRequest, lifetime time.Duration) (chain, roots []*x509.Certificate, err error)
}

// ErrUpstream is wrapped by every failure to have the upstream authority
// sign an intermediate: unreachable, refusing, or returning a certificate
// badge does not accept.
var ErrUpstream = errors.New("ca: upstream authority")

// upstreamTimeout bounds one request to the upstream.
const upstreamTimeout = 30 * time.Second

// signByUpstream asks cfg.Upstream to sign the intermediate key next,
// checks what it returns, and returns the certificate, the upstream's
// intermediates (DER, in order) and its roots (DER).
func signByUpstream(ctx context.Context, cfg *Config, next *caKey, notAfter time.Time) (*x509.Certificate, [][]byte, [][]byte, error) {
	cn := "badge intermediate CA " + cfg.TrustDomain.Name()
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Organization: []string{"badge"}, CommonName: cn},
		URIs:    []*url.URL{cfg.TrustDomain.ID().URL()},
	}, next.signer)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca: intermediate certificate request: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca: intermediate certificate request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, upstreamTimeout)
	defer cancel()
	chain, roots, err := cfg.Upstream.SignIntermediate(ctx, csr, notAfter.Sub(cfg.Time()))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: signing intermediate %s: %w", ErrUpstream, next.id, err)
	}
	cert, inters, rootDER, err := checkUpstreamChain(cfg, next, chain, roots)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: intermediate %s: %w", ErrUpstream, next.id, err)
	}
	return cert, inters, rootDER, nil
}

// upstreamAnswer is the upstream's answer for the prepared intermediate
// id: its certificate, chain and roots, or the error.
type upstreamAnswer struct {
	id           string
	cert         *x509.Certificate
	chain, roots [][]byte
	err          error
}

// presignIntermediate asks the upstream, without a.mu held, to sign the
// prepared intermediate when its activation is due, and keeps the answer
// for activateUnderUpstream: a slow or silent upstream (up to
// upstreamTimeout) then holds up no admin request that needs a.mu.
func (a *Authority) presignIntermediate(ctx context.Context) {
	if a.cfg.Upstream == nil {
		return
	}
	a.mu.Lock()
	ks, now := a.keys, a.cfg.Time()
	due := ks.inter != nil && (!now.Before(ks.inter.rotateAt()) || !a.underActiveRoot(ks, ks.inter))
	if due && ks.nextInter == nil {
		// Due with no key prepared (the server was down at its prepare
		// time): prepare it now, as stepIntermediate would. Not in any
		// snapshot, so nothing is published.
		k, err := prepareIntermediate(ctx, &a.cfg, now)
		if err != nil {
			a.mu.Unlock()
			return // stepIntermediate tries again, and reports it
		}
		ks = ks.clone()
		ks.nextInter = k
		a.keys = ks
	}
	next := ks.nextInter
	a.mu.Unlock()
	if !due {
		return
	}
	ans := &upstreamAnswer{id: next.id}
	ans.cert, ans.chain, ans.roots, ans.err = signByUpstream(ctx, &a.cfg, next, now.Add(a.cfg.IntermediateTTL))
	a.mu.Lock()
	a.presigned = ans
	a.mu.Unlock()
}

// activateUnderUpstream makes the prepared intermediate next active with
// the certificate the upstream signed: the answer presignIntermediate
// got for it (its failure too: the upstream is not asked twice in one
// step), or one asked for now (a forced rotation, the first start).
// Callers hold a.mu.
func (a *Authority) activateUnderUpstream(ctx context.Context, next *caKey) (*caKey, error) {
	cfg := &a.cfg
	now := cfg.Time()
	ans := a.presigned
	a.presigned = nil
	if ans == nil || ans.id != next.id || ans.err == nil && ans.cert.NotAfter.Sub(now) < 2*cfg.MaxSVIDTTL {
		ans = &upstreamAnswer{id: next.id}
		ans.cert, ans.chain, ans.roots, ans.err = signByUpstream(ctx, cfg, next, now.Add(cfg.IntermediateTTL))
	}
	if ans.err != nil {
		return nil, ans.err
	}
	k := &caKey{id: next.id, kind: kindIntermediate, cert: ans.cert, signer: next.signer, rec: next.rec}
	k.rec.Certificate, k.rec.NotAfter, k.rec.ActivatesAt = ans.cert.Raw, ans.cert.NotAfter, now
	k.rec.UpstreamChain, k.rec.UpstreamRoots = ans.chain, ans.roots
	k.rec = activate(k.rec, now, k.rotateAt())
	if err := cfg.Store.PutKey(ctx, k.rec); err != nil {
		return nil, fmt.Errorf("ca: recording %s key: %w", kindIntermediate, err)
	}
	return k, nil
}

// checkUpstreamChain checks what an upstream returned for the key next:
// a CA certificate for that key and the trust domain's ID, valid now,
// chaining through the rest of chain to one of roots.
func checkUpstreamChain(cfg *Config, next *caKey, chain, roots []*x509.Certificate) (*x509.Certificate, [][]byte, [][]byte, error) {
	if len(chain) == 0 || chain[0] == nil {
		return nil, nil, nil, errors.New("the upstream returned no certificate")
	}
	if len(roots) == 0 {
		return nil, nil, nil, errors.New("the upstream named no root to trust")
	}
	cert := chain[0]
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if p, ok := next.signer.Public().(equaler); !ok || !p.Equal(cert.PublicKey) {
		return nil, nil, nil, errors.New("the certificate is not for the key badge asked for")
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, nil, errors.New("the certificate is not a CA certificate allowed to sign certificates " +
			"(the upstream's template must allow an intermediate CA: isCA true, keyUsage certSign)")
	}
	want := cfg.TrustDomain.ID().String()
	if !slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return u.String() == want }) {
		return nil, nil, nil, fmt.Errorf("the certificate does not carry the trust domain's ID %s as URI SAN", want)
	}
	pool := x509.NewCertPool()
	var rootDER [][]byte
	for _, r := range roots {
		pool.AddCert(r)
		rootDER = append(rootDER, r.Raw)
	}
	inter := x509.NewCertPool()
	var inters [][]byte
	for _, c := range chain[1:] {
		if slices.ContainsFunc(roots, func(r *x509.Certificate) bool { return r.Equal(c) }) {
			continue // a root is in the bundle, not in the chain
		}
		inter.AddCert(c)
		inters = append(inters, c.Raw)
	}
	now := cfg.Time()
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, nil, nil, fmt.Errorf("the certificate does not chain to the upstream's roots: %w", err)
	}
	if life := cert.NotAfter.Sub(now); life < 2*cfg.MaxSVIDTTL {
		return nil, nil, nil, fmt.Errorf("the certificate is valid until %s, less than two SVID lifetimes (%s) from now; "+
			"the upstream caps its lifetime (raise the provisioner's maximum TLS certificate duration)", utc(cert.NotAfter), 2*cfg.MaxSVIDTTL)
	}
	return cert, inters, rootDER, nil
}

// upstreamRoots returns the roots of the bundle: the authority's own roots
// still in ks.roots (under an upstream only retired ones, kept until their
// removal), then the roots recorded with every intermediate that has not
// expired at now (recs, and the active intermediate), each once, in the
// order of the records. An upstream root stays until the last of those
// intermediates expires (caKey.until), also once the authority left the
// upstream for a root of its own: the SVIDs of those intermediates, held
// by workloads, verify until they expire.
func upstreamRoots(ks *keySet, recs []storage.Key, now time.Time) []*caKey {
	var out []*caKey
	seen := map[string]bool{}
	for _, r := range ks.roots {
		if !isUpstreamRoot(r) {
			out = append(out, r) // an own root
			seen[string(r.cert.Raw)] = true
		}
	}
	var ups []*x509.Certificate
	until := map[string]time.Time{}
	add := func(rec storage.Key) {
		if rec.Kind != kindIntermediate || rec.State == storage.KeyPrepared || !now.Before(rec.NotAfter) {
			return
		}
		for _, der := range rec.UpstreamRoots {
			if seen[string(der)] {
				continue
			}
			if t, ok := until[string(der)]; ok {
				until[string(der)] = laterOf(t, rec.NotAfter)
				continue
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				continue
			}
			ups = append(ups, c)
			until[string(der)] = rec.NotAfter
		}
	}
	if ks.inter != nil {
		add(ks.inter.rec)
	}
	for _, rec := range recs {
		add(rec)
	}
	for _, c := range ups {
		t := until[string(c.Raw)]
		if i := slices.IndexFunc(ks.roots, func(r *caKey) bool { return isUpstreamRoot(r) && r.cert.Equal(c) }); i >= 0 && ks.roots[i].until.Equal(t) {
			out = append(out, ks.roots[i]) // unchanged: the bundle is not republished
			continue
		}
		out = append(out, &caKey{id: upstreamRootID(c), kind: kindRoot, cert: c, until: t})
	}
	return out
}

// upstreamRootID names an upstream root in Keys: "upstream-root-" and
// the start of the SHA-256 of its public key.
func upstreamRootID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "upstream-root-" + hex.EncodeToString(sum[:8])
}
