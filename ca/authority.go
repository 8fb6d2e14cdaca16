package ca

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// Defaults and limits of the authority.
const (
	// DefaultSVIDTTL is the lifetime of an X.509-SVID when neither the entry
	// nor the configuration says otherwise.
	DefaultSVIDTTL = 5 * time.Minute
	// DefaultMaxSVIDTTL is the longest lifetime an SVID may have unless the
	// operator raises it explicitly.
	DefaultMaxSVIDTTL = 5 * time.Minute
	// MinSVIDTTL is the shortest lifetime an entry or the configuration may ask for.
	MinSVIDTTL = 10 * time.Second
	// DefaultRootTTL is the lifetime of a new root CA.
	DefaultRootTTL = 365 * 24 * time.Hour
	// DefaultIntermediateTTL is the lifetime of a new intermediate signing CA.
	DefaultIntermediateTTL = 24 * time.Hour
	// DefaultJWTTTL is the lifetime, and the longest allowed, of a JWT-SVID.
	DefaultJWTTTL = 5 * time.Minute
	// Backdate is how far NotBefore is set into the past, for clock skew.
	Backdate = 30 * time.Second
	// pruneInterval is how often expired serial records are removed.
	// Under full load a minute's worth is tens of thousands of records,
	// deleted from the front of the store in short transactions.
	pruneInterval = time.Minute
	// auditPruneInterval is how often audit records past the retention
	// are pruned; each pruning adds a record of its own.
	auditPruneInterval = time.Hour
)

// Store is the persistent state the authority needs: the storage
// contract, declared once in package storage. storage/bbolt and
// storage/etcd implement it.
type Store = storage.Backend

