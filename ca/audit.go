package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// The audit trail.
//
// Every admin action, and what the server does on its own that an admin
// would want to know (a key rotation, pruning the trail), is one
// storage.AuditRecord. Records are numbered from 1 and chained: a record's
// Hash is SHA-256 over a fixed binary encoding of its fields and the Hash
// of the record before it (AuditRecordHash). The head of the chain (the
// last record's number and hash, and the anchor where pruning cut it) is
// signed by the current intermediate CA after every append, its
// certificate chain stored with the signature. Editing a record changes
// its hash; re-hashing it breaks the next record's link; re-hashing
// everything after it breaks the head's signature, which takes the CA
// key. Deleting or reordering records breaks their numbering and links.
// VerifyAudit checks all of it and names the first record that fails.
//
// Limits: a copy of an older, validly signed head together with the
// records up to it is a valid shorter trail, so truncating the trail to an
// earlier head is detectable only against a head seen before (each append
// is logged with its seq and hash); and whoever holds the CA key can sign
// any head.

// DefaultAuditRetention is how long audit records are kept when
// Config.AuditRetention is zero.
const DefaultAuditRetention = 365 * 24 * time.Hour

// auditDomain separates audit hashes and head digests from anything else
// the CA signs.
const (
	auditRecordDomain = "badge audit record v1\x00"
	auditHeadDomain   = "badge audit head v1\x00"
)

// Audit actions.
const (
	AuditEntryCreate    = "entry.create"
	AuditEntryDelete    = "entry.delete"
	AuditRevokeID       = "revoke.id"
	AuditRevokeSerial   = "revoke.serial"
	AuditUnblock        = "unblock"
	AuditClientCreate   = "client.create"
	AuditClientDelete   = "client.delete"
	AuditKeyRotate      = "key.rotate"
	AuditPrune          = "audit.prune"
	AuditTaint          = "audit.taint"
	AuditBackup         = "backup"
	AuditTokenCreate    = "token.create"
	AuditNodeEvict      = "node.evict"
	AuditResultOK       = "ok"
	auditTruncateSuffix = "…"
)

// AuditStore keeps the audit trail: a part of every Store (storage.Audit).
type AuditStore = storage.Audit

// AuditEvent is one action to record.
type AuditEvent struct {
	// AdminUID is the uid of the admin who asked for the action.
	AdminUID uint32
	// Action is what was done: one of the Audit* constants, or a name of
	// the same form (lower case, dotted) for actions added later.
	Action string
	// Target is what it was done to: an entry id, SPIFFE ID, serial, key id.
	Target string
	// Detail is what the action was given besides its target, such as a
	// revocation reason.
	Detail string
	// Err is the error the action failed with; nil records "ok".
	Err error
}

// auditAppendAttempts bounds the appends of one record that lose to
// other servers appending to the same trail.
const auditAppendAttempts = 5

// auditState is the head the next record chains to, kept in memory so
// that appending reads nothing; auditMu guards it.
type auditState struct {
	head  storage.AuditHead
	ready bool
}

// AuditRecordHash returns the hash of r chained to r.Prev, lower-case hex:
// SHA-256 over a domain string, then Prev (hex-decoded), Seq, Time (Unix
// nanoseconds), AdminUID, and Action, Target, Detail and Result each
// prefixed by its length. r.Hash is not covered.
func AuditRecordHash(r storage.AuditRecord) string {
	h := sha256.New()
	h.Write([]byte(auditRecordDomain))
	prev, _ := hex.DecodeString(r.Prev)
	b := binary.BigEndian.AppendUint32(nil, uint32(len(prev)))
	b = append(b, prev...)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
	b = binary.BigEndian.AppendUint32(b, r.AdminUID)
	for _, s := range []string{r.Action, r.Target, r.Detail, r.Result} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// AuditHeadDigest returns the SHA-256 digest the CA signs for head: every
// field but Signature and Chain, in a fixed binary encoding.
func AuditHeadDigest(head storage.AuditHead) []byte {
	b := []byte(auditHeadDomain)
	b = binary.BigEndian.AppendUint64(b, head.Seq)
	for _, s := range []string{head.Hash, head.AnchorHash, head.Taint} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, head.AnchorSeq)
	b = binary.BigEndian.AppendUint64(b, head.TaintSeq)
	b = binary.BigEndian.AppendUint64(b, uint64(head.SignedAt.UnixNano()))
	sum := sha256.Sum256(b)
	return sum[:]
}

