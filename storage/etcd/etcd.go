package etcd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"

	"github.com/badge-dev/badge/storage"
)

// Defaults of Options.
const (
	// DefaultTimeout bounds every call to etcd when Options.Timeout is
	// zero: past it the call fails with storage.ErrUnavailable.
	DefaultTimeout = 5 * time.Second
	// DefaultAttemptTimeout bounds the requests of a call's first attempt
	// when Options.AttemptTimeout is zero and Timeout is the default
	// (otherwise the default is a quarter of Timeout); the attempt after
	// one that timed out gets twice as long, the last one what the call
	// has left. A request answers in milliseconds on a healthy cluster;
	// one that takes longer went to a member that died, or is a proposal
	// forwarded to a leader that died (etcd gives up on it only after 5 s
	// and two election timeouts), and is sent again. 1.25 s is longer
	// than an election in the tests' clusters (500 ms election timeout:
	// 0.6 to 1.1 s measured) and about one with etcd's default 1 s
	// election timeout, so that the next attempt finds the new leader,
	// with 3.75 s left.
	DefaultAttemptTimeout = DefaultTimeout / 4
	// DefaultRunTTL is the lease of the key that says this run is alive.
	DefaultRunTTL = 15 * time.Second
	// DefaultMaxTxnOps is etcd's own default of --max-txn-ops: the most
	// operations (and, separately, comparisons) one transaction may hold.
	DefaultMaxTxnOps = 128
)

// Options configures Open. Endpoints, TrustDomain and ReplicaID are
// required; the zero value of every other field is the default.
type Options struct {
	// Endpoints are the etcd servers, each HOST:PORT.
	Endpoints []string
	// TLS, when set, secures the connection (server verification and,
	// with a certificate, client authentication); nil connects in plain
	// text.
	TLS *tls.Config
	// TrustDomain selects the key prefix /badge/TRUST_DOMAIN/, so that one
	// etcd cluster serves several trust domains.
	TrustDomain string
	// ReplicaID names this server among those sharing the trust domain.
	// It must be stable across restarts of one server (cmd/badge keeps it
	// in the data directory) and differ between servers: at start-up,
	// RevokeUnbound treats the reservations of earlier runs of this
	// replica, and of replicas whose run lease has expired, as abandoned.
	ReplicaID string
	// Timeout bounds every call, all its attempts included. Default
	// DefaultTimeout.
	Timeout time.Duration
	// AttemptTimeout bounds each request of a call's first attempt: one
	// that gets no answer within it is sent again, after a backoff, with
	// twice the bound, as long as Timeout allows (see retry.go); an
	// attempt that failed at once keeps the bound. Default
	// a quarter of Timeout (DefaultAttemptTimeout with the default
	// Timeout).
	AttemptTimeout time.Duration
	// RunTTL is the lease of this run's liveness key. Default
	// DefaultRunTTL.
	RunTTL time.Duration
	// MaxTxnOps is the most operations put in one transaction; it must not
	// exceed the servers' --max-txn-ops. Default DefaultMaxTxnOps.
	MaxTxnOps int
	// CompactInterval is how often the server that leads (see Lead)
	// compacts etcd's history, to the revision it read one interval
	// earlier (see compact.go). Zero: DefaultCompactInterval; negative:
	// never (the operator compacts the cluster by other means).
	CompactInterval time.Duration
	// Logger receives the store's log records. Nil discards them.
	Logger *slog.Logger

	// onCompact, for tests, is called by the compaction loop after each
	// compaction, with the revision compacted to.
	onCompact func(rev int64)
	// interceptor, for tests, sees each request after the attempt
	// timeout is set: it can make a write commit and lose its answer.
	interceptor grpc.UnaryClientInterceptor
}

// Store keeps badge's state in etcd. It is safe for concurrent use;
// create it with Open and release it with Close.
type Store struct {
	cli       *clientv3.Client
	p         prefix
	endpoints string // for errors
	replica   string
	run       string
	lease     clientv3.LeaseID
	timeout   time.Duration
	maxOps    int
	log       *slog.Logger
	closed    atomic.Bool
	stopKeep  context.CancelFunc
	// openRev is the revision of etcd when the store was opened: Watch
	// reports the changes made since, so that nothing changed between
	// Open and the caller's first reads is missed.
	openRev int64
	// failing is set while the committer's last attempt failed.
	failing atomic.Bool
	// serialTxns counts the transactions that wrote serial records.
	serialTxns atomic.Uint64

	// Queue of serial records (see serials.go).
	mu            sync.Mutex
	pending       []*serialWrite
	closing       bool
	wake          chan struct{} // capacity 1
	committerDone chan struct{}

	// resMu guards unbound: each serial reserved through this Store and
	// neither bound nor released yet, mapped to its reservation.
	resMu   sync.Mutex
	unbound map[string]*reservation
	resSeq  atomic.Uint64

	// The election (see election.go), started by the first Lead.
	runTTL      time.Duration
	electOnce   sync.Once
	stopElect   context.CancelFunc
	electDone   chan struct{}
	electMu     sync.Mutex
	leading     bool
	leadChanged chan struct{} // closed when leading changes

	// Compaction (see compact.go), while this server leads.
	compactEvery time.Duration // 0: never
	onCompact    func(rev int64)
	compactions  atomic.Uint64 // compactions done by this store
	compactedRev atomic.Int64  // the revision of the last one
}