// Config configures an Authority. Only Store and KeyDir are required; the
// zero value of every other field is a working default.
type Config struct {
	// TrustDomain is the trust domain the authority issues for. Default example.org.
	TrustDomain spiffeid.TrustDomain
	// Store keeps entries, issued serials, revocations and key records.
	Store Store
	// KeyDir is the directory holding the CA private key files (mode 0600).
	// It is created with mode 0700 if missing.
	KeyDir string
	// SVIDTTL is the lifetime of an SVID whose entry sets none. Default
	// DefaultSVIDTTL. Authority.SetTTLs changes it while the authority runs.
	SVIDTTL time.Duration
	// MaxSVIDTTL bounds every SVID lifetime, entries included. Default DefaultMaxSVIDTTL.
	MaxSVIDTTL time.Duration
	// RootTTL is the lifetime of a root CA, counted from when it starts
	// signing. A root signs intermediates for RootTTL minus its overlap,
	// max(RootTTL/3, IntermediateTTL): two thirds of its life by default.
	// Then the next root (in the bundle since RootPrepareLead before)
	// takes over, and the old one stays in the bundle until the last
	// intermediate it signed has expired. It must exceed IntermediateTTL.
	// Default DefaultRootTTL.
	RootTTL time.Duration
	// RootPrepareLead is how long before it signs the next root enters
	// the trust bundle, so that every verifier holds it before anything
	// chains to it. At most the time a root signs. Default
	// DefaultRootPrepareLead (30 days), or half the time a root signs if
	// that is shorter.
	RootPrepareLead time.Duration
	// IntermediateTTL is the lifetime of each intermediate CA. It is replaced
	// at half its life, by a key generated ahead. Default DefaultIntermediateTTL.
	IntermediateTTL time.Duration
	// JWTKeyTTL is how long a JWT signing key signs before the next one
	// replaces it; it stays published until its last token has expired.
	// At least JWTTTL. Default DefaultJWTKeyTTL (24h).
	JWTKeyTTL time.Duration
	// JWTPrepareLead is how long the next JWT key is published (JWKS,
	// FetchJWTBundles) before it signs: the time verifiers have to
	// refresh their key set. At least JWTTTL, at most JWTKeyTTL. Default
	// DefaultJWTPrepareLead (10m).
	JWTPrepareLead time.Duration
	// JWTTTL is the lifetime of a JWT-SVID. Default and maximum
	// DefaultJWTTTL. Authority.SetTTLs changes it while the authority runs.
	JWTTTL time.Duration
	// JWTIssuer is the iss claim of JWT-SVIDs and the issuer of the OpenID
	// Connect discovery document: the public https URL of the server, such
	// as https://badge.example.org. Empty: tokens carry no iss.
	JWTIssuer string
	// Time returns the current time. Default time.Now.
	Time func() time.Time
	// Monotonic returns the time elapsed since any fixed origin on a clock
	// that never steps. Pruning never trusts Time further than this clock
	// has advanced (see PruneMargin). Default: Go's monotonic clock when
	// Time is the default; the time elapsed on Time when Time is injected
	// (tests that step the wall clock inject both).
	Monotonic func() time.Duration
	// PruneMargin is how long revocation records are kept after what they
	// refuse has expired, so that the revocation list still carries a
	// revoked certificate for verifiers whose clocks are behind by up to
	// the margin, and a wall clock ahead by up to the margin drops nothing
	// live. Default DefaultPruneMargin (1h). The records of issued
	// serials, which grow with issuance, are kept Backdate past expiry.
	// Nothing is pruned on a wall clock further ahead than Monotonic has
	// advanced, nor before the authority has run for the longest
	// credential lifetime.
	PruneMargin time.Duration
	// AuditRetention is how long audit records are kept; older ones are
	// pruned (hourly), and the trail still verifies (see Authority.Audit).
	// Default DefaultAuditRetention (365 days); negative keeps every record.
	AuditRetention time.Duration
	// Upstream, when set, signs every intermediate in place of a root of
	// the authority's own (see upstream.go): no root key is made, the
	// trust bundle is the upstream's roots, RootTTL and RootPrepareLead
	// play no part, and a root of the authority's own from before stays
	// in the bundle only until the last intermediate it signed expires.
	// Nil: the authority is its own root.
	Upstream Upstream
	// KeyManager is where the private keys of the CA and JWT keys are
	// made and used: empty, files in KeyDir; else the URI of a key
	// manager of go.step.sm/crypto/kms whose backend the binary links,
	// such as a PKCS#11 token
	// (pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge?pin-source=/etc/badge/pin),
	// which keys never leave (see CheckKeyManager). The records then name
	// each key by its URI, without the PIN. It is chosen with the data
	// dir: keys made in one place are not found in another.
	KeyManager string
	// ReplicaID names this server among those sharing Store (see
	// storage/etcd): it owns the intermediates and JWT keys whose records
	// carry it, holds their private keys, signs with them and rotates
	// them; other servers' keys it only publishes (their JWT keys in the
	// JWKS). Empty: the only server of the store, owning every key
	// without an owner.
	ReplicaID string
	// RootKEK, when set (RootKEKSize bytes, see ReadRootKEK), seals the
	// private key of every root this authority creates in the root's
	// record, and opens sealed roots: how servers sharing a store share
	// the root without a key manager. Ignored with KeyManager, where the
	// root lives in the key manager all servers reach. Nil: roots are key
	// files like every other key.
	RootKEK []byte
	// Logger receives operational logs. Nil discards them.
	Logger *slog.Logger

	// keys is the key store of KeyManager, opened by New.
	keys keyStore
}

// owns reports whether this server owns the key of rec: a root is
// everyone's, an intermediate or a JWT key its owner's.
func (c *Config) owns(rec storage.Key) bool {
	return rec.Kind == kindRoot || rec.Owner == c.ReplicaID
}

