package ca

// Key rotation with overlap. Every signing key goes through the states
// prepared, active and retired, with the times of each step in its record,
// so that a restart resumes a rotation where it stood:
//
//	root:          prepared (in the bundle)  → active (signs intermediates) → retired (in the bundle)     → removed
//	               RootPrepareLead before      RootTTL − overlap               until its last intermediate
//	               it activates                                                expires
//	intermediate:  prepared (key only)       → active (signs SVIDs)          → retired (not published)    → removed
//	               shortly before half-life    half its life                   until it expires
//	JWT key:       prepared (in the JWKS)    → active (signs JWT-SVIDs)      → retired (in the JWKS)      → removed
//	               JWTPrepareLead before       JWTKeyTTL                       until its last token expires
//
// A verifier therefore always holds a key before anything it must accept
// is signed with it, and keeps it until nothing signed with it is valid.
// A root activating makes the intermediate rotate at once, under it.
// Every change of the bundle or the JWKS is published as a new snapshot.
// Key material of a removed key is deleted (file first, then record).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// Defaults of the key schedule.
const (
	// DefaultRootPrepareLead is how long before it signs the next root
	// enters the trust bundle, unless the root signs for less than twice
	// that (then half of that time).
	DefaultRootPrepareLead = 30 * 24 * time.Hour
	// DefaultJWTKeyTTL is how long a JWT signing key signs.
	DefaultJWTKeyTTL = 24 * time.Hour
	// DefaultJWTPrepareLead is how long the next JWT key is published
	// before it signs: the time verifiers have to refresh their JWKS.
	DefaultJWTPrepareLead = 10 * time.Minute
	// MaxKeyTTL bounds every key lifetime and lead of the schedule.
	MaxKeyTTL = 20 * 365 * 24 * time.Hour
)

// The kinds of key RotateKey and KeyStatus name.
const (
	RotateRoot         = "root"
	RotateIntermediate = "intermediate"
	RotateJWT          = "jwt"
)

// ErrUnknownKeyKind is wrapped by RotateKey for a kind it does not know.
var ErrUnknownKeyKind = errors.New("ca: unknown key kind")

// ErrUpstreamRoot is wrapped by RotateKey for the root under an upstream
// authority: the root is the upstream's, rotated there.
var ErrUpstreamRoot = errors.New("ca: the root belongs to the upstream authority; rotate it there (new intermediates then chain to the new root)")

// ErrNotLeader is wrapped by RotateKey for a root rotation asked of a
// server that shares its store with others and does not lead them.
var ErrNotLeader = errors.New("ca: this server does not lead the servers of its store")

// leads reports whether this server does the singleton work of its store
// (root rotation, pruning, revoking a dead server's serials), and returns
// a channel closed when that may change (nil: never). A store only this
// process opens has no election: it always leads.
func (a *Authority) leads() (bool, <-chan struct{}) {
	if e, ok := a.store.(storage.Elector); ok {
		return e.Lead()
	}
	return true, nil
}

// Audit actions of the key schedule besides AuditKeyRotate.
const (
	// AuditKeyPrepare: a next root or JWT key was published.
	AuditKeyPrepare = "key.prepare"
	// AuditKeyRemove: a retired root or JWT key left the bundle, and its
	// private key was deleted.
	AuditKeyRemove = "key.remove"
)

// keyCreate is the action of a key made with none to replace (first
// start); it is logged, not audited.
const keyCreate = "key.create"

// publicKind is the name of a record kind in the API and CLI.
func publicKind(kind string) string {
	switch kind {
	case kindRoot:
		return RotateRoot
	case kindIntermediate:
		return RotateIntermediate
	}
	return kind
}

// interPrepareLead is how long before its rotation the next intermediate
// key is generated.
func (c *Config) interPrepareLead() time.Duration { return min(c.IntermediateTTL/8, time.Hour) }

// keyEvent is one step of the schedule, for the log and the audit trail.
type keyEvent struct {
	action string // AuditKeyPrepare, AuditKeyRotate, AuditKeyRemove
	kind   string // record kind
	id     string
	detail string
	audit  bool
}

