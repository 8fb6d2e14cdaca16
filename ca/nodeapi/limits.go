package nodeapi

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/internal/logkey"
)

// Defaults of Limits. An agent serves every workload of its host: its
// signing rate is that of a busy host, not of one uid.
const (
	DefaultMaxConnsPerAddr  = 256
	DefaultStreamsPerNode   = 4
	DefaultCallsPerNode     = 256
	DefaultSignRate         = 500
	DefaultSignBurst        = 1000
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxHeaderBytes   = 16 << 10
	DefaultLogInterval      = time.Minute
	DefaultAttestBackoff    = 250 * time.Millisecond
)

// Limits bound what one node or address can take from the agent listener.
// The zero value applies the defaults.
type Limits struct {
	// MaxConns bounds the connections of all clients together: set it
	// below the process's descriptor limit. 0: no limit.
	MaxConns int
	// MaxConnsPerAddr bounds the connections of one IP address, attested
	// or not. 0: DefaultMaxConnsPerAddr; negative: no limit.
	MaxConnsPerAddr int
	// StreamsPerNode bounds the Sync streams one node holds open. 0:
	// DefaultStreamsPerNode; negative: no limit.
	StreamsPerNode int
	// CallsPerNode bounds the calls of one node in progress at once. 0:
	// DefaultCallsPerNode; negative: no limit.
	CallsPerNode int
	// SignRate is the number of certificates and tokens signed per second
	// for one node on average, SignBurst how many at once. 0:
	// DefaultSignRate and DefaultSignBurst; a negative SignRate: no limit.
	SignRate  float64
	SignBurst int
	// HandshakeTimeout bounds the TLS handshake. 0: DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxHeaderBytes bounds the header list of a request. 0:
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes uint32
	// AttestBackoff is how long an address waits after a failed
	// attestation before its next one is looked at; it doubles with each
	// failure in a row, up to a minute. 0: DefaultAttestBackoff; negative:
	// no wait.
	AttestBackoff time.Duration
	// LogInterval is the least time between two log lines about the
	// refusals of one node or address. 0: DefaultLogInterval.
	LogInterval time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxConnsPerAddr == 0 {
		l.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if l.StreamsPerNode == 0 {
		l.StreamsPerNode = DefaultStreamsPerNode
	}
	if l.CallsPerNode == 0 {
		l.CallsPerNode = DefaultCallsPerNode
	}
	if l.SignRate == 0 {
		l.SignRate = DefaultSignRate
		if l.SignBurst == 0 {
			l.SignBurst = DefaultSignBurst
		}
	}
	if l.SignBurst <= 0 {
		l.SignBurst = max(int(l.SignRate), 1)
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.LogInterval <= 0 {
		l.LogInterval = DefaultLogInterval
	}
	if l.AttestBackoff == 0 {
		l.AttestBackoff = DefaultAttestBackoff
	}
	return l
}

// limiter enforces the per-node limits.
type limiter struct {
	lim Limits
	log *slog.Logger
	now func() time.Time

	mu        sync.Mutex
	nodes     map[string]*nodeState
	logged    map[string]logState // by node, or "addr:" + address
	lastSweep time.Time
}

type nodeState struct {
	streams, calls int
	// bucket is the node's signing bucket, nil without a signing limit.
	// It is kept while it is not full, so that reconnecting does not
	// refill it.
	bucket *rate.Limiter
}

type logState struct {
	at         time.Time
	suppressed int
}

func newLimiter(lim Limits, log *slog.Logger, now func() time.Time) *limiter {
	return &limiter{lim: lim, log: log, now: now, nodes: map[string]*nodeState{}, logged: map[string]logState{}}
}

// state returns the state of node, creating it; l.mu is held.
func (l *limiter) state(node string) *nodeState {
	st := l.nodes[node]
	if st == nil {
		now := l.now()
		if now.Sub(l.lastSweep) > 10*time.Second {
			l.sweep(now)
		}
		st = &nodeState{}
		if l.lim.SignRate >= 0 {
			st.bucket = rate.NewLimiter(rate.Limit(l.lim.SignRate), l.lim.SignBurst)
		}
		l.nodes[node] = st
	}
	return st
}

// sweep forgets idle nodes with a full bucket and old log states; l.mu is
// held.
func (l *limiter) sweep(now time.Time) {
	l.lastSweep = now
	for n, st := range l.nodes {
		if st.streams == 0 && st.calls == 0 && full(st.bucket, now) {
			delete(l.nodes, n)
		}
	}
	for k, ls := range l.logged {
		// A key quiet for an interval is forgotten, with the count of
		// refusals not reported since its last line: many addresses
		// must not grow this map.
		if now.Sub(ls.at) >= l.lim.LogInterval {
			delete(l.logged, k)
		}
	}
}

// full reports whether bucket (nil: none) holds its whole burst at now: a
// key with nothing else open can then be forgotten, since a new bucket
// starts full.
func full(bucket *rate.Limiter, now time.Time) bool {
	return bucket == nil || bucket.TokensAt(now) >= float64(bucket.Burst())
}

// logOnce reports whether a refusal about key is to be logged now: at most
// once per LogInterval per key.
func (l *limiter) logOnce(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.logOnceLocked(key)
	return ok
}

func (l *limiter) logOnceLocked(key string) (suppressed int, log bool) {
	now := l.now()
	ls := l.logged[key]
	if !ls.at.IsZero() && now.Sub(ls.at) < l.lim.LogInterval {
		ls.suppressed++
		l.logged[key] = ls
		return 0, false
	}
	if len(l.logged) > 4096 {
		l.sweep(now)
	}
	l.logged[key] = logState{at: now}
	return ls.suppressed, true
}

// refuse logs a limit refusal of node (at most once per LogInterval) and
// returns its ResourceExhausted status; l.mu is held.
func (l *limiter) refuse(node, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if n, ok := l.logOnceLocked(node); ok {
		l.log.Warn("agent listener limit reached; refusing the node", slog.String(logkey.Node, node), slog.String("limit", msg),
			slog.Int("refused_since_last_report", n), slog.Duration("report_interval", l.lim.LogInterval))
	}
	return status.Error(codes.ResourceExhausted, msg)
}

func (l *limiter) release(f func()) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			f()
			l.mu.Unlock()
		})
	}
}

