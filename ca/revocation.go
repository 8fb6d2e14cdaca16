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

	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// ErrBlocked is returned when a credential is asked for a blocked SPIFFE ID.
var ErrBlocked = errors.New("ca: SPIFFE ID is blocked")

// ErrRevoked is matched (with errors.Is) by every refusal of
// [Snapshot.CheckRevocation]; a refusal because the ID is blocked also
// matches ErrBlocked.
var ErrRevoked = errors.New("ca: credential is revoked")

// crlRefresh is how often the revocation list is re-signed even when
// nothing changed, so that its NextUpdate never passes while badge runs.
const crlRefresh = 5 * time.Minute

// IDRevocation is a revocation of every certificate (and token) issued to a
// SPIFFE ID up to RevokedAt. A blocked ID gets no new SVIDs or tokens
// until it is unblocked.
type IDRevocation struct {
	ID        spiffeid.ID
	RevokedAt time.Time
	Reason    string
	Blocked   bool
}

// Credential is an X.509-SVID or a JWT-SVID as revocation judges it. Make
// one with [X509Credential] or [JWTCredential].
type Credential struct {
	// ID is the SPIFFE ID the credential names.
	ID spiffeid.ID
	// Serial is the serial of an X.509-SVID, canonical lower-case hex;
	// empty for a certificate not signed yet.
	Serial string
	// IssuedAt is the iat of a JWT-SVID (whole seconds); zero when the
	// token has none.
	IssuedAt time.Time
	// JWT tells a JWT-SVID from an X.509-SVID.
	JWT bool
}

// X509Credential is the X.509-SVID of id with the given serial (as in
// X509SVID.Serial or big.Int.Text(16)); serial "" asks about a certificate
// about to be signed.
func X509Credential(id spiffeid.ID, serial string) Credential {
	return Credential{ID: id, Serial: serial}
}

// JWTCredential is a JWT-SVID of id with the given iat.
func JWTCredential(id spiffeid.ID, iat time.Time) Credential {
	return Credential{ID: id, IssuedAt: iat, JWT: true}
}

// RevokedError is the refusal of a revoked credential. It matches
// ErrRevoked, and ErrBlocked when the ID is blocked.
type RevokedError struct {
	Blocked bool
	msg     string
}

func (e *RevokedError) Error() string { return e.msg }

// Is makes errors.Is match ErrRevoked, and ErrBlocked for a block.
func (e *RevokedError) Is(target error) bool {
	return target == ErrRevoked || (e.Blocked && target == ErrBlocked)
}

// CheckRevocation is the one answer badge gives to "is this credential
// revoked?": the Workload API stream, issuance, the public listener and
// JWT-SVID validation all ask it. It returns nil or a *RevokedError.
//
// The rule:
//   - a credential of a blocked ID is revoked, whatever its age;
//   - an X.509-SVID is revoked when its serial is revoked. Revoking an ID
//     revokes the serial of every unexpired certificate recorded for it,
//     and no certificate of the ID is signed while that happens (every
//     serial is recorded before its certificate leaves the process), so
//     an ID revocation needs no date comparison here: a certificate signed
//     after it is valid even though its NotBefore, backdated for clock
//     skew, lies before the revocation;
//   - a JWT-SVID is revoked when its ID was revoked at or after its iat.
//     iat has whole seconds and tokens are signed only under the lock that
//     revocation holds, so a token signed before the revocation has
//     iat <= RevokedAt, and one signed after it is dated to the second
//     after RevokedAt (see signJWT). "At or after" (not "after") keeps a
//     token of the revocation's own second revoked even if a store kept
//     RevokedAt only to the second. The revocation records are kept until
//     every credential they could refuse has expired, plus the prune
//     margin (Config.PruneMargin), so the answer is the same after a
//     restart or a clock step.
//
// Expiry is not judged here: the caller checks the credential's validity
// period first, as x509svid.Verify and ValidateJWTSVID do.
func (s *Snapshot) CheckRevocation(c Credential) error {
	r, idRevoked := s.revocations.ids[c.ID]
	if idRevoked && r.Blocked {
		return &RevokedError{Blocked: true, msg: fmt.Sprintf("%s is blocked since %s", c.ID, utc(r.RevokedAt))}
	}
	if !c.JWT {
		if rs, ok := s.revocations.serials[c.Serial]; ok && c.Serial != "" {
			return &RevokedError{msg: fmt.Sprintf("certificate %s of %s is revoked since %s", c.Serial, c.ID, utc(rs.RevokedAt))}
		}
		return nil
	}
	if idRevoked && !c.IssuedAt.After(r.RevokedAt) {
		iat := "none"
		if !c.IssuedAt.IsZero() {
			iat = utc(c.IssuedAt)
		}
		return &RevokedError{msg: fmt.Sprintf("%s was revoked at %s, at or after this token was issued (iat %s)", c.ID, utc(r.RevokedAt), iat)}
	}
	return nil
}