// advanceKeysLocked brings the key hierarchy to where its schedule says it
// must be now, and with force (RotateRoot, RotateIntermediate, RotateJWT)
// replaces that kind's active key at once. The steps already taken when
// an error stops it are kept and published. Callers hold a.mu.
func (a *Authority) advanceKeysLocked(ctx context.Context, force string) ([]keyEvent, error) {
	cfg := &a.cfg
	now := cfg.Time()
	old := a.keys
	ks := old.clone()
	var events []keyEvent
	var err error
	if leading, _ := a.leads(); leading && cfg.Upstream == nil {
		// Roots are shared: only the leader prepares and activates
		// them; the others follow the records (reloadKeys). Under an
		// upstream, its roots follow the intermediates.
		err = a.stepRoots(ctx, ks, now, force, &events)
	}
	if err == nil {
		err = a.stepIntermediate(ctx, ks, now, force, &events)
	}
	if cfg.Upstream != nil || slices.ContainsFunc(ks.roots, isUpstreamRoot) {
		// The upstream's roots follow the intermediates recorded with
		// them, also after leaving the upstream, until they expire.
		recs, lerr := cfg.Store.ListKeys(ctx)
		if lerr != nil {
			err = errors.Join(err, fmt.Errorf("ca: listing keys: %w", lerr))
		} else {
			ks.roots = upstreamRoots(ks, recs, now)
			for _, r := range old.roots {
				if isUpstreamRoot(r) && !slices.ContainsFunc(ks.roots, func(n *caKey) bool { return n.cert.Equal(r.cert) }) {
					events = append(events, keyEvent{AuditKeyRemove, kindRoot, r.id,
						"upstream root CA left the trust bundle: every intermediate chaining to it has expired", true})
				}
			}
		}
	}
	if err == nil || errors.Is(err, ErrUpstream) {
		// An upstream that fails delays the intermediate, not the JWT key.
		err = errors.Join(err, a.stepJWT(ctx, ks, now, force, &events))
	}
	removed := a.dropRetired(ks, now, &events)
	a.keys = ks
	if ks.inter != old.inter && a.revocations != nil {
		state := a.revocations.clone()
		if cerr := a.signCRLLocked(state); cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			a.revocations = state
		}
	}
	if a.snap.Load() != nil && (ks.inter != old.inter || ks.jwt != old.jwt || !slices.Equal(ks.roots, old.roots)) {
		a.publishLocked()
	}
	a.removeKeys(ctx, ks, now, removed)
	for _, ev := range events {
		a.log.Info("signing key "+strings.TrimPrefix(ev.action, "key."), slog.String("kind", publicKind(ev.kind)),
			slog.String(logkey.KeyID, ev.id), slog.String("detail", ev.detail))
	}
	return events, err
}