// Store implements the storage contract.
var _ storage.Backend = (*Store)(nil)

// schemaVersion is the layout this code reads and writes, kept under
// meta/schema.
const schemaVersion = 1

// Open connects to etcd, checks the layout under the trust domain's
// prefix (writing it on a new cluster) and registers this run under a
// lease. It fails with an error wrapping storage.ErrUnavailable and naming
// the endpoints when etcd does not answer within Options.Timeout, and
// storage.ErrSchema when the prefix was written by a newer release.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("storage/etcd: no endpoints")
	}
	if opts.TrustDomain == "" || strings.ContainsAny(opts.TrustDomain, "/\x00") {
		return nil, fmt.Errorf("storage/etcd: trust domain %q cannot be a key prefix", opts.TrustDomain)
	}
	if opts.ReplicaID == "" || strings.ContainsAny(opts.ReplicaID, "/\x00") || len(opts.ReplicaID) > 128 {
		return nil, fmt.Errorf("storage/etcd: replica id %q: want 1 to 128 bytes without '/'", opts.ReplicaID)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = opts.Timeout / 4
	}
	opts.AttemptTimeout = min(opts.AttemptTimeout, opts.Timeout)
	if opts.RunTTL <= 0 {
		opts.RunTTL = DefaultRunTTL
	}
	if opts.MaxTxnOps <= 0 {
		opts.MaxTxnOps = DefaultMaxTxnOps
	}
	switch {
	case opts.CompactInterval == 0:
		opts.CompactInterval = DefaultCompactInterval
	case opts.CompactInterval < 0:
		opts.CompactInterval = 0
	}
	if opts.MaxTxnOps < 4 {
		return nil, fmt.Errorf("storage/etcd: MaxTxnOps %d: want at least 4", opts.MaxTxnOps)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	eps := strings.Join(opts.Endpoints, ",")
	log = log.With(slog.String("endpoints", eps))
	interceptors := []grpc.UnaryClientInterceptor{attemptInterceptor(opts.AttemptTimeout)}
	if opts.interceptor != nil {
		interceptors = append(interceptors, opts.interceptor)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		TLS:         opts.TLS,
		DialTimeout: opts.Timeout,
		Logger:      zap.NewNop(),
		// Keepalives notice a dead connection so that the client moves
		// to another endpoint.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		// Reconnect within a second of an endpoint coming back, rather
		// than after gRPC's default backoff of up to two minutes.
		DialOptions: []grpc.DialOption{
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: opts.Timeout,
			}),
			grpc.WithChainUnaryInterceptor(interceptors...),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("storage/etcd: connecting to %s: %w: %w", eps, storage.ErrUnavailable, err)
	}
	s := &Store{
		cli:           cli,
		p:             prefix("/badge/" + opts.TrustDomain + "/"),
		endpoints:     eps,
		replica:       opts.ReplicaID,
		run:           randomID(),
		timeout:       opts.Timeout,
		maxOps:        opts.MaxTxnOps,
		log:           log,
		wake:          make(chan struct{}, 1),
		committerDone: make(chan struct{}),
		unbound:       make(map[string]*reservation),
		runTTL:        opts.RunTTL,
		leadChanged:   make(chan struct{}),
		compactEvery:  opts.CompactInterval,
		onCompact:     opts.onCompact,
	}
	if err := s.setup(ctx, opts.RunTTL); err != nil {
		_ = cli.Close()
		return nil, err
	}
	compact := "off"
	if s.compactEvery > 0 {
		compact = s.compactEvery.String()
	}
	log.Info("connected to etcd", slog.String("prefix", string(s.p)), slog.String("replica", s.replica),
		slog.String("compact_interval", compact))
	go s.commitLoop()
	return s, nil
}

// setup checks or writes the schema version and registers the run.
func (s *Store) setup(ctx context.Context, ttl time.Duration) error {
	key := s.p.meta("schema")
	want := strconv.Itoa(schemaVersion)
	err := s.do(ctx, func(ctx context.Context) error {
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, want)).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) != 1 || string(kvs[0].Value) != want {
			got := ""
			if len(kvs) == 1 {
				got = string(kvs[0].Value)
			}
			return fmt.Errorf("storage/etcd: %s: %w: schema version %q, this release reads %s", key, storage.ErrSchema, got, want)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The run key says that this replica's current run is alive; it
	// disappears with the lease when the process dies.
	return s.do(ctx, func(ctx context.Context) error {
		lease, err := s.cli.Grant(ctx, max(int64(ttl/time.Second), 2))
		if err != nil {
			return err
		}
		resp, err := s.cli.Put(ctx, s.p.run(s.replica), s.run, clientv3.WithLease(lease.ID))
		if err != nil {
			return err
		}
		s.openRev = resp.Header.Revision
		kctx, cancel := context.WithCancel(context.Background())
		ch, err := s.cli.KeepAlive(kctx, lease.ID)
		if err != nil {
			cancel()
			return err
		}
		s.lease, s.stopKeep = lease.ID, cancel
		go func() {
			for range ch {
			}
		}()
		return nil
	})
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Close writes the serial records still queued, ends this run's lease
// (its reservations, all bound or released after a clean shutdown, are
// gone) and disconnects. Later calls return storage.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return s.closedErr()
	}
	s.closing = true
	s.mu.Unlock()
	s.closed.Store(true)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.committerDone
	s.electOnce.Do(func() {}) // no campaign starts after Close
	if s.stopElect != nil {
		s.stopElect()
		<-s.electDone
	}
	s.stopKeep()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	_, err := s.cli.Revoke(ctx, s.lease)
	cancel()
	if err != nil {
		s.log.Warn("ending the run's lease failed; it expires by itself", slog.Any("error", err))
	}
	if err := s.cli.Close(); err != nil {
		return fmt.Errorf("storage/etcd: closing the connection to %s: %w", s.endpoints, err)
	}
	s.log.Info("disconnected from etcd")
	return nil
}