// Audit records ev as the next record of the audit trail and signs the new
// head. It is the one place every admin action (and, later, node events)
// is recorded; callers record an action after doing it, with its result.
// A failure to record is returned and logged with the event, so that the
// event reaches the log even when the trail cannot take it.
func (a *Authority) Audit(ctx context.Context, ev AuditEvent) error {
	err := a.audit(ctx, ev)
	if err != nil {
		a.log.Error("audit record not written", slog.String("action", ev.Action), slog.String("target", ev.Target),
			slog.Int(logkey.AdminUID, int(ev.AdminUID)), slog.Any(logkey.Error, err), slog.Bool(logkey.Audit, true))
	}
	return err
}

func (a *Authority) audit(ctx context.Context, ev AuditEvent) error {
	st := a.store
	if ev.Action == "" {
		return errors.New("ca: audit event without an action")
	}
	result := AuditResultOK
	if ev.Err != nil {
		result = "error: " + ev.Err.Error()
	}
	a.auditMu.Lock()
	defer a.auditMu.Unlock()
	// Another server sharing the store may have moved the head since this
	// one read it: the append then fails with ErrExists, and the record is
	// chained again to the head as stored now.
	var rec storage.AuditRecord
	var head storage.AuditHead
	for attempt := 1; ; attempt++ {
		if err := a.loadAuditLocked(ctx, st); err != nil {
			return err
		}
		rec = storage.AuditRecord{
			Seq:      a.auditState.head.Seq + 1,
			Time:     a.cfg.Time().UTC(),
			AdminUID: ev.AdminUID,
			Action:   clip(ev.Action, storage.MaxAuditAction),
			Target:   clip(ev.Target, storage.MaxAuditText),
			Detail:   clip(ev.Detail, storage.MaxAuditText),
			Result:   clip(result, storage.MaxAuditText),
			Prev:     a.auditState.head.Hash,
		}
		rec.Hash = AuditRecordHash(rec)
		head = a.auditState.head
		head.Seq, head.Hash = rec.Seq, rec.Hash
		if err := a.signAuditHead(&head); err != nil {
			return err
		}
		err := st.AppendAudit(ctx, rec, head)
		if err == nil {
			break
		}
		a.auditState.ready = false // reread the head from the store next time
		if !errors.Is(err, storage.ErrExists) || attempt == auditAppendAttempts {
			return fmt.Errorf("ca: recording audit record %d: %w", rec.Seq, err)
		}
	}
	a.auditState.head = head
	a.log.Info("audit", slog.Uint64("seq", rec.Seq), slog.String("action", rec.Action), slog.String("target", rec.Target),
		slog.String("detail", rec.Detail), slog.String("result", rec.Result), slog.Int(logkey.AdminUID, int(rec.AdminUID)),
		slog.String("hash", rec.Hash), slog.Bool(logkey.Audit, true))
	return nil
}

// loadAuditLocked reads the head from the store the first time (and after
// a failed append). A head that does not verify (its signature, or the
// last record it names) is not signed over: the next head carries a
// taint naming the failure, which VerifyAudit reports until pruning has
// removed every record up to it.
func (a *Authority) loadAuditLocked(ctx context.Context, st AuditStore) error {
	if a.auditState.ready {
		return nil
	}
	head, last, err := st.AuditHead(ctx)
	if err != nil && !errors.Is(err, storage.ErrCorrupt) {
		return fmt.Errorf("ca: reading the audit head: %w", err)
	}
	var problem error
	switch {
	case err != nil:
		problem = err
	case head.Seq == 0 && last.Seq == 0:
	case last.Seq != head.Seq || last.Hash != head.Hash || AuditRecordHash(last) != last.Hash:
		problem = fmt.Errorf("the head names record %d, but the last record is %d and does not match it", head.Seq, last.Seq)
	default:
		problem = a.verifyHeadSignature(ctx, head)
	}
	if problem != nil && head.Taint == "" {
		head.Taint = fmt.Sprintf("at %s the trail failed verification: %v", a.cfg.Time().UTC().Format(time.RFC3339), problem)
		head.TaintSeq = max(head.Seq, last.Seq)
		a.log.Error("the audit trail does not verify; it is marked as tainted up to its last record", slog.Any(logkey.Error, problem),
			slog.Uint64("seq", head.TaintSeq), slog.Bool(logkey.Audit, true))
	}
	if last.Seq > head.Seq {
		// Continue after the last stored record, so that appends succeed.
		head.Seq, head.Hash = last.Seq, last.Hash
	}
	a.auditState = auditState{head: head, ready: true}
	return nil
}