func (a *Authority) stepRoots(ctx context.Context, ks *keySet, now time.Time, force string, events *[]keyEvent) error {
	cfg := &a.cfg
	if force == RotateRoot {
		if n := ks.nextRoot; n != nil {
			// Made alongside the key feared compromised: never used.
			ks.replaceRoot(n, n.with(retire(n.rec, now, now)))
			ks.nextRoot = nil
		}
		k, err := createRoot(ctx, cfg, now, storage.KeyPrepared)
		if err != nil {
			return err
		}
		ks.roots = append(ks.roots, k)
		ks.nextRoot = k
	} else if ks.nextRoot == nil && !now.Before(cfg.retiresAt(ks.root).Add(-cfg.RootPrepareLead)) {
		act := laterOf(cfg.retiresAt(ks.root), now.Add(cfg.RootPrepareLead))
		if last := ks.root.cert.NotAfter.Add(-cfg.IntermediateTTL); act.After(last) {
			// Late (the server was down): activate while the current root
			// can still cover a full intermediate.
			act = laterOf(last, now)
		}
		k, err := createRoot(ctx, cfg, act, storage.KeyPrepared)
		if err != nil {
			return err
		}
		ks.roots = append(ks.roots, k)
		ks.nextRoot = k
		*events = append(*events, keyEvent{AuditKeyPrepare, kindRoot, k.id,
			"next root CA in the trust bundle; it signs intermediates from " + utc(act), true})
	}
	n := ks.nextRoot
	if n == nil || now.Before(n.rec.ActivatesAt) && force != RotateRoot {
		return nil
	}
	rec := activate(n.rec, now, n.cert.NotAfter.Add(-cfg.rootOverlap()))
	if err := cfg.Store.PutKey(ctx, rec); err != nil {
		return fmt.Errorf("ca: recording root %s active: %w", n.id, err)
	}
	prev := ks.root
	var inters []storage.Key
	if recs, err := cfg.Store.ListKeys(ctx); err == nil {
		inters = recs
	}
	if ks.inter != nil {
		inters = append(inters, ks.inter.rec)
	}
	retired := retire(prev.rec, now, rootRemoveAt(prev, inters, now))
	if err := cfg.Store.PutKey(ctx, retired); err != nil {
		// The new root is recorded active and activated later, so a
		// restart picks it; the stale state is fixed then.
		a.log.Warn("recording the retired root failed", slog.String(logkey.KeyID, prev.id), slog.Any(logkey.Error, err))
	}
	ks.replaceRoot(prev, prev.with(retired))
	nn := n.with(rec)
	ks.replaceRoot(n, nn)
	ks.root, ks.nextRoot = nn, nil
	how := "scheduled"
	if force == RotateRoot {
		how = "forced"
	}
	*events = append(*events, keyEvent{AuditKeyRotate, kindRoot, n.id, fmt.Sprintf(
		"%s rotation of the root CA: new intermediates chain to it; root %s stays in the trust bundle until %s",
		how, prev.id, utc(retired.RemoveAt)), true})
	return nil
}

func (a *Authority) stepIntermediate(ctx context.Context, ks *keySet, now time.Time, force string, events *[]keyEvent) error {
	cfg := &a.cfg
	due := ks.inter == nil || force == RotateIntermediate || !now.Before(ks.inter.rotateAt()) ||
		!a.underActiveRoot(ks, ks.inter)
	if due && force == RotateIntermediate && ks.nextInter != nil {
		// Made alongside the key feared compromised: never used.
		a.discard(ctx, ks.nextInter.rec, now)
		ks.nextInter = nil
	}
	if ks.nextInter == nil && (due || !now.Before(ks.inter.rotateAt().Add(-cfg.interPrepareLead()))) {
		act := now
		if !due {
			act = ks.inter.rotateAt()
		}
		k, err := prepareIntermediate(ctx, cfg, act)
		if err != nil {
			return err
		}
		ks.nextInter = k
	}
	if !due {
		return nil
	}
	var k *caKey
	var err error
	if cfg.Upstream != nil {
		k, err = a.activateUnderUpstream(ctx, ks.nextInter)
	} else {
		k, err = activateIntermediate(ctx, cfg, ks.root, ks.nextInter)
	}
	if err != nil {
		return err
	}
	prev := ks.inter
	ks.inter, ks.nextInter = k, nil
	how := "scheduled rotation of the intermediate CA"
	if force == RotateIntermediate {
		how = "forced rotation of the intermediate CA"
	} else if force == RotateRoot || prev != nil && !a.underActiveRoot(ks, prev) {
		how = "rotation of the intermediate CA under the new root"
		if cfg.Upstream != nil {
			how = "rotation of the intermediate CA under the upstream authority"
		}
	}
	if prev != nil {
		retired := retire(prev.rec, now, prev.cert.NotAfter)
		if err := cfg.Store.PutKey(ctx, retired); err != nil {
			// The new key is recorded active and activated later, so a
			// restart picks it.
			a.log.Warn("recording retired intermediate failed", slog.String(logkey.KeyID, prev.id), slog.Any(logkey.Error, err))
		}
		how += fmt.Sprintf("; intermediate %s retired, its SVIDs valid until they expire (at the latest %s)", prev.id, utc(prev.cert.NotAfter))
	}
	action := AuditKeyRotate
	if prev == nil {
		action, how = keyCreate, "first intermediate CA"
	}
	*events = append(*events, keyEvent{action, kindIntermediate, k.id, how, prev != nil})
	return nil
}