// startCall counts a call of node; the caller calls the returned function
// when it ends.
func (l *limiter) startCall(node string) (func(), error) {
	if l.lim.CallsPerNode < 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(node)
	if st.calls >= l.lim.CallsPerNode {
		return nil, l.refuse(node, "node %s has %d calls in progress, the limit per node; retry later", node, st.calls)
	}
	st.calls++
	return l.release(func() { st.calls-- }), nil
}

// startStream counts a Sync stream of node.
func (l *limiter) startStream(node string) (func(), error) {
	if l.lim.StreamsPerNode < 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(node)
	if st.streams >= l.lim.StreamsPerNode {
		return nil, l.refuse(node, "node %s holds %d Sync streams, the limit per node; close one and retry", node, st.streams)
	}
	st.streams++
	return l.release(func() { st.streams-- }), nil
}

// sign takes a token of node's signing bucket.
func (l *limiter) sign(node string) error {
	if l.lim.SignRate < 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.state(node).bucket.AllowN(l.now(), 1) {
		return l.refuse(node, "node %s exceeded its signing rate limit of %g per second (burst %d); retry later", node, l.lim.SignRate, l.lim.SignBurst)
	}
	return nil
}

// Failed attestations back off per address: after the n-th failure in a
// row an address waits first·2^(n-1), at most maxDelay, before its
// next attempt is even looked at. A join token has 256 bits, so this is
// not about guessing: it keeps one address from making the store write
// (and the log and audit trail grow) at the rate it can send.
const (
	maxDelay      = time.Minute
	maxAttempters = 16384 // addresses tracked; beyond, the idle are forgotten
)

type attempts struct {
	first time.Duration // negative: no wait
	now   func() time.Time
	mu    sync.Mutex
	m     map[string]*attemptState
}

type attemptState struct {
	fails int
	next  time.Time // no attempt before
}

func newAttempts(first time.Duration, now func() time.Time) *attempts {
	return &attempts{first: first, now: now, m: map[string]*attemptState{}}
}

// admit returns how long addr must still wait, or 0.
func (a *attempts) admit(addr string) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.m[addr]
	if st == nil {
		return 0
	}
	if d := st.next.Sub(a.now()); d > 0 {
		return d
	}
	return 0
}

// fail records a failed attempt of addr and returns the wait it earned.
func (a *attempts) fail(addr string) time.Duration {
	if a.first < 0 {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	st := a.m[addr]
	if st == nil {
		if len(a.m) >= maxAttempters {
			for k, s := range a.m {
				if now.Sub(s.next) > maxDelay {
					delete(a.m, k)
				}
			}
		}
		st = &attemptState{}
		a.m[addr] = st
	}
	st.fails++
	d := min(a.first<<min(st.fails-1, 16), maxDelay)
	st.next = now.Add(d)
	return d
}

// succeed forgets the failures of addr.
func (a *attempts) succeed(addr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, addr)
}
