package workload

// What one caller can take from the Workload API is bounded here, so that
// one local user cannot deny the API to the others (DESIGN.md, "Security
// rules"):
//
//   - connections: each uid other than root holds at most ConnsPerUID
//     connections, and all uids together at most MaxConns. Admission is
//     decided in the gRPC handshake, where the kernel has told us the uid,
//     before a pidfd is taken or a goroutine started for the connection. A
//     connection over a limit is closed at once, except a few per uid
//     (refusalsPerUID, refusalsTotal in all) that are kept for up to
//     refusalLinger so that their calls are answered with a
//     ResourceExhausted naming the limit instead of a bare close.
//   - calls: a uid other than root has at most ConnsPerUID calls in
//     progress at once (a connection carries many streams).
//   - signing: a token bucket per uid other than root (SignRate per second,
//     SignBurst at once) is charged for every X.509-SVID signed and every
//     JWT-SVID signed (not for one handed out again from the cache).
//   - disk: no new X.509-SVID (each records its serial) while the data
//     directory has less than MinFreeSpace bytes free, so that revocation
//     can always be written.
//   - the HTTP/2 preface must arrive within HandshakeTimeout, and a
//     request's header list is at most MaxHeaderBytes.
//
// Each refusal is logged at most once per LogInterval per uid (with the
// number of refusals since the last line), so a caller that hammers a limit
// cannot flood the log either.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/badge-dev/badge/internal/logkey"
)

// Defaults of Limits.
const (
	DefaultConnsPerUID      = 1024
	DefaultSignRate         = 200
	DefaultSignBurst        = 400
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxHeaderBytes   = 16 << 10
	DefaultLogInterval      = time.Minute
)

// Limits bound what one caller can take from the Workload API. The zero
// value applies the defaults; uid 0 (root, which can read every key anyway)
// is exempt from the per-uid limits unless LimitRoot is set.
type Limits struct {
	// ConnsPerUID bounds the connections one uid holds open and, separately,
	// its calls in progress. 0: DefaultConnsPerUID; negative: no limit.
	// With MaxConns set, one uid gets at most half of MaxConns.
	ConnsPerUID int
	// MaxConns bounds the connections of all uids together (root
	// included): set it below the process's descriptor limit so that the
	// admin socket and the store always have descriptors. 0: no limit.
	MaxConns int
	// SignRate is the number of SVIDs one uid may have signed per second on
	// average, SignBurst how many at once. 0: DefaultSignRate and
	// DefaultSignBurst; a negative SignRate: no limit.
	SignRate  float64
	SignBurst int
	// HandshakeTimeout is how long a new connection has to send the HTTP/2
	// preface. 0: DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxHeaderBytes bounds the (uncompressed) header list of a request.
	// 0: DefaultMaxHeaderBytes.
	MaxHeaderBytes uint32
	// MinFreeSpace, with FreeSpace, refuses new X.509-SVIDs while FreeSpace
	// reports fewer bytes free. FreeSpace is asked at most once a second.
	// 0 or a nil FreeSpace: no check.
	MinFreeSpace uint64
	FreeSpace    func() (uint64, error)
	// LimitRoot applies the per-uid limits to uid 0 too (tests).
	LimitRoot bool
	// LogInterval is the least time between two log lines about the same
	// uid's refusals. 0: DefaultLogInterval.
	LogInterval time.Duration
	// Time returns the current time (token buckets, log intervals).
	// Nil: the server's Config.Time, else time.Now.
	Time func() time.Time
}

// How over-limit connections are answered.
const (
	// refusalLinger is how long a refused connection is kept so that its
	// calls get a ResourceExhausted status.
	refusalLinger = time.Second
	// refusalsPerUID and refusalsTotal bound the refused connections kept
	// at once; beyond them a refused connection is closed at once.
	refusalsPerUID = 4
	refusalsTotal  = 64
	// maxStreamsPerConn bounds the concurrent calls on one connection;
	// more wait in the client for a slot.
	maxStreamsPerConn = 128
)

// limitError is a refusal by a limit: a ResourceExhausted status.
type limitError struct{ st *status.Status }

func (e *limitError) Error() string              { return e.st.Message() }
func (e *limitError) GRPCStatus() *status.Status { return e.st }

func exhausted(format string, a ...any) *limitError {
	return &limitError{st: status.Newf(codes.ResourceExhausted, format, a...)}
}

// limitStatus returns the status to answer with when err is a refusal by a
// limit.
func limitStatus(err error) (error, bool) {
	var le *limitError
	if errors.As(err, &le) {
		return le.st.Err(), true
	}
	return nil, false
}

