package ca

// What operators watch of the authority: its keys, its revocation list and
// whether it can sign. Metrics, readiness checks and `badge status` read
// these; none of them is on the issuance path.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// ErrNotReady is wrapped by the readiness checks of the authority.
var ErrNotReady = errors.New("ca: not ready")

// Key kinds reported by Keys.
const (
	KeyRoot         = kindRoot
	KeyIntermediate = kindIntermediate
	KeyJWT          = kindJWT
)

// KeyInfo describes one key of the authority.
type KeyInfo struct {
	// Kind is KeyRoot, KeyIntermediate or KeyJWT.
	Kind string `json:"kind"`
	// ID identifies the key (a JWT key's kid).
	ID string `json:"id"`
	// NotBefore and NotAfter bound its validity. A JWT key's NotBefore is
	// when it was created.
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// Signing is true for the key that signs now; the others of its kind
	// are published (JWT keys) until what they signed expires.
	Signing bool `json:"signing"`
}

// Keys returns the roots of the trust bundle (prepared, active and
// retired ones, oldest first), the signing intermediate and every
// published JWT key (oldest first), in that order. Signing is set on the
// active root, the intermediate and the active JWT key.
func (a *Authority) Keys() []KeyInfo {
	a.mu.Lock()
	ks := a.keys
	a.mu.Unlock()
	var out []KeyInfo
	for _, r := range ks.roots {
		out = append(out, KeyInfo{Kind: KeyRoot, ID: r.id, NotBefore: r.cert.NotBefore, NotAfter: r.cert.NotAfter, Signing: r == ks.root})
	}
	out = append(out, KeyInfo{Kind: KeyIntermediate, ID: ks.inter.id, NotBefore: ks.inter.cert.NotBefore, NotAfter: ks.inter.cert.NotAfter, Signing: true})
	for _, k := range ks.jwt.list() {
		out = append(out, KeyInfo{Kind: KeyJWT, ID: k.id, NotBefore: k.rec.CreatedAt, NotAfter: k.rec.NotAfter, Signing: k == ks.jwt.active})
	}
	return out
}

// CRLValidity returns the validity period of the current revocation list.
func (s *Snapshot) CRLValidity() (thisUpdate, nextUpdate time.Time) {
	return s.revocations.thisUpdate, s.revocations.nextUpdate
}

// RevocationCounts returns the revocations in force: by SPIFFE ID (blocked
// ones included) and by serial.
func (s *Snapshot) RevocationCounts() (ids, serials int) {
	return len(s.revocations.ids), len(s.revocations.serials)
}

// CheckSigner reports whether the signing intermediate can sign now: it is
// within its validity and its key produces a signature that its
// certificate's public key verifies. The error wraps ErrNotReady.
func (a *Authority) CheckSigner() error {
	s := a.Snapshot()
	now := a.cfg.Time()
	cert := s.signer.cert
	if now.Before(cert.NotBefore) || !now.Before(cert.NotAfter) {
		return fmt.Errorf("%w: the signing intermediate %s is valid from %s to %s, not now", ErrNotReady, s.signer.id,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	digest := sha256.Sum256([]byte("badge readiness check"))
	sig, err := s.signer.signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return fmt.Errorf("%w: the signing intermediate %s cannot sign: %v", ErrNotReady, s.signer.id, err)
	}
	if err := verifyDigest(cert, digest[:], sig); err != nil {
		return fmt.Errorf("%w: the signing intermediate %s signs with a key its certificate does not hold: %v", ErrNotReady, s.signer.id, err)
	}
	return nil
}

// CheckCRL reports whether the current revocation list is fresh: its
// NextUpdate is still ahead, so verifiers accept it. It is re-signed every
// five minutes for ten; a stale one means re-signing has failed for five
// minutes. The error wraps ErrNotReady.
func (a *Authority) CheckCRL() error {
	_, next := a.Snapshot().CRLValidity()
	if now := a.cfg.Time(); !now.Before(next) {
		return fmt.Errorf("%w: the revocation list expired at %s (re-signing has failed for %s)", ErrNotReady,
			next.UTC().Format(time.RFC3339), now.Sub(next).Round(time.Second)+crlRefresh)
	}
	return nil
}

// verifyDigest checks a signature of a SHA-256 digest by cert's public key.
func verifyDigest(cert *x509.Certificate, digest, sig []byte) error {
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest, sig) {
			return errors.New("signature does not verify")
		}
		return nil
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest, sig)
	default:
		return fmt.Errorf("unsupported public key %T", pub)
	}
}
