package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/storage"
)

// ErrBlocked is returned when a credential is asked for a blocked SPIFFE ID.
var ErrBlocked = errors.New("SPIFFE ID is blocked")

// crlRefresh is how often the revocation list is re-signed even when
// nothing changed, so that its NextUpdate never passes while badge runs.
const crlRefresh = 5 * time.Minute

// IDRevocation is a revocation of every certificate (and token) issued to a
// SPIFFE ID before RevokedAt. A blocked ID gets no new SVIDs or tokens
// until it is unblocked.
type IDRevocation struct {
	ID        spiffeid.ID
	RevokedAt time.Time
	Reason    string
	Blocked   bool
}

// Revoked reports whether id has been revoked, and how. A credential of id
// issued before RevokedAt must be refused; a blocked id gets none at all.
func (s *Snapshot) Revoked(id spiffeid.ID) (IDRevocation, bool) {
	r, ok := s.revocations.ids[id]
	return r, ok
}

// SerialRevoked reports whether the certificate with this serial (lower-case
// hex, as in X509SVID.Serial) has been revoked.
func (s *Snapshot) SerialRevoked(serial string) bool {
	_, ok := s.revocations.serials[serial]
	return ok
}

// CRL returns the current revocation list, DER, signed by the intermediate
// CA, and its CRL number, which grows with every new list.
func (s *Snapshot) CRL() (der []byte, number uint64) {
	return s.revocations.crl, s.revocations.number
}

// revocationState is the immutable revocation part of a snapshot; a new one
// is built (copy on write) only when revocations change.
type revocationState struct {
	ids     map[spiffeid.ID]IDRevocation
	serials map[string]storage.RevokedSerial
	crl     []byte
	number  uint64
}

// RevokeRequest asks to revoke a SPIFFE ID.
type RevokeRequest struct {
	SPIFFEID string
	Reason   string
	// Block stops issuance to the ID until Unblock.
	Block bool
	// AdminUID is the uid of the admin who asked, for the audit trail.
	AdminUID uint32
}

const maxReasonLen = 1024

// RevokeID revokes every unexpired certificate issued to an ID and records
// the revocation. Holders of the ID get a fresh SVID with a new key at once
// (unless Block), every open stream gets the new revocation list, and the
// number of certificates revoked is returned.
func (a *Authority) RevokeID(ctx context.Context, req RevokeRequest) (int, error) {
	id, err := parseID(a.cfg.TrustDomain, req.SPIFFEID)
	if err != nil {
		return 0, err
	}
	if err := validReason(req.Reason); err != nil {
		return 0, err
	}
	// Hold issuance while the serials are collected: no certificate of a
	// blocked ID is signed after its serials were listed.
	a.issueMu.Lock()
	defer a.issueMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Time().UTC()
	rev := storage.Revocation{SPIFFEID: id.String(), RevokedAt: now, Reason: req.Reason, Blocked: req.Block, AdminUID: req.AdminUID}
	revoked, err := a.store.RevokeID(ctx, rev, now)
	if err != nil {
		return 0, fmt.Errorf("recording revocation of %s: %w", id, err)
	}
	state := a.revocations.clone()
	if old, ok := state.ids[id]; ok && old.Blocked && !req.Block {
		// A second, non-blocking revocation does not lift a block.
		rev.Blocked = true
	}
	state.ids[id] = IDRevocation{ID: id, RevokedAt: now, Reason: req.Reason, Blocked: rev.Blocked}
	for _, r := range revoked {
		state.serials[r.Serial] = r
	}
	if err := a.signCRLLocked(state); err != nil {
		return 0, err
	}
	a.revocations = state
	a.publishLocked()
	a.log.Warn("SPIFFE ID revoked", slog.String(LogSPIFFEID, id.String()), slog.Int(LogCount, len(revoked)),
		slog.Bool("blocked", rev.Blocked), slog.String("reason", req.Reason), slog.Int(LogAdminUID, int(req.AdminUID)), slog.Bool(LogAudit, true))
	return len(revoked), nil
}