// signAuditHead signs head with the current intermediate CA.
func (a *Authority) signAuditHead(head *storage.AuditHead) error {
	s := a.Snapshot()
	head.SignedAt = a.cfg.Time().UTC()
	sig, err := s.signer.signer.Sign(rand.Reader, AuditHeadDigest(*head), crypto.SHA256)
	if err != nil {
		return fmt.Errorf("ca: signing the audit head: %w", err)
	}
	head.Signature = sig
	head.Chain = append([][]byte{s.signer.cert.Raw}, s.signer.rec.UpstreamChain...)
	for _, r := range s.bundle.X509Authorities() {
		head.Chain = append(head.Chain, r.Raw)
	}
	return nil
}

// verifyHeadSignature checks the head's signature against auditRoots.
func (a *Authority) verifyHeadSignature(ctx context.Context, head storage.AuditHead) error {
	return VerifyAuditHead(head, a.auditRoots(ctx))
}

// auditRoots are the roots a head may chain to: those of the current
// trust bundle, and every earlier root of this authority whose private
// key file is still in the key directory and matches its certificate, so
// that a head signed before the root was replaced (a root past its
// lifetime is replaced at start) still verifies. A root record added to
// the database without its key file is not trusted: editing the database
// is what the trail must detect.
func (a *Authority) auditRoots(ctx context.Context) *x509.CertPool {
	roots := x509.NewCertPool()
	for _, r := range a.Snapshot().bundle.X509Authorities() {
		roots.AddCert(r)
	}
	recs, err := a.store.ListKeys(ctx)
	if err != nil {
		a.log.Warn("audit: listing earlier roots failed; verifying with the current bundle only", slog.Any(logkey.Error, err))
		return roots
	}
	for _, rec := range recs {
		if rec.Kind != kindRoot {
			continue
		}
		if k, err := loadKey(&a.cfg, rec); err == nil {
			roots.AddCert(k.cert)
		}
	}
	return roots
}

// VerifyAuditHead checks head's signature: its first certificate must
// chain to roots and have signed AuditHeadDigest(head).
func VerifyAuditHead(head storage.AuditHead, roots *x509.CertPool) error {
	if len(head.Chain) == 0 || len(head.Signature) == 0 {
		return errors.New("the head is not signed")
	}
	certs := make([]*x509.Certificate, len(head.Chain))
	for i, der := range head.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("the head's certificate %d does not parse: %w", i, err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	// Validity periods are not judged, only the chain of signatures: the
	// head is evidence of which CA key signed it, and a head signed while
	// the wall clock was wrong, or long ago, is still that.
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: certs[0].NotBefore.Add(time.Second),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("the head's signer is not a CA of this trust domain: %w", err)
	}
	digest := AuditHeadDigest(head)
	ok := false
	switch pub := certs[0].PublicKey.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, digest, head.Signature)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest, head.Signature) == nil
	default:
		return fmt.Errorf("the head's signer has an unsupported key type %T", pub)
	}
	if !ok {
		return errors.New("the head's signature does not match its content")
	}
	return nil
}