func (c *Config) setDefaults() error {
	if c.Store == nil {
		return errors.New("ca: Config.Store is required")
	}
	if c.KeyDir == "" {
		return errors.New("ca: Config.KeyDir is required")
	}
	if c.TrustDomain.IsZero() {
		c.TrustDomain = spiffeid.RequireTrustDomainFromString("example.org")
	}
	if c.MaxSVIDTTL == 0 {
		c.MaxSVIDTTL = DefaultMaxSVIDTTL
	}
	if c.SVIDTTL == 0 {
		c.SVIDTTL = min(DefaultSVIDTTL, c.MaxSVIDTTL)
	}
	if c.JWTTTL == 0 {
		c.JWTTTL = DefaultJWTTTL
	}
	if c.RootTTL == 0 {
		c.RootTTL = DefaultRootTTL
	}
	if c.IntermediateTTL == 0 {
		c.IntermediateTTL = DefaultIntermediateTTL
	}
	if c.RootPrepareLead == 0 && c.RootTTL > c.IntermediateTTL {
		c.RootPrepareLead = min(DefaultRootPrepareLead, c.rootSigning()/2)
	}
	if c.JWTKeyTTL == 0 {
		c.JWTKeyTTL = DefaultJWTKeyTTL
	}
	if c.JWTPrepareLead == 0 {
		c.JWTPrepareLead = min(DefaultJWTPrepareLead, c.JWTKeyTTL)
	}
	if c.Monotonic == nil {
		if c.Time == nil {
			start := time.Now()
			c.Monotonic = func() time.Duration { return time.Since(start) }
		} else {
			clock, start := c.Time, c.Time()
			c.Monotonic = func() time.Duration { return clock().Sub(start) }
		}
	}
	if c.Time == nil {
		c.Time = time.Now
	}
	if c.PruneMargin == 0 {
		c.PruneMargin = DefaultPruneMargin
	}
	if c.AuditRetention == 0 {
		c.AuditRetention = DefaultAuditRetention
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.RootKEK != nil && len(c.RootKEK) != RootKEKSize {
		return fmt.Errorf("ca: the root key-encryption key has %d bytes, want %d", len(c.RootKEK), RootKEKSize)
	}
	if err := ValidateJWTIssuer(c.JWTIssuer); err != nil {
		return err
	}
	switch {
	case c.MaxSVIDTTL < MinSVIDTTL:
		return fmt.Errorf("ca: maximum SVID TTL %s is below the minimum %s", c.MaxSVIDTTL, MinSVIDTTL)
	case c.SVIDTTL < MinSVIDTTL:
		return fmt.Errorf("ca: SVID TTL %s is below the minimum %s", c.SVIDTTL, MinSVIDTTL)
	case c.SVIDTTL > c.MaxSVIDTTL:
		return fmt.Errorf("ca: SVID TTL %s exceeds the maximum SVID TTL %s (raise the maximum explicitly)", c.SVIDTTL, c.MaxSVIDTTL)
	case c.JWTTTL < MinSVIDTTL || c.JWTTTL > DefaultJWTTTL:
		return fmt.Errorf("ca: JWT TTL %s must be between %s and %s", c.JWTTTL, MinSVIDTTL, DefaultJWTTTL)
	case c.IntermediateTTL < 4*c.MaxSVIDTTL:
		return fmt.Errorf("ca: intermediate TTL %s must be at least four times the maximum SVID TTL %s", c.IntermediateTTL, c.MaxSVIDTTL)
	case c.PruneMargin < 0:
		return fmt.Errorf("ca: prune margin %s is negative", c.PruneMargin)
	}
	return c.checkSchedule()
}

// checkSchedule checks the periods of the key schedule (see rotation.go).
func (c *Config) checkSchedule() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"root TTL", c.RootTTL}, {"root prepare lead", c.RootPrepareLead}, {"JWT key TTL", c.JWTKeyTTL}, {"JWT prepare lead", c.JWTPrepareLead}} {
		if d.v > MaxKeyTTL {
			return fmt.Errorf("ca: %s %s exceeds the maximum %s", d.name, d.v, MaxKeyTTL)
		}
	}
	switch {
	case c.RootTTL <= c.IntermediateTTL:
		return fmt.Errorf("ca: root TTL %s must be longer than the intermediate TTL %s: a root outlives the intermediates it signs", c.RootTTL, c.IntermediateTTL)
	case c.RootPrepareLead <= 0:
		return fmt.Errorf("ca: root prepare lead %s must be positive", c.RootPrepareLead)
	case c.RootPrepareLead > c.rootSigning():
		return fmt.Errorf("ca: root prepare lead %s exceeds the %s a root signs (root TTL %s minus max(root TTL/3, intermediate TTL %s))",
			c.RootPrepareLead, c.rootSigning(), c.RootTTL, c.IntermediateTTL)
	case c.JWTKeyTTL < c.JWTTTL:
		return fmt.Errorf("ca: JWT key TTL %s must be at least the JWT TTL %s", c.JWTKeyTTL, c.JWTTTL)
	case c.JWTPrepareLead < c.JWTTTL:
		return fmt.Errorf("ca: JWT prepare lead %s must be at least the JWT TTL %s, so that a new key is published before any token it signs", c.JWTPrepareLead, c.JWTTTL)
	case c.JWTPrepareLead > c.JWTKeyTTL:
		return fmt.Errorf("ca: JWT prepare lead %s exceeds the JWT key TTL %s", c.JWTPrepareLead, c.JWTKeyTTL)
	}
	return nil
}