// limiter enforces Limits.
type limiter struct {
	lim     Limits
	log     *slog.Logger
	now     func() time.Time
	metrics Metrics // counts refusals; noMetrics{} unless the server has some

	mu        sync.Mutex
	uids      map[uint32]*uidState
	conns     int // admitted connections, all uids
	refusing  int // refused connections kept open, all uids
	lastSweep time.Time

	disk diskCheck
}

// uidState is the usage of one uid. It is kept while the uid has
// connections or its token bucket is not full, so that reconnecting does
// not refill the bucket.
type uidState struct {
	conns, calls, refusing int
	bucket                 *rate.Limiter // signing bucket; nil without a signing limit

	loggedAt   time.Time // last log line about this uid's refusals
	suppressed int       // refusals since then
}

type diskCheck struct {
	mu         sync.Mutex
	checkedAt  time.Time
	free       uint64
	loggedAt   time.Time
	suppressed int
}

func newLimiter(lim Limits, log *slog.Logger) *limiter {
	if lim.ConnsPerUID == 0 {
		lim.ConnsPerUID = DefaultConnsPerUID
	}
	if lim.MaxConns > 0 && lim.ConnsPerUID > max(lim.MaxConns/2, 1) {
		lim.ConnsPerUID = max(lim.MaxConns/2, 1)
	}
	if lim.SignRate == 0 {
		lim.SignRate = DefaultSignRate
		if lim.SignBurst == 0 {
			lim.SignBurst = DefaultSignBurst
		}
	}
	if lim.SignBurst <= 0 {
		lim.SignBurst = max(int(lim.SignRate), 1)
	}
	if lim.HandshakeTimeout <= 0 {
		lim.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if lim.MaxHeaderBytes == 0 {
		lim.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if lim.LogInterval <= 0 {
		lim.LogInterval = DefaultLogInterval
	}
	now := lim.Time
	if now == nil {
		now = time.Now
	}
	return &limiter{lim: lim, log: log, now: now, metrics: noMetrics{}, uids: map[uint32]*uidState{}}
}

// serverOptions are the gRPC server options that enforce the limits.
func (l *limiter) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(limitedCredentials{peerCredentials: peerCredentials{}, l: l}),
		grpc.ConnectionTimeout(l.lim.HandshakeTimeout),
		grpc.MaxHeaderListSize(l.lim.MaxHeaderBytes),
		grpc.MaxConcurrentStreams(maxStreamsPerConn),
		grpc.InTapHandle(l.tap),
		grpc.ChainUnaryInterceptor(l.unary),
		grpc.ChainStreamInterceptor(l.stream),
	}
}

func (l *limiter) exempt(uid uint32) bool { return uid == 0 && !l.lim.LimitRoot }

// state returns the state of uid, creating it; l.mu is held.
func (l *limiter) state(uid uint32) *uidState {
	st := l.uids[uid]
	if st == nil {
		now := l.now()
		if now.Sub(l.lastSweep) > 10*time.Second {
			l.sweep(now)
		}
		st = &uidState{}
		if l.lim.SignRate >= 0 {
			st.bucket = rate.NewLimiter(rate.Limit(l.lim.SignRate), l.lim.SignBurst)
		}
		l.uids[uid] = st
	}
	return st
}

// sweep forgets the uids with nothing open and a full bucket; l.mu is held.
func (l *limiter) sweep(now time.Time) {
	l.lastSweep = now
	for uid, st := range l.uids {
		if st.conns == 0 && st.calls == 0 && st.refusing == 0 && st.suppressed == 0 && full(st.bucket, now) {
			delete(l.uids, uid)
		}
	}
}

// full reports whether bucket (nil: none) holds its whole burst at now: a
// uid with nothing else open can then be forgotten, since a new bucket
// starts full.
func full(bucket *rate.Limiter, now time.Time) bool {
	return bucket == nil || bucket.TokensAt(now) >= float64(bucket.Burst())
}

// admission is the verdict on a new connection.
type admission int

const (
	admitted admission = iota
	refused            // kept briefly; its calls are answered with the refusal
	dropped            // closed at once
)

