package attest

import (
	"errors"
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
)

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

	// Now returns the current time; nil means time.Now. It drives name
	// cache expiry and decides when an executable's hash may be cached.
	Now func() time.Time
}

const (
	defaultNameTTL           = time.Minute
	defaultMaxExecutableSize = 1 << 30

	// maxNames and maxHashes bound the caches: an attacker who controls
	// many uids (subordinate ids) or writes many executables must not be
	// able to grow them without limit.
	maxNames  = 4096
	maxHashes = 4096

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

	users, groups nameCache
	hashes        hashCache
}

// New returns an Attestor for cfg.
func New(cfg Config) *Attestor {
	a := &Attestor{
		procRoot: cfg.ProcRoot,
		nameTTL:  cfg.NameTTL,
		maxExe:   cfg.MaxExecutableSize,
		now:      cfg.Now,
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
	return a
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
func (c *hashCache) get(id fileID, compute func() (string, error), cacheable func() bool) (string, error) {
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