// AuditReport is the outcome of VerifyAudit.
type AuditReport struct {
	// Records is how many records were checked.
	Records int `json:"records"`
	// FirstSeq and LastSeq are the numbers of the first and last records
	// kept (0 when there are none).
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Head is the hash of the signed head; SignedAt when it was signed,
	// and SignedBy the subject of the certificate that signed it.
	Head     string    `json:"head"`
	SignedAt time.Time `json:"signed_at"`
	SignedBy string    `json:"signed_by,omitempty"`
	// OK is true when everything verified; otherwise BadSeq is the first
	// record found altered, missing or out of place (0 when the head
	// itself fails) and Problem says what is wrong.
	OK      bool   `json:"ok"`
	BadSeq  uint64 `json:"bad_seq,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// VerifyAudit checks the whole audit trail in one read of the store: the
// numbering, every record's hash and link, the head against the last
// record, the head's signature against the trust bundle and the earlier
// roots whose keys the server holds (auditRoots), and the taint. It returns a report; the error is for a trail that could not be
// read at all.
func (a *Authority) VerifyAudit(ctx context.Context) (AuditReport, error) {
	st := a.store
	roots := a.auditRoots(ctx)
	var v auditVerifier
	head, err := st.ScanAudit(ctx, 0, v.next)
	if err != nil {
		return AuditReport{}, fmt.Errorf("ca: reading the audit trail: %w", err)
	}
	return v.finish(head, roots), nil
}

// auditVerifier checks records in order, remembering the first failure.
type auditVerifier struct {
	recs []auditCheck
}

// auditCheck is what finish needs of each record after the head is known.
type auditCheck struct {
	seq      uint64
	prevHash string // the record's stored Prev
	hash     string // the record's stored Hash
	problem  string // found by next (a decode error or a wrong hash)
}

func (v *auditVerifier) next(rec storage.AuditRecord, err error) bool {
	c := auditCheck{seq: rec.Seq, prevHash: rec.Prev, hash: rec.Hash}
	switch {
	case err != nil:
		c.problem = fmt.Sprintf("record %d does not decode: %v", rec.Seq, err)
	case AuditRecordHash(rec) != rec.Hash:
		c.problem = fmt.Sprintf("record %d was altered: its content does not match its hash", rec.Seq)
	}
	v.recs = append(v.recs, c)
	return true
}

func (v *auditVerifier) finish(head storage.AuditHead, roots *x509.CertPool) AuditReport {
	rep := AuditReport{Records: len(v.recs), Head: head.Hash, SignedAt: head.SignedAt}
	if len(head.Chain) > 0 {
		if c, err := x509.ParseCertificate(head.Chain[0]); err == nil {
			rep.SignedBy = c.Subject.CommonName
		}
	}
	if len(v.recs) > 0 {
		rep.FirstSeq, rep.LastSeq = v.recs[0].seq, v.recs[len(v.recs)-1].seq
	}
	bad := func(seq uint64, format string, args ...any) AuditReport {
		rep.BadSeq, rep.Problem = seq, fmt.Sprintf(format, args...)
		return rep
	}
	wantSeq, wantPrev := head.AnchorSeq+1, head.AnchorHash
	for i, c := range v.recs {
		if c.problem != "" {
			return bad(c.seq, "%s", c.problem)
		}
		if c.seq != wantSeq {
			if c.seq > wantSeq {
				return bad(wantSeq, "record %d is missing (the next record kept is %d)", wantSeq, c.seq)
			}
			return bad(c.seq, "record %d is out of place (expected record %d)", c.seq, wantSeq)
		}
		if c.prevHash != wantPrev {
			// The chain breaks before c. If it breaks after c too, c is
			// the record that was replaced; otherwise the one before it
			// was altered and re-hashed (or c's link was).
			if i+1 < len(v.recs) && v.recs[i+1].prevHash != c.hash || i+1 == len(v.recs) && head.Hash != c.hash {
				return bad(c.seq, "record %d was altered or replaced: it links to neither its neighbours", c.seq)
			}
			if i == 0 {
				return bad(c.seq, "record %d was altered: it does not chain to the anchor (record %d) of the signed head", c.seq, head.AnchorSeq)
			}
			return bad(v.recs[i-1].seq, "record %d was altered: record %d's link to it does not match", v.recs[i-1].seq, c.seq)
		}
		wantSeq, wantPrev = c.seq+1, c.hash
	}
	switch {
	case head.Seq != wantSeq-1:
		if head.Seq > wantSeq-1 {
			return bad(wantSeq, "record %d is missing: the signed head names record %d as the last", wantSeq, head.Seq)
		}
		return bad(head.Seq+1, "record %d is not covered by the signed head, which ends at record %d", head.Seq+1, head.Seq)
	case head.Hash != wantPrev:
		return bad(head.Seq, "record %d was altered: the signed head names another hash for it", head.Seq)
	}
	if head.Seq == 0 && len(head.Signature) == 0 {
		rep.OK = true // an empty trail, never signed
		return rep
	}
	if err := VerifyAuditHead(head, roots); err != nil {
		return bad(0, "the head does not verify: %v", err)
	}
	if head.Taint != "" && head.TaintSeq > head.AnchorSeq {
		return bad(head.TaintSeq, "records up to %d are not trustworthy: %s", head.TaintSeq, head.Taint)
	}
	rep.OK = true
	return rep
}

// AuditList returns up to limit records numbered above after whose Time
// is not before since (zero: all), in order, and whether more follow.
func (a *Authority) AuditList(ctx context.Context, after uint64, since time.Time, limit int) ([]storage.AuditRecord, bool, error) {
	st := a.store
	out := []storage.AuditRecord{}
	more := false
	var scanErr error
	_, err := st.ScanAudit(ctx, after, func(r storage.AuditRecord, err error) bool {
		if err != nil {
			scanErr = err
			return false
		}
		if r.Time.Before(since) {
			return true
		}
		if len(out) == limit {
			more = true
			return false
		}
		out = append(out, r)
		return true
	})
	if err == nil {
		err = scanErr
	}
	if err != nil {
		return nil, false, fmt.Errorf("ca: reading the audit trail: %w", err)
	}
	return out, more, nil
}

// pruneAudit deletes the records older than the retention on the clock
// pruning trusts, and records the pruning as a record of its own, so the
// trail shows where and when it was cut; the new head anchors the first
// kept record to the last deleted one, so the rest still verifies.
func (a *Authority) pruneAudit(ctx context.Context) (int, error) {
	st := a.store
	cutoff := a.trustedNow().Add(-a.cfg.AuditRetention)
	var through storage.AuditRecord
	var scanErr error
	if _, err := st.ScanAudit(ctx, 0, func(r storage.AuditRecord, err error) bool {
		if err != nil {
			scanErr = err
			return false
		}
		if !r.Time.Before(cutoff) {
			return false
		}
		through = r
		return true
	}); err != nil {
		return 0, err
	}
	if scanErr != nil {
		// Do not cut a trail that does not read: it is evidence.
		return 0, scanErr
	}
	if through.Seq == 0 {
		return 0, nil
	}
	a.auditMu.Lock()
	defer a.auditMu.Unlock()
	if err := a.loadAuditLocked(ctx, st); err != nil {
		return 0, err
	}
	rec := storage.AuditRecord{
		Seq: a.auditState.head.Seq + 1, Time: a.cfg.Time().UTC(), AdminUID: uint32(os.Geteuid()),
		Action: AuditPrune, Target: fmt.Sprintf("records %d to %d", a.auditState.head.AnchorSeq+1, through.Seq),
		Detail: "older than " + cutoff.Format(time.RFC3339) + " (retention " + a.cfg.AuditRetention.String() + ")",
		Result: AuditResultOK, Prev: a.auditState.head.Hash,
	}
	rec.Hash = AuditRecordHash(rec)
	head := a.auditState.head
	head.Seq, head.Hash = rec.Seq, rec.Hash
	head.AnchorSeq, head.AnchorHash = through.Seq, through.Hash
	if head.TaintSeq <= head.AnchorSeq {
		head.Taint, head.TaintSeq = "", 0
	}
	if err := a.signAuditHead(&head); err != nil {
		return 0, err
	}
	n, err := st.PruneAudit(ctx, through.Seq, rec, head)
	if err != nil {
		a.auditState.ready = false
		return 0, fmt.Errorf("ca: pruning the audit trail: %w", err)
	}
	a.auditState.head = head
	a.log.Info("audit", slog.Uint64("seq", rec.Seq), slog.String("action", rec.Action), slog.String("target", rec.Target),
		slog.String("detail", rec.Detail), slog.String("result", rec.Result), slog.String("hash", rec.Hash), slog.Bool(logkey.Audit, true))
	return n, nil
}

// clip shortens s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len(auditTruncateSuffix)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.ToValidUTF8(s[:cut], "") + auditTruncateSuffix
}