// admit decides on a new connection of uid. On admitted or refused the
// caller must call the returned release when the connection closes.
func (l *limiter) admit(uid uint32) (admission, *limitError, func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(uid)
	var le *limitError
	switch {
	case l.lim.MaxConns > 0 && l.conns >= l.lim.MaxConns:
		le = exhausted("the Workload API holds %d connections, its limit in all (set by the server's open-file limit); retry later", l.conns)
	case !l.exempt(uid) && l.lim.ConnsPerUID > 0 && st.conns >= l.lim.ConnsPerUID:
		le = exhausted("uid %d holds %d Workload API connections, the limit per uid; close some and retry", uid, st.conns)
	default:
		st.conns++
		l.conns++
		return admitted, nil, l.releaser(func() { st.conns--; l.conns-- })
	}
	l.noteRefusal(uid, st, le)
	if st.refusing >= refusalsPerUID || l.refusing >= refusalsTotal {
		return dropped, le, nil
	}
	st.refusing++
	l.refusing++
	return refused, le, l.releaser(func() { st.refusing--; l.refusing-- })
}

// releaser returns a function that runs f under l.mu, once.
func (l *limiter) releaser(f func()) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			f()
			l.mu.Unlock()
		})
	}
}

// noteRefusal logs a refusal of uid, at most once per LogInterval per uid;
// l.mu is held.
func (l *limiter) noteRefusal(uid uint32, st *uidState, le *limitError) {
	l.metrics.CallerDenied(DenyLimited)
	now := l.now()
	if !st.loggedAt.IsZero() && now.Sub(st.loggedAt) < l.lim.LogInterval {
		st.suppressed++
		return
	}
	l.log.Warn("Workload API limit reached; refusing the caller", slog.Int(logkey.UID, int(uid)),
		slog.String("limit", le.st.Message()), slog.Int("refused_since_last_report", st.suppressed),
		slog.Duration("report_interval", l.lim.LogInterval))
	st.loggedAt, st.suppressed = now, 0
}

// startCall counts a call of the connection's uid; the caller must call
// the returned function when the call ends.
func (l *limiter) startCall(ctx context.Context) (func(), error) {
	uid, ok := uidFromContext(ctx)
	if !ok || l.exempt(uid) || l.lim.ConnsPerUID <= 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(uid)
	if st.calls >= l.lim.ConnsPerUID {
		le := exhausted("uid %d has %d Workload API calls in progress, the limit per uid; end some and retry", uid, st.calls)
		l.noteRefusal(uid, st, le)
		return nil, le.st.Err()
	}
	st.calls++
	return l.releaser(func() { st.calls-- }), nil
}

func (l *limiter) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	done, err := l.startCall(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return handler(ctx, req)
}

func (l *limiter) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	done, err := l.startCall(ss.Context())
	if err != nil {
		return err
	}
	defer done()
	return handler(srv, ss)
}

// tap answers every call on a refused connection with its refusal, before
// the call gets a goroutine.
func (l *limiter) tap(ctx context.Context, _ *tap.Info) (context.Context, error) {
	if p, ok := peer.FromContext(ctx); ok {
		if r, ok := p.AuthInfo.(refusedInfo); ok {
			return ctx, r.refusal.st.Err()
		}
	}
	return ctx, nil
}

func uidFromContext(ctx context.Context) (uint32, bool) {
	p, ok := peerFromContext(ctx)
	if !ok {
		return 0, false
	}
	return p.UID, true
}

// sign charges the caller's bucket for one signature, after checking the
// disk when x509 is set (an X.509-SVID records its serial). With take
// unset it only checks that a token is left: for a JWT-SVID, which may
// come from the cache, the charge follows the call (see charge).
func (l *limiter) sign(ctx context.Context, x509, take bool) error {
	if x509 {
		if err := l.checkDisk(); err != nil {
			return err
		}
	}
	uid, ok := uidFromContext(ctx)
	if !ok || l.exempt(uid) || l.lim.SignRate < 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(uid)
	now := l.now()
	if take && !st.bucket.AllowN(now, 1) || !take && st.bucket.TokensAt(now) < 1 {
		le := exhausted("uid %d exceeded its signing rate limit of %g SVIDs per second (burst %d); retry later", uid, l.lim.SignRate, l.lim.SignBurst)
		l.noteRefusal(uid, st, le)
		return le
	}
	return nil
}

// charge takes one token from the caller's bucket after the fact; the
// bucket may go below zero.
func (l *limiter) charge(ctx context.Context) {
	uid, ok := uidFromContext(ctx)
	if !ok || l.exempt(uid) || l.lim.SignRate < 0 {
		return
	}
	l.mu.Lock()
	// A reservation never cancelled: the tokens go below zero, and the
	// next signature waits for them to come back.
	l.state(uid).bucket.ReserveN(l.now(), 1)
	l.mu.Unlock()
}