// RevokeSerial revokes one certificate by its serial number (hex).
func (a *Authority) RevokeSerial(ctx context.Context, given, reason string, adminUID uint32) (storage.RevokedSerial, error) {
	serial, err := parseSerial(given)
	if err != nil {
		return storage.RevokedSerial{}, err
	}
	if err := validReason(reason); err != nil {
		return storage.RevokedSerial{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Time().UTC()
	r, err := a.store.RevokeSerial(ctx, serial, reason, adminUID, now)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			// The storage chain says nothing an admin can act on; the
			// serial as given and what to check do.
			return r, &notFoundError{fmt.Sprintf("no unexpired certificate with serial %s was issued by this authority: "+
				"check the serial (openssl x509 -noout -serial -in svid.pem); an expired certificate needs no revocation", given)}
		}
		return r, fmt.Errorf("revoking serial %s: %w", serial, err)
	}
	state := a.revocations.clone()
	state.serials[r.Serial] = r
	if err := a.signCRLLocked(state); err != nil {
		return r, err
	}
	a.revocations = state
	a.publishLocked()
	a.log.Warn("certificate revoked", slog.String(LogSerial, serial), slog.String(LogSPIFFEID, r.SPIFFEID),
		slog.String("reason", reason), slog.Int(LogAdminUID, int(adminUID)), slog.Bool(LogAudit, true))
	return r, nil
}

// Unblock lets a blocked ID be issued credentials again. Certificates and
// tokens issued before its revocation stay revoked.
func (a *Authority) Unblock(ctx context.Context, spiffeID string, adminUID uint32) error {
	id, err := parseID(a.cfg.TrustDomain, spiffeID)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, ok := a.revocations.ids[id]
	if !ok || !cur.Blocked {
		return fmt.Errorf("%s is not blocked: %w", id, storage.ErrNotFound)
	}
	if err := a.store.Unblock(ctx, id.String()); err != nil {
		return fmt.Errorf("unblocking %s: %w", id, err)
	}
	state := a.revocations.clone()
	cur.Blocked = false
	state.ids[id] = cur
	a.revocations = state
	a.publishLocked()
	a.log.Warn("SPIFFE ID unblocked", slog.String(LogSPIFFEID, id.String()), slog.Int(LogAdminUID, int(adminUID)), slog.Bool(LogAudit, true))
	return nil
}

// Revocations returns what is in force: revoked IDs and revoked,
// unexpired certificates, each sorted.
func (a *Authority) Revocations() ([]storage.Revocation, []storage.RevokedSerial) {
	s := a.Snapshot().revocations
	ids := make([]storage.Revocation, 0, len(s.ids))
	for _, r := range s.ids {
		ids = append(ids, storage.Revocation{SPIFFEID: r.ID.String(), RevokedAt: r.RevokedAt, Reason: r.Reason, Blocked: r.Blocked})
	}
	slices.SortFunc(ids, func(a, b storage.Revocation) int { return strings.Compare(a.SPIFFEID, b.SPIFFEID) })
	serials := slices.SortedFunc(maps.Values(s.serials), func(a, b storage.RevokedSerial) int { return strings.Compare(a.Serial, b.Serial) })
	return ids, serials
}

// loadRevocations reads the revocations in force from the store.
func (a *Authority) loadRevocations(ctx context.Context) error {
	ids, serials, err := a.store.ListRevocations(ctx)
	if err != nil {
		return fmt.Errorf("ca: loading revocations: %w", err)
	}
	state := &revocationState{ids: map[spiffeid.ID]IDRevocation{}, serials: map[string]storage.RevokedSerial{}}
	for _, r := range ids {
		id, err := spiffeid.FromString(r.SPIFFEID)
		if err != nil {
			// Never drop a revocation silently: a record we cannot parse
			// is an error an operator must look at.
			return fmt.Errorf("ca: revocation record for %q: %w", r.SPIFFEID, err)
		}
		state.ids[id] = IDRevocation{ID: id, RevokedAt: r.RevokedAt, Reason: r.Reason, Blocked: r.Blocked}
	}
	for _, r := range serials {
		state.serials[r.Serial] = r
	}
	if err := a.signCRLLocked(state); err != nil {
		return err
	}
	a.revocations = state
	return nil
}