func (a *Authority) stepJWT(ctx context.Context, ks *keySet, now time.Time, force string, events *[]keyEvent) error {
	cfg := &a.cfg
	j := ks.jwt
	active, next := j.active, j.next
	keys := j.list()
	changed := false
	var activated *jwtKey
	switch {
	case force == RotateJWT || active == nil && next == nil:
		if next != nil {
			a.discard(ctx, next.rec, now)
			keys = slices.DeleteFunc(keys, func(k *jwtKey) bool { return k == next })
			next = nil
		}
		k, err := createJWTKey(ctx, cfg, now, storage.KeyActive)
		if err != nil {
			return err
		}
		keys = append(keys, k)
		activated, changed = k, true
	case next == nil && !now.Before(cfg.jwtRetiresAt(active).Add(-cfg.JWTPrepareLead)):
		act := laterOf(cfg.jwtRetiresAt(active), now.Add(cfg.JWTPrepareLead))
		if last := active.rec.NotAfter.Add(-DefaultJWTTTL); act.After(last) {
			act = laterOf(last, now)
		}
		k, err := createJWTKey(ctx, cfg, act, storage.KeyPrepared)
		if err != nil {
			return err
		}
		keys = append(keys, k)
		next, changed = k, true
		*events = append(*events, keyEvent{AuditKeyPrepare, kindJWT, k.id, "next JWT signing key published; it signs from " + utc(act), true})
	}
	if activated == nil && next != nil && (active == nil || !now.Before(next.rec.ActivatesAt)) && next.signer == nil {
		// Prepared by an earlier run: its private key is read now.
		signer, err := loadJWTSigner(cfg.keys, next)
		if err != nil {
			// Unusable: the active key keeps signing (or a new one is
			// made), and a new next key is prepared with a full lead.
			a.log.Error("the prepared JWT key cannot sign; it is discarded", slog.String(logkey.KeyID, next.id), slog.Any(logkey.Error, err))
			a.discard(ctx, next.rec, now)
			keys = slices.DeleteFunc(keys, func(k *jwtKey) bool { return k == next })
			next, changed = nil, true
			if active == nil {
				k, err := createJWTKey(ctx, cfg, now, storage.KeyActive)
				if err != nil {
					return a.setJWT(ks, active, next, keys, changed, err)
				}
				keys = append(keys, k)
				activated = k
			}
		} else {
			k := next.with(next.rec)
			k.signer = signer
			keys[slices.Index(keys, next)] = k
			next = k
		}
	}
	if activated == nil && next != nil && (active == nil || !now.Before(next.rec.ActivatesAt)) {
		k := next
		rec := activate(k.rec, now, now.Add(cfg.JWTKeyTTL))
		rec.NotAfter = rec.RetiresAt.Add(cfg.JWTPrepareLead + DefaultJWTTTL + Backdate)
		if err := cfg.Store.PutKey(ctx, rec); err != nil {
			return a.setJWT(ks, active, next, keys, changed, fmt.Errorf("ca: recording JWT key %s active: %w", k.id, err))
		}
		k = k.with(rec)
		keys[slices.IndexFunc(keys, func(x *jwtKey) bool { return x.id == k.id })] = k
		next, activated, changed = nil, k, true
	}
	if activated != nil {
		how := "scheduled rotation of the JWT signing key"
		if force == RotateJWT {
			how = "forced rotation of the JWT signing key"
		}
		if active != nil {
			remove := earlierOf(active.rec.NotAfter, a.jwtTokensExpire(now))
			retired := retire(active.rec, now, remove)
			if err := cfg.Store.PutKey(ctx, retired); err != nil {
				a.log.Warn("recording retired JWT key failed", slog.String(logkey.KeyID, active.id), slog.Any(logkey.Error, err))
			}
			keys[slices.IndexFunc(keys, func(x *jwtKey) bool { return x.id == active.id })] = active.with(retired)
			how += fmt.Sprintf("; key %s stays published until %s, when its last token has expired", active.id, utc(remove))
		}
		action := AuditKeyRotate
		if active == nil {
			action, how = keyCreate, "first JWT signing key"
		}
		*events = append(*events, keyEvent{action, kindJWT, activated.id, how, active != nil})
		active = activated
	}
	return a.setJWT(ks, active, next, keys, changed, nil)
}

