package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/storage"
)

// X509SVID is a freshly signed X.509-SVID in the encodings of the Workload
// API. Nothing on the issuance path parses the certificate again.
type X509SVID struct {
	// ID is the SPIFFE ID in the certificate's URI SAN.
	ID spiffeid.ID
	// EntryID is the registration entry it was issued for.
	EntryID string
	// Revision is the entry revision it was issued for.
	Revision uint64
	// CertChainDER is the leaf followed by the intermediate (and, under an
	// upstream authority, the upstream's intermediates), concatenated DER.
	CertChainDER []byte
	// KeyDER is the private key, PKCS#8 DER.
	KeyDER []byte
	// Serial is the certificate serial number, lower-case hex without
	// leading zeros (big.Int.Text(16)), the form used everywhere in badge.
	Serial string
	// NotBefore and NotAfter bound the certificate's validity.
	NotBefore, NotAfter time.Time
}

// RefreshAt is when a holder should receive a fresh SVID: half-way through
// the lifetime counted from issuance (not from the backdated NotBefore).
func (s *X509SVID) RefreshAt() time.Time {
	issued := s.NotBefore.Add(Backdate)
	return issued.Add(s.NotAfter.Sub(issued) / 2)
}

// SignX509SVID takes a fresh key (generated ahead of demand, handed out
// once; see keyPool) and signs an X.509-SVID for entry e with the signing
// key of snapshot s. Its serial comes from a durable reservation and
// its binding to the SPIFFE ID is queued before the SVID is returned, so
// that revocation by SPIFFE ID finds every certificate that left the
// process, or, after a crash, the start-up revokes it (see serials.go).
func (a *Authority) SignX509SVID(ctx context.Context, s *Snapshot, e *Entry) (*X509SVID, error) {
	return a.signEntry(ctx, s, e, nil)
}

// signEntry signs an X.509-SVID of entry e for pub, or, when pub is nil,
// for a fresh key from the pool, handed out in KeyDER.
func (a *Authority) signEntry(ctx context.Context, s *Snapshot, e *Entry, pub crypto.PublicKey) (*X509SVID, error) {
	// Revocation holds issuance while it lists the serials of an ID; a
	// blocked ID is checked against the newest snapshot, not the caller's.
	a.issueMu.RLock()
	defer a.issueMu.RUnlock()
	if err := a.Snapshot().CheckRevocation(X509Credential(e.ID, "")); err != nil {
		return nil, fmt.Errorf("ca: SVID for %s: %w", e.ID, err)
	}
	now := a.cfg.Time()
	serial, err := a.nextSerial(ctx, now)
	if err != nil {
		return nil, err
	}
	var keyDER []byte
	if pub == nil {
		k, err := a.svidKeys.take()
		if err != nil {
			return nil, err
		}
		pub, keyDER = k.key.Public(), k.der
	}
	svid, err := a.signLocked(ctx, s, e, pub, serial, now, a.effectiveTTL(e))
	if err != nil {
		return nil, err
	}
	svid.KeyDER = keyDER
	return svid, nil
}

// signLocked signs the certificate of entry e for the public key pub with
// the signing key of snapshot s: serial reserved durably, NotBefore
// backdated by Backdate, NotAfter ttl after now and at most the signing
// CA's. It queues the binding of the serial to the entry's SPIFFE ID
// before signing, so that nothing it returns is unknown to revocation.
// Every X.509 certificate the authority signs for a subject comes from
// here. Callers read-hold a.issueMu and have checked that the ID is not
// blocked.
func (a *Authority) signLocked(ctx context.Context, s *Snapshot, e *Entry, pub crypto.PublicKey, serial reservedSerial, now time.Time, ttl time.Duration) (*X509SVID, error) {
	notBefore, notAfter := now.Add(-Backdate), now.Add(ttl)
	if ca := s.signer.cert; notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	// The serial was reserved durably; its binding to the SPIFFE ID is
	// queued, not waited for. Revocation (which write-holds issueMu) sees
	// queued bindings, and a crash revokes reserved serials never bound. A
	// binding whose signing then fails is harmless and pruned after its
	// NotAfter.
	err := a.store.BindSerial(ctx, storage.Serial{
		Serial:    serial.hex,
		SPIFFEID:  e.Record.SPIFFEID,
		EntryID:   e.Record.ID,
		NotBefore: notBefore,
		NotAfter:  notAfter,
		IssuedAt:  now,
	})
	if err != nil {
		return nil, fmt.Errorf("ca: recording serial of SVID for %s: %w", e.ID, err)
	}
	chain, err := signLeaf(s, e, serial.n, notBefore, notAfter, pub)
	if err != nil {
		return nil, fmt.Errorf("ca: signing SVID for %s: %w", e.ID, err)
	}
	return &X509SVID{
		ID:           e.ID,
		EntryID:      e.Record.ID,
		Revision:     e.Record.Revision,
		CertChainDER: chain,
		Serial:       serial.hex,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}, nil
}

// signLeaf signs the certificate of entry e with serial and validity for
// the subject key pub, and returns it followed by the rest of the chain of
// s: with the entry's leafEncoder when the signing key allows it and pub
// is an ECDSA key, otherwise with x509.CreateCertificate.
func signLeaf(s *Snapshot, e *Entry, serial *big.Int, notBefore, notAfter time.Time, pub crypto.PublicKey) ([]byte, error) {
	if ecPub, ok := pub.(*ecdsa.PublicKey); ok && e.leaf != nil {
		if enc := e.leaf.get(e.tmpl, s.signer.cert, s.signer.signer); enc != nil {
			return enc.sign(serial, notBefore, notAfter, ecPub, s.chainDER)
		}
	}
	tmpl := *e.tmpl
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, notBefore, notAfter
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, s.signer.cert, pub, s.signer.signer)
	if err != nil {
		return nil, err
	}
	return append(der, s.chainDER...), nil
}