// Authority is the certificate authority of one trust domain. It is safe for
// concurrent use.
type Authority struct {
	cfg   Config
	log   *slog.Logger
	store Store

	// mu serialises changes (entries, keys, revocations); readers use snap.
	mu          sync.Mutex
	entries     []storage.Entry // ordered by (CreatedAt, ID)
	keys        *keySet
	revocations *revocationState
	// evictedNodes holds the names of evicted nodes; replaced, never
	// changed in place (snapshots share it).
	evictedNodes map[string]bool

	// svidTTL and jwtTTL are the lifetimes in force (TTLs, SetTTLs), as
	// time.Duration; ttlMu serialises SetTTLs. jwtTTLMax is the longest
	// JWT lifetime in force since the start (see jwtTokensExpire).
	svidTTL, jwtTTL, jwtTTLMax atomic.Int64
	ttlMu                      sync.Mutex
	// started is the wall time at the start.
	started time.Time
	// rotateKick wakes the rotation loop after a forced rotation.
	rotateKick chan struct{}
	// presigned is what the upstream answered, asked without a.mu held,
	// for the prepared intermediate due to activate (see
	// presignIntermediate); guarded by a.mu.
	presigned *upstreamAnswer

	// issueMu is read-held while an SVID or token is signed and recorded,
	// and write-held while a revocation lists the serials to revoke.
	issueMu sync.RWMutex

	snap atomic.Pointer[Snapshot]

	// jwtCache holds the JWT-SVIDs handed out again until half their life
	// (see SignJWTSVID); snapshots hold no caches.
	jwtCache jwtCache

	// auditMu serialises appends to the audit trail; auditState is the
	// head they chain to.
	auditMu    sync.Mutex
	auditState auditState

	// prune is the clock pruning trusts.
	prune pruneClock
	// serials are the reserved serial numbers not used yet.
	serials serialPool
	// svidKeys are SVID keys generated ahead of demand.
	svidKeys *keyPool

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// New opens the authority: it loads or creates the CA keys, loads the
// registration entries and publishes the first snapshot. Call Close to stop
// its background work (intermediate rotation, serial pruning).
func New(ctx context.Context, cfg Config) (*Authority, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	a := &Authority{cfg: cfg, log: cfg.Logger, store: cfg.Store, stop: make(chan struct{}), rotateKick: make(chan struct{}, 1)}
	a.svidTTL.Store(int64(cfg.SVIDTTL))
	a.jwtTTL.Store(int64(cfg.JWTTTL))
	a.jwtTTLMax.Store(int64(cfg.JWTTTL))
	a.started = cfg.Time()
	a.prune.wall, a.prune.mono = a.started, cfg.Monotonic()
	a.prune.start = a.prune.mono
	ks, err := openKeyStore(ctx, &a.cfg)
	if err != nil {
		return nil, err
	}
	a.cfg.keys = ks
	started := false
	defer func() {
		if !started {
			ks.close() // the key manager's session
		}
	}()
	keys, fixes, err := loadKeys(ctx, &a.cfg)
	if err != nil {
		return nil, err
	}
	for _, rec := range a.writableFixes(fixes) {
		if err := a.store.PutKey(ctx, rec); err != nil {
			return nil, fmt.Errorf("ca: recording key %s %s: %w", rec.ID, rec.State, err)
		}
	}
	a.keys = keys
	// Resume the schedule where it stood: activate what is due, prepare
	// what is next, create what is missing.
	keyEvents, err := a.advanceKeysLocked(ctx, "")
	switch {
	case err != nil && errors.Is(err, ErrUpstream) && a.keys.inter != nil && a.cfg.Time().Before(a.keys.inter.cert.NotAfter):
		// The recorded intermediate still signs; the rotation loop asks
		// the upstream again, with backoff.
		a.log.Warn("the upstream authority did not sign the next intermediate; the current one signs until it does",
			slog.String(logkey.KeyID, a.keys.inter.id), slog.String("expires", utc(a.keys.inter.cert.NotAfter)), slog.Any(logkey.Error, err))
	case err != nil:
		return nil, err
	}
	entries, err := a.store.ListEntries(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca: loading entries: %w", err)
	}
	a.entries = slices.SortedStableFunc(slices.Values(entries), compareEntries)
	if err := a.revokeUnbound(ctx); err != nil {
		return nil, err
	}
	if err := a.loadRevocations(ctx); err != nil {
		return nil, err
	}
	if err := a.loadNodes(ctx); err != nil {
		return nil, err
	}
	a.publishLocked()
	// Check the head of the audit trail now, so that a trail altered
	// while the server was down is reported at start (see
	// loadAuditLocked), not at the next admin action.
	a.auditMu.Lock()
	if err := a.loadAuditLocked(ctx, a.store); err != nil {
		a.log.Error("reading the audit trail failed", slog.Any(logkey.Error, err))
	}
	a.auditMu.Unlock()
	a.auditKeyEvents(ctx, keyEvents, uint32(os.Geteuid()))
	rootExpires := "upstream"
	if a.keys.root != nil {
		rootExpires = a.keys.root.cert.NotAfter.UTC().Format(time.RFC3339)
	}
	a.log.Info("authority ready",
		slog.String(logkey.TrustDomain, cfg.TrustDomain.String()),
		slog.Int(logkey.Count, len(entries)),
		slog.String("root_expires", rootExpires),
		slog.String("intermediate_expires", a.keys.current().cert.NotAfter.UTC().Format(time.RFC3339)))

	a.svidKeys = newKeyPool(svidKeyPoolSize)
	started = true
	a.wg.Add(2)
	go a.rotateLoop()
	go a.pruneLoop()
	if w, ok := a.store.(storage.Watcher); ok {
		a.wg.Add(1)
		go a.watchLoop(w)
	}
	return a, nil
}

// Close stops background work. Streams holding snapshots keep working; the
// store is the caller's to close.
func (a *Authority) Close() error {
	a.stopOnce.Do(func() { close(a.stop) })
	a.closeSerials()
	a.svidKeys.close()
	a.wg.Wait()
	return a.cfg.keys.close()
}

// TrustDomain returns the trust domain of the authority.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.cfg.TrustDomain }

// Snapshot returns the current registration state and trust bundle. Its Done
// channel closes when a newer snapshot is published.
func (a *Authority) Snapshot() *Snapshot { return a.snap.Load() }

// publishLocked builds a snapshot of the current entries and keys and
// replaces the previous one, waking everything that waits on it. Callers
// hold a.mu (or are the constructor).
func (a *Authority) publishLocked() {
	s := newSnapshot(a.cfg.TrustDomain, a.entries, a.keys, a.revocations, a.log)
	s.evictedNodes = a.evictedNodes
	if old := a.snap.Swap(s); old != nil {
		close(old.done)
	}
}

// rotateLoop runs the key schedule: it sleeps until the next step is due
// (see nextKeyEventLocked), or a forced rotation changed the schedule.
func (a *Authority) rotateLoop() {
	defer a.wg.Done()
	// After a failure, try again soon, then less and less often (an
	// upstream authority may be down): the current keys stay valid for a
	// good part of the intermediate's life.
	b := newBackoff(a.cfg.IntermediateTTL)
	for {
		a.mu.Lock()
		next := a.nextKeyEventLocked()
		a.mu.Unlock()
		_, leadChanged := a.leads()
		t := time.NewTimer(max(time.Until(next), 10*time.Millisecond))
		select {
		case <-a.stop:
			t.Stop()
			return
		case <-a.rotateKick:
			t.Stop()
			continue
		case <-leadChanged:
			// Leading now, or no longer: a new leader resumes the root
			// schedule from the records.
			t.Stop()
		case <-t.C:
		}
		err := a.scheduledRotation(context.Background())
		if err == nil {
			b.reset()
			continue
		}
		wait := b.next()
		if errors.Is(err, ErrUpstream) {
			a.mu.Lock()
			cur := a.keys.inter
			a.mu.Unlock()
			a.log.Warn("the upstream authority did not sign the next intermediate; the current one signs on, and the upstream is asked again",
				slog.String("retry_in", wait.String()), slog.String(logkey.KeyID, cur.id),
				slog.String("expires", utc(cur.cert.NotAfter)), slog.Any(logkey.Error, err))
		} else {
			a.log.Error("key rotation failed", slog.String("retry_in", wait.String()), slog.Any(logkey.Error, err))
		}
		select {
		case <-a.stop:
			return
		case <-a.rotateKick:
		case <-time.After(wait):
		}
	}
}

// backoff is the delay between failed rotations: it starts at
// IntermediateTTL/16 (between 1s and 1m) and doubles up to
// IntermediateTTL/8 (at most 15m, at least the first delay), so that an
// intermediate rotating at half its life is tried at least four times
// before it expires.
type backoff struct {
	first, max, cur time.Duration
}

func newBackoff(interTTL time.Duration) *backoff {
	first := min(max(interTTL/16, time.Second), time.Minute)
	return &backoff{first: first, max: max(first, min(interTTL/8, 15*time.Minute))}
}

// next returns the delay before the next try, and doubles the one after.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.first
	}
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d
}