// setJWT replaces the JWT key set of ks when it changed, and returns err.
func (a *Authority) setJWT(ks *keySet, active, next *jwtKey, keys []*jwtKey, changed bool, err error) error {
	if !changed {
		return err
	}
	set, serr := newJWTKeySet(a.cfg.TrustDomain, active, next, keys)
	if serr != nil {
		return errors.Join(err, serr)
	}
	ks.jwt = set
	return err
}

// jwtTokensExpire bounds the exp of every token signed until now: tokens
// of this process live at most the longest JWT TTL it has had in force,
// those of an earlier process at most DefaultJWTTTL past this one's start;
// plus the second an iat may be moved forward, and Backdate for verifiers'
// clocks.
func (a *Authority) jwtTokensExpire(now time.Time) time.Time {
	t := laterOf(now.Add(time.Duration(a.jwtTTLMax.Load())), a.started.Add(DefaultJWTTTL))
	return t.Add(time.Second + Backdate)
}

// dropRetired takes retired roots and JWT keys past their RemoveAt out of
// the bundle and the JWKS, and returns them for removeKeys.
func (a *Authority) dropRetired(ks *keySet, now time.Time, events *[]keyEvent) []storage.Key {
	var out []storage.Key
	ks.roots = slices.DeleteFunc(ks.roots, func(r *caKey) bool {
		if r.rec.State != storage.KeyRetired || now.Before(removeAt(r.rec)) {
			return false
		}
		out = append(out, r.rec)
		if r.rec.ActivatesAt.IsZero() || r.rec.RemoveAt.After(r.rec.RetiresAt) {
			*events = append(*events, keyEvent{AuditKeyRemove, kindRoot, r.id, "retired root CA left the trust bundle: every certificate chaining to it has expired", true})
		}
		return true
	})
	var keep []*jwtKey
	for _, k := range ks.jwt.list() {
		if !a.cfg.owns(k.rec) && !now.Before(k.rec.NotAfter) {
			continue // another server's, past its last token
		}
		if k.rec.State == storage.KeyRetired && !now.Before(removeAt(k.rec)) {
			out = append(out, k.rec)
			if k.rec.RemoveAt.After(k.rec.RetiresAt) {
				*events = append(*events, keyEvent{AuditKeyRemove, kindJWT, k.id, "retired JWT key left the JWKS: every token it signed has expired", true})
			}
			continue
		}
		keep = append(keep, k)
	}
	if len(keep) != len(ks.jwt.keys) {
		if set, err := newJWTKeySet(a.cfg.TrustDomain, ks.jwt.active, ks.jwt.next, keep); err == nil {
			ks.jwt = set
		}
	}
	return out
}

// discard retires a prepared key that never signed: it is removed at once
// (by the removal that follows in the same step, or the next one).
func (a *Authority) discard(ctx context.Context, rec storage.Key, now time.Time) {
	if err := a.cfg.Store.PutKey(ctx, retire(rec, now, now)); err != nil {
		a.log.Warn("recording a discarded key failed", slog.String(logkey.KeyID, rec.ID), slog.Any(logkey.Error, err))
	}
}