// checkDisk refuses issuance while the data directory has less free space
// than the reserve, asking FreeSpace at most once a second.
func (l *limiter) checkDisk() error {
	if l.lim.MinFreeSpace == 0 || l.lim.FreeSpace == nil {
		return nil
	}
	d := &l.disk
	d.mu.Lock()
	defer d.mu.Unlock()
	now := l.now()
	if d.checkedAt.IsZero() || now.Sub(d.checkedAt) >= time.Second || now.Before(d.checkedAt) {
		free, err := l.lim.FreeSpace()
		if err != nil {
			// Unknown is not full: issuance goes on, the store reports real
			// write errors.
			l.log.Warn("checking the free space of the data directory failed", slog.Any(logkey.Error, err))
			free = l.lim.MinFreeSpace
		}
		d.free, d.checkedAt = free, now
	}
	if d.free >= l.lim.MinFreeSpace {
		return nil
	}
	le := exhausted("the data directory has %s free, less than the %s kept for revocations: no new X.509-SVIDs until space is freed",
		mib(d.free), mib(l.lim.MinFreeSpace))
	if !d.loggedAt.IsZero() && now.Sub(d.loggedAt) < l.lim.LogInterval {
		d.suppressed++
	} else {
		l.log.Error("refusing new X.509-SVIDs: the data directory is nearly full", slog.String("free", mib(d.free)),
			slog.String("reserve", mib(l.lim.MinFreeSpace)), slog.Int("refused_since_last_report", d.suppressed))
		d.loggedAt, d.suppressed = now, 0
	}
	return le
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// limitedCredentials admits a connection by its uid before the peer
// credentials handshake takes a pidfd for it.
type limitedCredentials struct {
	peerCredentials
	l *limiter
}

// refusedInfo is the AuthInfo of a refused connection.
type refusedInfo struct {
	credentials.CommonAuthInfo
	refusal *limitError
}

func (refusedInfo) AuthType() string { return "badge-refused" }

func (c limitedCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("workload API: connection is not a Unix socket")
	}
	uid, err := peerUID(uc)
	if err != nil {
		return nil, nil, err
	}
	verdict, le, release := c.l.admit(uid)
	switch verdict {
	case dropped:
		return nil, nil, le
	case refused:
		// Closed after refusalLinger whatever the client does; gRPC then
		// closes rc too.
		timer := time.AfterFunc(refusalLinger, func() { uc.Close(); release() })
		return &releaseConn{Conn: uc, release: release, timer: timer}, refusedInfo{refusal: le}, nil
	}
	pc, info, err := c.peerCredentials.ServerHandshake(uc)
	if err != nil {
		release()
		return nil, nil, err
	}
	return &releaseConn{Conn: pc, release: release}, info, nil
}

func (c limitedCredentials) Clone() credentials.TransportCredentials { return c }

// peerUID reads the uid of the connecting process (SO_PEERCRED).
func peerUID(uc *net.UnixConn) (uint32, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("workload API: raw connection: %w", err)
	}
	var (
		cred    *unix.Ucred
		credErr error
	)
	if err := rc.Control(func(fd uintptr) { cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return 0, fmt.Errorf("workload API: raw connection: %w", err)
	}
	if credErr != nil {
		return 0, fmt.Errorf("workload API: SO_PEERCRED: %w", credErr)
	}
	return cred.Uid, nil
}

// releaseConn gives its admission back when it closes.
type releaseConn struct {
	net.Conn
	release func()
	timer   *time.Timer // closes a refused connection
}

func (c *releaseConn) Close() error {
	err := c.Conn.Close()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.release()
	return err
}

// The limiter is the Budget the handler gives the Source for X.509-SVIDs:
// each one signed takes a token, after the disk check. A JWT-SVID, which
// may come from the Source's cache, needs a token left and is charged
// afterwards if it was signed for the call (jwtBudget).

func (l *limiter) SignX509(ctx context.Context) error { return l.sign(ctx, true, true) }

func (l *limiter) SignJWT(ctx context.Context) error { return l.sign(ctx, false, false) }

func (l *limiter) SignedJWT(ctx context.Context, _ time.Time) { l.charge(ctx) }

// jwtBudget is the Budget of one FetchJWTSVID call: it charges a token
// only when it was issued at or after the second its SignJWT was called
// (a fresh token is issued at the current second, or later right after a
// revocation; a cached one earlier).
type jwtBudget struct {
	*limiter
	start time.Time
}

func (b *jwtBudget) SignJWT(ctx context.Context) error {
	if err := b.limiter.SignJWT(ctx); err != nil {
		return err
	}
	b.start = b.now().Truncate(time.Second)
	return nil
}

func (b *jwtBudget) SignedJWT(ctx context.Context, issuedAt time.Time) {
	if !issuedAt.Before(b.start) {
		b.charge(ctx)
	}
}
