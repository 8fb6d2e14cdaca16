package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
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
	k, err := a.svidKeys.take()
	if err != nil {
		return nil, err
	}
	key := k.key
	tmpl := *e.tmpl
	tmpl.SerialNumber = serial.n
	tmpl.NotBefore = now.Add(-Backdate)
	tmpl.NotAfter = now.Add(a.effectiveTTL(e))
	if ca := s.signer.cert; tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	// The serial was reserved durably; its binding to the SPIFFE ID is
	// queued, not waited for. Revocation (which write-holds issueMu) sees
	// queued bindings, and a crash revokes reserved serials never bound. A
	// binding whose signing then fails is harmless and pruned after its
	// NotAfter.
	err = a.store.BindSerial(ctx, storage.Serial{
		Serial:    serial.hex,
		SPIFFEID:  e.Record.SPIFFEID,
		EntryID:   e.Record.ID,
		NotBefore: tmpl.NotBefore,
		NotAfter:  tmpl.NotAfter,
		IssuedAt:  now,
	})
	if err != nil {
		return nil, fmt.Errorf("ca: recording serial of SVID for %s: %w", e.ID, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, s.signer.cert, key.Public(), s.signer.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: signing SVID for %s: %w", e.ID, err)
	}
	svid := &X509SVID{
		ID:           e.ID,
		EntryID:      e.Record.ID,
		Revision:     e.Record.Revision,
		CertChainDER: append(der, s.chainDER...),
		KeyDER:       k.der,
		Serial:       serial.hex,
		NotBefore:    tmpl.NotBefore,
		NotAfter:     tmpl.NotAfter,
	}
	return svid, nil
}