// removeKeys deletes the private key file, then the record, of every
// retired key past its RemoveAt: those dropRetired took out of the bundle
// (given) and any other in the store (retired intermediates, keys left by
// an earlier run). A key still in ks is never removed. Failures are
// logged; the next step tries again.
func (a *Authority) removeKeys(ctx context.Context, ks *keySet, now time.Time, given []storage.Key) {
	recs, err := a.cfg.Store.ListKeys(ctx)
	if err != nil {
		a.log.Warn("listing keys to remove failed", slog.Any(logkey.Error, err))
		recs = given
	}
	inUse := map[string]bool{}
	if ks.inter != nil {
		inUse[ks.inter.id] = true
	}
	if ks.nextInter != nil {
		inUse[ks.nextInter.id] = true
	}
	for _, r := range ks.roots {
		inUse[r.id] = true
	}
	for id := range ks.jwt.keys {
		inUse[id] = true
	}
	leading, _ := a.leads()
	for _, rec := range recs {
		if inUse[rec.ID] {
			continue
		}
		if !a.cfg.owns(rec) || rec.Kind == kindRoot && !leading {
			// Another server's key (or a shared root, which the leader
			// removes): its owner removes it. The leader deletes the
			// record of a server that left, once nothing it signed is
			// valid; its private key stays with it.
			if leading && rec.Kind != kindRoot && !now.Before(laterOf(removeAt(rec), rec.NotAfter)) {
				if err := a.cfg.Store.DeleteKey(ctx, rec.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
					a.log.Warn("deleting another server's expired key record failed", slog.String(logkey.KeyID, rec.ID), slog.Any(logkey.Error, err))
				}
			}
			continue
		}
		if rec.State != storage.KeyRetired || now.Before(removeAt(rec)) {
			continue
		}
		if err := a.cfg.keys.remove(keyRef{rec.ID, rec.PrivateRef}); err != nil {
			a.log.Warn("removing a retired key failed", slog.String(logkey.KeyID, rec.ID), slog.Any(logkey.Error, err))
			continue
		}
		if err := a.cfg.Store.DeleteKey(ctx, rec.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
			a.log.Warn("deleting a retired key record failed", slog.String(logkey.KeyID, rec.ID), slog.Any(logkey.Error, err))
			continue
		}
		a.log.Debug("retired key removed", slog.String("kind", publicKind(rec.Kind)), slog.String(logkey.KeyID, rec.ID))
	}
}

// isUpstreamRoot reports whether r is a root of an upstream authority,
// which has no record of its own.
func isUpstreamRoot(r *caKey) bool { return r.rec.ID == "" }

// underActiveRoot reports whether inter is signed by the active root, or
// under an upstream by the upstream.
func (a *Authority) underActiveRoot(ks *keySet, inter *caKey) bool {
	if a.cfg.Upstream != nil {
		return len(inter.rec.UpstreamRoots) > 0
	}
	return inter.cert.CheckSignatureFrom(ks.root.cert) == nil
}