func (b *backoff) reset() { b.cur = 0 }

// scheduledRotation takes the steps of the key schedule that are due, and
// records them (or their failure) in the audit trail.
func (a *Authority) scheduledRotation(ctx context.Context) error {
	_, err := a.advanceKeys(ctx, "", uint32(os.Geteuid()))
	if err != nil {
		a.Audit(ctx, AuditEvent{AdminUID: uint32(os.Geteuid()), Action: AuditKeyRotate,
			Detail: "scheduled key rotation", Err: err})
	}
	return err
}

// writableFixes returns the fixes loadKeys found that this server may
// write: its own keys' records, and the shared roots' when it leads (the
// others would race the leader's rotation, whose two writes they may see
// half done).
func (a *Authority) writableFixes(fixes keyFixes) keyFixes {
	leading, _ := a.leads()
	var out keyFixes
	for _, rec := range fixes {
		if rec.Kind == kindRoot && leading || rec.Kind != kindRoot && a.cfg.owns(rec) {
			out = append(out, rec)
		}
	}
	return out
}

// rotateIntermediate runs the key schedule and returns the id of the new
// intermediate if the intermediate rotated ("" if it was not due).
func (a *Authority) rotateIntermediate(ctx context.Context) (string, error) {
	events, err := a.advanceKeys(ctx, "", uint32(os.Geteuid()))
	for _, ev := range events {
		if ev.action == AuditKeyRotate && ev.kind == kindIntermediate {
			return ev.id, err
		}
	}
	return "", err
}