func (s *Store) closedErr() error {
	return fmt.Errorf("storage/etcd: %s: %w", s.endpoints, storage.ErrClosed)
}

// check returns the error a call must return before doing anything: the
// caller's context is done, or the store is closed.
func (s *Store) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return s.closedErr()
	}
	return nil
}

// do runs fn in attempts (see Store.call) within the store's timeout,
// and maps etcd's errors: the caller's own cancellation is returned as it
// is, a timeout or a lost connection wraps storage.ErrUnavailable naming
// the endpoints. fn must be safe to run again after an attempt whose
// write may have committed (see the top of retry.go).
func (s *Store) do(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.call(ctx, false, "", fn)
}

func (s *Store) mapErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	switch {
	case isSentinel(err):
		return err
	case s.closed.Load() && errors.Is(err, context.Canceled):
		return s.closedErr()
	}
	switch code := grpcCode(err); {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		code == codes.Unavailable, code == codes.DeadlineExceeded, code == codes.Canceled,
		transient(err):
		return fmt.Errorf("storage/etcd: %s: %w: %v", s.endpoints, storage.ErrUnavailable, err)
	}
	return fmt.Errorf("storage/etcd: %s: %w", s.endpoints, err)
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// isSentinel reports whether err already carries a storage sentinel: an
// answer of the store, not a failure to reach it.
func isSentinel(err error) bool {
	for _, s := range []error{storage.ErrNotFound, storage.ErrExists, storage.ErrClosed, storage.ErrInvalid,
		storage.ErrCorrupt, storage.ErrSchema, storage.ErrUnavailable, storage.ErrTokenUsed, storage.ErrTokenExpired, errConflict} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// errConflict is returned inside retry loops when a transaction's
// comparison failed because another writer changed a key first.
var errConflict = errors.New("storage/etcd: concurrent change")

// maxRetries bounds the attempts of a read-check-write transaction that
// keeps losing to concurrent writers.
const maxRetries = 16

// retry is do for a read-check-write transaction: fn returns errConflict
// when a concurrent writer changed what it read, and runs again.
func (s *Store) retry(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.call(ctx, true, what, fn)
}

// ParseURL parses the value of --storage for etcd,
// etcd://HOST:PORT[,HOST:PORT...], into endpoints. Each endpoint needs a
// host and a numeric port; nothing may follow them (no path, query or
// user).
func ParseURL(raw string) ([]string, error) {
	rest, ok := strings.CutPrefix(raw, "etcd://")
	if !ok {
		return nil, fmt.Errorf("storage URL %q: want etcd://HOST:PORT[,HOST:PORT...]", raw)
	}
	if rest == "" {
		return nil, fmt.Errorf("storage URL %q: no endpoint: want etcd://HOST:PORT[,HOST:PORT...]", raw)
	}
	if i := strings.IndexAny(rest, "/?#@ "); i >= 0 {
		return nil, fmt.Errorf("storage URL %q: unexpected %q: want etcd://HOST:PORT[,HOST:PORT...] with nothing after", raw, rest[i])
	}
	var out []string
	for ep := range strings.SplitSeq(rest, ",") {
		host, port, err := net.SplitHostPort(ep)
		if err != nil {
			return nil, fmt.Errorf("storage URL %q: endpoint %q: want HOST:PORT: %v", raw, ep, err)
		}
		if host == "" {
			return nil, fmt.Errorf("storage URL %q: endpoint %q has no host", raw, ep)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("storage URL %q: endpoint %q: port %q is not a number from 1 to 65535", raw, ep, port)
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out, nil
}

// TLSConfig builds the TLS configuration of the connection to etcd from
// PEM files: caFile holds the roots that verify the servers (empty: the
// system's), certFile and keyFile the client certificate (chain) and key
// that authenticate badge, both or neither. Errors name the file.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pemCA, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemCA) {
			return nil, fmt.Errorf("etcd CA %s: no PEM certificate in the file", caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case (certFile == "") != (keyFile == ""):
		return nil, errors.New("etcd client certificate: give both the certificate and the key file, or neither")
	case certFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate %s, key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