// Revoked returns the revocation of id in force, if any. It is a lookup;
// to judge a credential, use CheckRevocation.
func (s *Snapshot) Revoked(id spiffeid.ID) (IDRevocation, bool) {
	r, ok := s.revocations.ids[id]
	return r, ok
}

// SerialRevoked reports whether the serial (lower-case hex, as in
// X509SVID.Serial) is on the revocation list. It is a lookup; to judge a
// credential, use CheckRevocation.
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
	// thisUpdate and nextUpdate are the CRL's validity period.
	thisUpdate, nextUpdate time.Time
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

// RevokeResult says what a revocation changed.
type RevokeResult struct {
	// Revoked counts the certificates this revocation revoked.
	Revoked int
	// AlreadyRevoked counts the unexpired certificates it covered that
	// were revoked before; their revocation time and reason are kept.
	AlreadyRevoked int
	// SPIFFEID is the ID revoked, or the ID of the certificate revoked.
	SPIFFEID string
}

const maxReasonLen = 1024

// RevokeID revokes every unexpired certificate issued to an ID and records
// the revocation. Holders of the ID get a fresh SVID with a new key at once
// (unless Block), every open stream gets the new revocation list.
// Certificates revoked before keep their revocation time and reason and
// are counted apart; the ID's own record takes the new time and reason
// (it revokes the tokens issued up to now).
func (a *Authority) RevokeID(ctx context.Context, req RevokeRequest) (RevokeResult, error) {
	id, err := parseID(a.cfg.TrustDomain, req.SPIFFEID)
	if err != nil {
		return RevokeResult{}, err
	}
	if err := validReason(req.Reason); err != nil {
		return RevokeResult{}, err
	}
	// Hold issuance while the serials are collected: no certificate of a
	// blocked ID is signed after its serials were listed.
	a.issueMu.Lock()
	defer a.issueMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	res, err := a.revokeIDLocked(ctx, id, req)
	if err != nil {
		return RevokeResult{}, err
	}
	a.publishLocked()
	return res, nil
}

// revokeIDLocked records the revocation of id and installs the new
// revocation state; the caller publishes it. Callers write-hold a.issueMu
// and hold a.mu.
func (a *Authority) revokeIDLocked(ctx context.Context, id spiffeid.ID, req RevokeRequest) (RevokeResult, error) {
	now := a.cfg.Time().UTC()
	// Certificates count as unexpired by the clock pruning trusts: a wall
	// clock that ran ahead must not hide live certificates.
	live := a.trustedNow()
	rev := storage.Revocation{SPIFFEID: id.String(), RevokedAt: now, Reason: req.Reason, Blocked: req.Block, AdminUID: req.AdminUID}
	revoked, err := a.store.RevokeID(ctx, rev, live)
	if err != nil {
		return RevokeResult{}, fmt.Errorf("ca: recording revocation of %s: %w", id, err)
	}
	res := RevokeResult{Revoked: len(revoked), SPIFFEID: id.String()}
	for _, r := range a.revocations.serials {
		if r.SPIFFEID == res.SPIFFEID && r.NotAfter.After(live) {
			res.AlreadyRevoked++
		}
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
		return RevokeResult{}, err
	}
	a.revocations = state
	a.log.Warn("SPIFFE ID revoked", slog.String(logkey.SPIFFEID, id.String()), slog.Int(logkey.Count, res.Revoked), slog.Int("already_revoked", res.AlreadyRevoked),
		slog.Bool("blocked", rev.Blocked), slog.String("reason", req.Reason), slog.Int(logkey.AdminUID, int(req.AdminUID)), slog.Bool(logkey.Audit, true))
	return res, nil
}