// refreshRevocationsLocked drops expired entries (from memory and store)
// and re-signs the list.
func (a *Authority) refreshRevocationsLocked(ctx context.Context) error {
	now := a.cfg.Time()
	// An ID revocation matters while credentials issued before it live.
	keep := max(a.cfg.MaxSVIDTTL, a.cfg.JWTTTL) + Backdate
	if _, err := a.store.PruneRevocations(ctx, now, keep); err != nil {
		return fmt.Errorf("pruning revocations: %w", err)
	}
	state := a.revocations.clone()
	for id, r := range state.ids {
		if !r.Blocked && now.Sub(r.RevokedAt) > keep {
			delete(state.ids, id)
		}
	}
	for s, r := range state.serials {
		if now.After(r.NotAfter) {
			delete(state.serials, s)
		}
	}
	if err := a.signCRLLocked(state); err != nil {
		return err
	}
	a.revocations = state
	a.publishLocked()
	return nil
}

func (r *revocationState) clone() *revocationState {
	return &revocationState{ids: maps.Clone(r.ids), serials: maps.Clone(r.serials), number: r.number}
}

// signCRLLocked signs the revocation list of state with the current
// intermediate. The CRL number is the signing time in nanoseconds, or one
// more than the last number if that is larger: the store hands it out, so
// it grows strictly across restarts and clock steps too.
func (a *Authority) signCRLLocked(state *revocationState) error {
	now := a.cfg.Time()
	number, err := a.store.NextCRLNumber(context.Background(), uint64(max(now.UnixNano(), 0)))
	if err != nil {
		return fmt.Errorf("ca: numbering the revocation list: %w", err)
	}
	tmpl := &x509.RevocationList{
		Number:     new(big.Int).SetUint64(number),
		ThisUpdate: now.Add(-Backdate),
		NextUpdate: now.Add(2 * crlRefresh),
	}
	for _, r := range slices.SortedFunc(maps.Values(state.serials), func(a, b storage.RevokedSerial) int { return strings.Compare(a.Serial, b.Serial) }) {
		n, ok := new(big.Int).SetString(r.Serial, 16)
		if !ok {
			continue // validated when recorded
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: r.RevokedAt})
	}
	k := a.keys.current()
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, k.cert, k.signer)
	if err != nil {
		return fmt.Errorf("ca: signing revocation list: %w", err)
	}
	state.crl, state.number = der, number
	return nil
}

func validReason(r string) error {
	if len(r) > maxReasonLen {
		return invalid("reason", r[:32]+"...", "longer than %d bytes", maxReasonLen)
	}
	for _, c := range r {
		if c < 0x20 || c == 0x7f {
			return invalid("reason", r, "contains a control character")
		}
	}
	return nil
}

// notFoundError is a storage.ErrNotFound with a message of its own.
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string        { return e.msg }
func (e *notFoundError) Is(target error) bool { return target == storage.ErrNotFound }

// parseSerial accepts a certificate serial in hex, with or without colons
// and leading zeros, and returns its canonical lower-case form.
func parseSerial(s string) (string, error) {
	clean := strings.ToLower(strings.ReplaceAll(s, ":", ""))
	n, ok := new(big.Int).SetString(clean, 16)
	if !ok || clean == "" || strings.HasPrefix(clean, "-") || strings.HasPrefix(clean, "+") || len(clean) > 40 {
		return "", invalid("serial", s, "must be a certificate serial number in hexadecimal (at most 20 bytes)")
	}
	if n.Sign() <= 0 {
		return "", invalid("serial", s, "must be positive")
	}
	return n.Text(16), nil
}
