package attest

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Errors about the peer process. Attest wraps them with %w.
var (
	// ErrPeerGone means the process that connected has exited. Its PID may
	// already belong to another process, so nothing read about that PID can
	// be trusted.
	ErrPeerGone = errors.New("attest: peer process has exited")
	// ErrNoPidfd means the Peer holds no pidfd: it did not come from
	// PeerFromConn, or it was closed. Such a peer is never attested.
	ErrNoPidfd = errors.New("attest: peer has no pidfd (not from PeerFromConn, or closed)")
	// ErrPeerChanged means the process that connected now runs another
	// executable than when its connection was accepted: it called
	// exec(2). The identity belonged to the program that connected, so
	// nothing more is issued on that connection.
	ErrPeerChanged = errors.New("attest: peer process runs another executable than when it connected")
)

// ErrHashBudget means the caller's uid has had as many bytes of executables
// hashed in the last minute as Config.HashBudget allows: unix:sha256 is
// refused until the budget refills. Executables already hashed (cached)
// cost nothing.
var ErrHashBudget = errors.New("attest: executable hashing budget of the uid spent")

// ErrExecutableTooLarge means the executable is larger than
// Config.MaxExecutableSize, so the attestor refused to hash it.
var ErrExecutableTooLarge = errors.New("attest: executable too large to hash")

// Config configures an Attestor. The zero value reads the real /proc.
type Config struct {
	// ProcRoot is where procfs is mounted; "" means "/proc". It must be
	// the procfs of the PID namespace the connections are accepted in.
	// Tests point it at a directory of fixtures.
	ProcRoot string

	// NameTTL is how long user and group names (and their absence) are
	// cached. Zero means one minute; a negative value disables the cache.
	NameTTL time.Duration

	// MaxExecutableSize is the largest executable, in bytes, that is
	// hashed for unix:sha256 selectors; Attest fails with
	// ErrExecutableTooLarge for larger ones. Zero means 1 GiB.
	MaxExecutableSize int64

	// HashBudget bounds the bytes of executables hashed (for unix:sha256)
	// on behalf of one uid per minute, so that a user who keeps changing
	// a large executable (touch changes its ctime, so it is hashed again)
	// cannot keep the server busy: beyond it Attest fails with
	// ErrHashBudget naming the uid and the budget. The budget refills
	// continuously; one executable of up to MaxExecutableSize may be
	// hashed at once even if that is more. Cached hashes cost nothing.
	// Independently of it, one executable is hashed at a time. Zero means
	// 1 GiB per minute; a negative value means no per-uid budget.
	HashBudget int64

	// Logger receives a rate-limited line when selectors are left out
	// because the server may not read them. Nil discards it.
	Logger *slog.Logger

	// Time returns the current time; nil means time.Now. It drives name
	// cache expiry, the hashing budget, and decides when an executable's
	// hash may be cached.
	Time func() time.Time
}

const (
	defaultNameTTL           = time.Minute
	defaultMaxExecutableSize = 1 << 30
	defaultHashBudget        = 1 << 30

	// missingLogEvery is the least time between two log lines about
	// selectors left out.
	missingLogEvery = time.Minute

	// maxNames and maxHashes bound the caches: an attacker who controls
	// many uids (subordinate ids) or writes many executables must not be
	// able to grow them without limit.
	maxNames   = 4096
	maxHashes  = 4096
	maxBudgets = 4096

	// racyWindow: an executable whose status changed less than this long
	// before it was hashed is hashed again next time instead of cached,
	// because a write within the same timestamp tick would not change the
	// (mtime, ctime) part of its cache key.
	racyWindow = 2 * time.Second
)

// Attestor turns peers into selectors, caching user/group names and
// executable hashes (by file identity). It is safe for concurrent use.
type Attestor struct {
	procRoot string
	nameTTL  time.Duration
	maxExe   int64
	now      func() time.Time
	log      *slog.Logger

	users, groups nameCache
	hashes        hashCache
	budget        *hashBudget   // nil: no per-uid budget
	hashing       chan struct{} // one executable hashed at a time
	missLogged    atomic.Int64  // Unix ns of the last logMissing line
}

// New returns an Attestor for cfg.
func New(cfg Config) *Attestor {
	a := &Attestor{
		procRoot: cfg.ProcRoot,
		nameTTL:  cfg.NameTTL,
		maxExe:   cfg.MaxExecutableSize,
		now:      cfg.Time,
	}
	if a.procRoot == "" {
		a.procRoot = "/proc"
	}
	if a.nameTTL == 0 {
		a.nameTTL = defaultNameTTL
	}
	if a.maxExe <= 0 {
		a.maxExe = defaultMaxExecutableSize
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.log = cfg.Logger
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.hashing = make(chan struct{}, 1)
	switch rate := cfg.HashBudget; {
	case rate == 0:
		a.budget = newHashBudget(defaultHashBudget, a.maxExe)
	case rate > 0:
		a.budget = newHashBudget(rate, a.maxExe)
	}
	return a
}

// hashBudget is a token bucket of bytes to hash per uid: it refills at rate
// bytes per minute up to capacity.
type hashBudget struct {
	rate, capacity int64

	mu sync.Mutex
	m  map[uint32]bucket
}

type bucket struct {
	level int64 // bytes left at time at
	at    time.Time
}

func newHashBudget(rate, maxExe int64) *hashBudget {
	return &hashBudget{rate: rate, capacity: max(rate, maxExe)}
}

// levelAt is what is left in b at now.
func (h *hashBudget) levelAt(b bucket, now time.Time) int64 {
	d := now.Sub(b.at)
	if d <= 0 {
		return b.level
	}
	if d >= time.Minute {
		return h.capacity
	}
	refill := int64(float64(h.rate) * d.Seconds() / 60)
	return min(h.capacity, b.level+refill)
}

// take charges n bytes to uid, or fails with ErrHashBudget. A nil budget
// allows everything.
func (h *hashBudget) take(uid uint32, n int64, now time.Time, name string) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	level := h.capacity
	if b, ok := h.m[uid]; ok {
		level = h.levelAt(b, now)
	}
	if n > level {
		return fmt.Errorf("%w: uid %d may have %d bytes of executables hashed per minute, has %d left, and %s is %d bytes (retry later, or stop changing the executable)",
			ErrHashBudget, uid, h.rate, level, name, n)
	}
	if h.m == nil {
		h.m = make(map[uint32]bucket)
	}
	if _, ok := h.m[uid]; !ok && len(h.m) >= maxBudgets {
		h.evict(now)
	}
	h.m[uid] = bucket{level: level - n, at: now}
	return nil
}