// nextKeyEventLocked is when the key schedule next has something to do.
func (a *Authority) nextKeyEventLocked() time.Time {
	cfg, ks := &a.cfg, a.keys
	t := ks.inter.rotateAt()
	if ks.nextInter == nil {
		t = t.Add(-cfg.interPrepareLead())
	}
	if leading, _ := a.leads(); ks.root == nil || !leading {
		// Under an upstream its roots follow the intermediates; on a
		// follower the leader steps the roots and the watch tells.
	} else if ks.nextRoot == nil {
		t = earlierOf(t, cfg.retiresAt(ks.root).Add(-cfg.RootPrepareLead))
	} else {
		t = earlierOf(t, ks.nextRoot.rec.ActivatesAt)
	}
	if j := ks.jwt; j.next == nil {
		t = earlierOf(t, cfg.jwtRetiresAt(j.active).Add(-cfg.JWTPrepareLead))
	} else {
		t = earlierOf(t, j.next.rec.ActivatesAt)
	}
	for _, r := range ks.roots {
		if r.rec.State == storage.KeyRetired {
			t = earlierOf(t, removeAt(r.rec))
		}
		if isUpstreamRoot(r) && !r.until.IsZero() {
			t = earlierOf(t, r.until)
		}
	}
	for _, k := range ks.jwt.keys {
		if k.rec.State == storage.KeyRetired {
			t = earlierOf(t, removeAt(k.rec))
		}
	}
	return t
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlierOf(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// advanceKeys runs the key schedule now and audits what it did. An
// upstream is asked to sign a due intermediate before a.mu is taken.
func (a *Authority) advanceKeys(ctx context.Context, force string, adminUID uint32) ([]keyEvent, error) {
	if force == "" {
		a.presignIntermediate(ctx)
	}
	a.mu.Lock()
	events, err := a.advanceKeysLocked(ctx, force)
	a.presigned = nil // an answer is for this step only
	a.mu.Unlock()
	a.auditKeyEvents(ctx, events, adminUID)
	return events, err
}

func (a *Authority) auditKeyEvents(ctx context.Context, events []keyEvent, adminUID uint32) {
	for _, ev := range events {
		if ev.audit {
			a.Audit(ctx, AuditEvent{AdminUID: adminUID, Action: ev.action, Target: ev.id, Detail: ev.detail})
		}
	}
}

// KeyRotation is what RotateKey did.
type KeyRotation struct {
	// Kind is RotateRoot, RotateIntermediate or RotateJWT.
	Kind string `json:"kind"`
	// Active is the new active key of Kind.
	Active KeyStatus `json:"active"`
	// Retired is the key it replaced, if any: it signs no more and stays
	// published (a root in the bundle, a JWT key in the JWKS) until what
	// it signed has expired.
	Retired *KeyStatus `json:"retired,omitempty"`
}

// RotateKey replaces the active key of kind (RotateRoot,
// RotateIntermediate or RotateJWT) now, as after a suspected compromise:
// a new key signs from now on, and the one it replaces is retired but
// stays published until what it signed has expired, so nothing valid is
// refused. A new root enters the bundle and signs a new intermediate at
// once; a prepared key of the kind, made alongside the one feared
// compromised, is discarded. The rotation (or its failure) is in the
// audit trail under adminUID.
func (a *Authority) RotateKey(ctx context.Context, kind string, adminUID uint32) (KeyRotation, error) {
	if kind != RotateRoot && kind != RotateIntermediate && kind != RotateJWT {
		err := &InvalidError{Field: "kind", Value: kind, Err: fmt.Errorf("%w: want root, intermediate or jwt", ErrUnknownKeyKind)}
		a.Audit(ctx, AuditEvent{AdminUID: adminUID, Action: AuditKeyRotate, Target: kind, Detail: "forced rotation", Err: err})
		return KeyRotation{}, err
	}
	if kind == RotateRoot && a.cfg.Upstream != nil {
		err := &InvalidError{Field: "kind", Value: kind, Err: ErrUpstreamRoot}
		a.Audit(ctx, AuditEvent{AdminUID: adminUID, Action: AuditKeyRotate, Target: kind, Detail: "forced rotation", Err: err})
		return KeyRotation{}, err
	}
	if leading, _ := a.leads(); kind == RotateRoot && !leading {
		err := fmt.Errorf("%w: the root is shared by every server of the store; rotate it on the server that leads (its log says \"this server leads\")", ErrNotLeader)
		a.Audit(ctx, AuditEvent{AdminUID: adminUID, Action: AuditKeyRotate, Target: kind, Detail: "forced rotation of the root key", Err: err})
		return KeyRotation{}, err
	}
	a.mu.Lock()
	var prev string
	switch kind {
	case RotateRoot:
		prev = a.keys.root.id
	case RotateIntermediate:
		prev = a.keys.inter.id
	case RotateJWT:
		prev = a.keys.jwt.active.id
	}
	events, err := a.advanceKeysLocked(ctx, kind)
	var cur string
	switch kind {
	case RotateRoot:
		cur = a.keys.root.id
	case RotateIntermediate:
		cur = a.keys.inter.id
	case RotateJWT:
		cur = a.keys.jwt.active.id
	}
	a.mu.Unlock()
	a.kickRotation()
	a.auditKeyEvents(ctx, events, adminUID)
	if err == nil && cur == prev {
		err = fmt.Errorf("ca: the %s key did not change", kind)
	}
	if err != nil {
		a.Audit(ctx, AuditEvent{AdminUID: adminUID, Action: AuditKeyRotate, Target: kind, Detail: "forced rotation of the " + kind + " key", Err: err})
		return KeyRotation{}, err
	}
	sts, err := a.KeyStatuses(ctx)
	if err != nil {
		return KeyRotation{}, err
	}
	out := KeyRotation{Kind: kind}
	for _, s := range sts {
		switch s.ID {
		case cur:
			out.Active = s
		case prev:
			s := s
			out.Retired = &s
		}
	}
	return out, nil
}

// JWTPrepareLead returns how long a new JWT key is published before it
// signs (Config.JWTPrepareLead, after defaults): a cached JWKS must be
// refreshed within it.
func (a *Authority) JWTPrepareLead() time.Duration { return a.cfg.JWTPrepareLead }

// kickRotation wakes the rotation loop to compute its next wake-up again.
func (a *Authority) kickRotation() {
	select {
	case a.rotateKick <- struct{}{}:
	default:
	}
}

// KeyStatus is one key of the authority as `badge keys list` shows it.
// The same state always encodes to the same JSON.
type KeyStatus struct {
	// Kind is RotateRoot, RotateIntermediate or RotateJWT.
	Kind string `json:"kind"`
	// ID identifies the key (a JWT key's kid).
	ID string `json:"id"`
	// State is prepared, active or retired; KeyUpstream for a root of an
	// upstream authority.
	State storage.KeyState `json:"state"`
	// CreatedAt is when the key was made.
	CreatedAt time.Time `json:"created_at"`
	// ActivatesAt is when it signs (or signed) first.
	ActivatesAt time.Time `json:"activates_at,omitzero"`
	// RetiresAt is when an active key is due to stop signing, or when a
	// retired key stopped.
	RetiresAt time.Time `json:"retires_at,omitzero"`
	// NotAfter is when the key expires: its certificate's NotAfter, or
	// the latest exp of a JWT key's tokens.
	NotAfter time.Time `json:"not_after,omitzero"`
	// RemoveAt is when a retired key leaves the bundle (or JWKS) and is
	// deleted.
	RemoveAt time.Time `json:"remove_at,omitzero"`
	// Fingerprint is "SHA256:" and the hex SHA-256 of the public key
	// (PKIX DER).
	Fingerprint string `json:"fingerprint"`
	// PrivateKey is where the private key lives: a file path, a KMS
	// URI, or sealed in the store (storage.SealedRef); for another
	// server's key, "replica ID: " and that server's reference. Never the
	// key itself.
	PrivateKey string `json:"private_key"`
	// Owner is the replica id of the server that owns an intermediate
	// or JWT key, on a store several servers share; empty otherwise.
	Owner string `json:"owner,omitempty"`
}

// KeyUpstream is the state KeyStatuses gives a root of an upstream
// authority: in the bundle, its key held by the upstream.
const KeyUpstream storage.KeyState = "upstream"

// KeyStatuses returns every key the authority keeps a record of,
// prepared, active and retired: roots, then intermediates, then JWT keys,
// each in (CreatedAt, ID) order. Under an upstream authority its roots in
// the bundle come first, with State KeyUpstream.
func (a *Authority) KeyStatuses(ctx context.Context) ([]KeyStatus, error) {
	recs, err := a.store.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca: listing keys: %w", err)
	}
	order := map[string]int{kindRoot: 0, kindIntermediate: 1, kindJWT: 2}
	slices.SortStableFunc(recs, func(x, y storage.Key) int { return order[x.Kind] - order[y.Kind] })
	out := make([]KeyStatus, 0, len(recs))
	a.mu.Lock()
	roots := a.keys.roots
	a.mu.Unlock()
	for _, r := range roots {
		if !isUpstreamRoot(r) {
			continue // recorded: listed below
		}
		sum := sha256.Sum256(r.cert.RawSubjectPublicKeyInfo)
		out = append(out, KeyStatus{Kind: RotateRoot, ID: r.id, State: KeyUpstream,
			CreatedAt: r.cert.NotBefore.UTC(), NotAfter: r.cert.NotAfter.UTC(),
			Fingerprint: "SHA256:" + hex.EncodeToString(sum[:]), PrivateKey: "upstream"})
	}
	for _, r := range recs {
		sum := sha256.Sum256(r.PublicKey)
		where := r.PrivateRef
		switch {
		case !a.cfg.owns(r):
			where = "replica " + r.Owner + ": " + where
		case isKeyFile(where):
			where = filepath.Join(a.cfg.KeyDir, where)
		}
		out = append(out, KeyStatus{
			Kind: publicKind(r.Kind), ID: r.ID, State: r.State,
			CreatedAt: r.CreatedAt.UTC(), ActivatesAt: utcOrZero(r.ActivatesAt), RetiresAt: utcOrZero(r.RetiresAt),
			NotAfter: utcOrZero(r.NotAfter), RemoveAt: utcOrZero(r.RemoveAt),
			Fingerprint: "SHA256:" + hex.EncodeToString(sum[:]), PrivateKey: where, Owner: r.Owner,
		})
	}
	return out, nil
}

func utcOrZero(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}