// RevokeSerial revokes one certificate by its serial number (hex). A
// certificate revoked before keeps its revocation time and reason: the
// result counts it as AlreadyRevoked, and nothing changes.
func (a *Authority) RevokeSerial(ctx context.Context, given, reason string, adminUID uint32) (RevokeResult, error) {
	serial, err := parseSerial(given)
	if err != nil {
		return RevokeResult{}, err
	}
	if err := validReason(reason); err != nil {
		return RevokeResult{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Time().UTC()
	r, err := a.store.RevokeSerial(ctx, serial, reason, adminUID, now)
	switch {
	case errors.Is(err, storage.ErrExists):
		a.log.Info("certificate already revoked", slog.String(logkey.Serial, serial), slog.String(logkey.SPIFFEID, r.SPIFFEID),
			slog.Time("revoked_at", r.RevokedAt), slog.Int(logkey.AdminUID, int(adminUID)), slog.Bool(logkey.Audit, true))
		return RevokeResult{AlreadyRevoked: 1, SPIFFEID: r.SPIFFEID}, nil
	case errors.Is(err, storage.ErrNotFound):
		// The storage chain says nothing an admin can act on; the serial
		// as given and what to check do.
		return RevokeResult{}, &notFoundError{fmt.Sprintf("no unexpired certificate with serial %s was issued by this authority: "+
			"check the serial (openssl x509 -noout -serial -in svid.pem); an expired certificate needs no revocation", given)}
	case err != nil:
		return RevokeResult{}, fmt.Errorf("ca: revoking serial %s: %w", serial, err)
	}
	state := a.revocations.clone()
	state.serials[r.Serial] = r
	if err := a.signCRLLocked(state); err != nil {
		return RevokeResult{}, err
	}
	a.revocations = state
	a.publishLocked()
	a.log.Warn("certificate revoked", slog.String(logkey.Serial, serial), slog.String(logkey.SPIFFEID, r.SPIFFEID),
		slog.String("reason", reason), slog.Int(logkey.AdminUID, int(adminUID)), slog.Bool(logkey.Audit, true))
	return RevokeResult{Revoked: 1, SPIFFEID: r.SPIFFEID}, nil
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
		return fmt.Errorf("ca: %s is not blocked: %w", id, storage.ErrNotFound)
	}
	if err := a.store.Unblock(ctx, id.String()); err != nil {
		return fmt.Errorf("ca: unblocking %s: %w", id, err)
	}
	state := a.revocations.clone()
	cur.Blocked = false
	state.ids[id] = cur
	a.revocations = state
	a.publishLocked()
	a.log.Warn("SPIFFE ID unblocked", slog.String(logkey.SPIFFEID, id.String()), slog.Int(logkey.AdminUID, int(adminUID)), slog.Bool(logkey.Audit, true))
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

// refreshRevocationsLocked drops the records no credential needs any more
// (from memory and store) and re-signs the list. A record goes only when
// what it could refuse has expired by more than Config.PruneMargin on the
// clock pruning trusts (trustedNow), and only once the authority has run
// for the longest credential lifetime (pruneReady): a wall clock that
// steps ahead while badge runs, or is wrong when it starts, drops nothing
// live.
func (a *Authority) refreshRevocationsLocked(ctx context.Context) error {
	state := a.revocations.clone()
	if a.pruneReady() {
		cut := a.trustedNow().Add(-a.cfg.PruneMargin)
		// An ID revocation matters while credentials issued up to it live.
		keep := a.longestLife()
		if _, err := a.store.PruneRevocations(ctx, cut, keep); err != nil {
			return fmt.Errorf("ca: pruning revocations: %w", err)
		}
		for id, r := range state.ids {
			if !r.Blocked && cut.Sub(r.RevokedAt) > keep {
				delete(state.ids, id)
			}
		}
		for s, r := range state.serials {
			if cut.After(r.NotAfter) {
				delete(state.serials, s)
			}
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
	state.thisUpdate, state.nextUpdate = tmpl.ThisUpdate, tmpl.NextUpdate
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