func (a *Authority) pruneLoop() {
	defer a.wg.Done()
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	crl := time.NewTicker(crlRefresh)
	defer crl.Stop()
	var lastAuditPrune time.Time
	for {
		select {
		case <-a.stop:
			return
		case <-crl.C:
			a.mu.Lock()
			err := a.refreshRevocationsLocked(context.Background())
			a.mu.Unlock()
			if err != nil {
				a.log.Error("refreshing the revocation list failed", slog.Any(logkey.Error, err))
			}
			continue
		case <-t.C:
		}
		if leading, _ := a.leads(); !leading {
			continue // another server of the store does it
		}
		if a.cfg.AuditRetention > 0 && time.Since(lastAuditPrune) >= auditPruneInterval {
			lastAuditPrune = time.Now()
			if n, err := a.pruneAudit(context.Background()); err != nil {
				a.log.Error("pruning the audit trail failed", slog.Any(logkey.Error, err))
			} else if n > 0 {
				a.log.Info("pruned the audit trail", slog.Int(logkey.Count, n))
			}
		}
		n, err := a.pruneSerials(context.Background())
		if err != nil {
			a.log.Error("pruning expired serials failed", slog.Any(logkey.Error, err))
			continue
		}
		if n > 0 {
			a.log.Debug("pruned expired serials", slog.Int(logkey.Count, n))
		}
		if n, err := a.pruneJoinTokens(context.Background()); err != nil {
			a.log.Error("pruning expired join tokens failed", slog.Any(logkey.Error, err))
		} else if n > 0 {
			a.log.Debug("pruned expired join tokens", slog.Int(logkey.Count, n))
		}
		if err := a.revokeAbandoned(context.Background()); err != nil {
			a.log.Error("revoking the serials of a server that died failed", slog.Any(logkey.Error, err))
		}
	}
}

// revokeAbandoned revokes, on a store several servers share, the unbound
// reserved serials of a server that died and did not come back (its run
// expired): at start-up only, they would wait for some server to restart.
// Other servers learn of the revocation through their watch. A store only
// this process opens has nothing to sweep after start-up.
func (a *Authority) revokeAbandoned(ctx context.Context) error {
	if _, shared := a.store.(storage.Watcher); !shared {
		return nil
	}
	return a.revokeUnbound(ctx)
}

// pruneSerials deletes the records of certificates that expired more than
// Backdate ago on the clock pruning trusts (trustedNow), once the authority
// has run long enough (pruneReady). These records grow with issuance, so
// they get no PruneMargin: the two rules already keep every record of a
// certificate that is still valid, whatever the wall clock does.
func (a *Authority) pruneSerials(ctx context.Context) (int, error) {
	if !a.pruneReady() {
		return 0, nil
	}
	return a.store.PruneSerials(ctx, a.trustedNow().Add(-Backdate))
}