// evict drops buckets that have refilled (they equal an absent one), or,
// if none has, an arbitrary quarter: each of those uids starts afresh, but
// one hashing at a time still bounds the whole server.
func (h *hashBudget) evict(now time.Time) {
	for uid, b := range h.m {
		if h.levelAt(b, now) >= h.capacity {
			delete(h.m, uid)
		}
	}
	for uid := range h.m {
		if len(h.m) < maxBudgets*3/4 {
			break
		}
		delete(h.m, uid)
	}
}

// nameCache caches id → name lookups, including "no such id".
type nameCache struct {
	mu      sync.Mutex
	m       map[uint32]nameEntry
	lookups atomic.Uint64 // lookups that missed the cache; for tests
}

type nameEntry struct {
	name    string
	ok      bool
	expires time.Time
}

// get returns the name of id, calling lookup on a miss. ok is false when
// the id has no (valid) name.
func (c *nameCache) get(id uint32, now time.Time, ttl time.Duration, lookup func(uint32) (string, bool, error)) (name string, ok bool, err error) {
	if ttl > 0 {
		c.mu.Lock()
		e, hit := c.m[id]
		c.mu.Unlock()
		if hit && now.Before(e.expires) {
			return e.name, e.ok, nil
		}
	}
	c.lookups.Add(1)
	name, ok, err = lookup(id)
	if err != nil {
		return "", false, err
	}
	if ok && !validName(name) {
		name, ok = "", false
	}
	if ttl > 0 {
		c.mu.Lock()
		if c.m == nil {
			c.m = make(map[uint32]nameEntry)
		}
		if len(c.m) >= maxNames {
			evictNames(c.m, now)
		}
		c.m[id] = nameEntry{name: name, ok: ok, expires: now.Add(ttl)}
		c.mu.Unlock()
	}
	return name, ok, nil
}

// evictNames drops expired entries, or, if none has expired, an arbitrary
// quarter of the map.
func evictNames(m map[uint32]nameEntry, now time.Time) {
	for id, e := range m {
		if !now.Before(e.expires) {
			delete(m, id)
		}
	}
	for id := range m {
		if len(m) < maxNames*3/4 {
			break
		}
		delete(m, id)
	}
}

// fileID identifies the content of an executable: the same inode with the
// same size and modification and change times. ctime cannot be set from
// user space, and any write or chmod updates it.
type fileID struct {
	dev, ino         uint64
	size             int64
	mtimeNs, ctimeNs int64
}

// hashCache caches executable hashes by fileID and makes concurrent
// attestations of the same new executable share one hashing.
type hashCache struct {
	mu       sync.Mutex
	m        map[fileID]string
	inflight map[fileID]*hashCall
	computed atomic.Uint64 // hashes computed; for tests
}

type hashCall struct {
	done chan struct{}
	sum  string
	err  error
}

// get returns the cached hash for id, or runs compute (once, however many
// callers ask concurrently) and caches its result if cacheable says so.
// The caller that would run compute first calls charge; if that fails,
// nothing is computed and no other caller shares the failure.
func (c *hashCache) get(id fileID, charge func() error, compute func() (string, error), cacheable func() bool) (string, error) {
	c.mu.Lock()
	if sum, ok := c.m[id]; ok {
		c.mu.Unlock()
		return sum, nil
	}
	if call := c.inflight[id]; call != nil {
		c.mu.Unlock()
		<-call.done
		return call.sum, call.err
	}
	if err := charge(); err != nil {
		c.mu.Unlock()
		return "", err
	}
	call := &hashCall{done: make(chan struct{})}
	if c.inflight == nil {
		c.inflight = make(map[fileID]*hashCall)
	}
	c.inflight[id] = call
	c.mu.Unlock()

	c.computed.Add(1)
	call.sum, call.err = compute()

	c.mu.Lock()
	delete(c.inflight, id)
	if call.err == nil && cacheable() {
		if c.m == nil {
			c.m = make(map[fileID]string)
		}
		if len(c.m) >= maxHashes {
			for k := range c.m { // evict an arbitrary quarter
				if len(c.m) < maxHashes*3/4 {
					break
				}
				delete(c.m, k)
			}
		}
		c.m[id] = call.sum
	}
	c.mu.Unlock()
	close(call.done)
	return call.sum, call.err
}
