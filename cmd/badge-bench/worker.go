package main

import (
	"context"
	"errors"
	"hash/maphash"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// group is the workers of one uid: in this process, or in a child.
type group interface {
	UID() uint32
	// Run runs the mode's workload: calls for the spec's duration (fetch,
	// jwt) or opens the streams (stream, propagation).
	Run(ctx context.Context) (groupResult, error)
	// Wait returns, for each open stream, the monotonic time (monoNow) at
	// which it first received SPIFFE ID id, or with gone the first
	// response without id after it had it. It waits until every stream has
	// or until timeout.
	Wait(ctx context.Context, id string, gone bool, timeout time.Duration) ([]int64, error)
	// Close closes every stream and, for a child, ends it.
	Close() error
}

// benchSpec tells a group what to do.
type benchSpec struct {
	Mode string `json:"mode"`
	// Sockets are the Workload API sockets of the run. The workers of all
	// groups take them in turn: worker W of the run (counting from 0)
	// uses Sockets[W % len(Sockets)], and First is the number in the run
	// of the group's first worker.
	Sockets  []string      `json:"sockets"`
	First    int           `json:"first,omitempty"`
	Workers  int           `json:"workers"`
	Duration time.Duration `json:"duration"`
	Timeout  time.Duration `json:"timeout"`
	Audience string        `json:"audience,omitempty"`
	// Raw asks for every sample with its start time (--samples), failed
	// calls included.
	Raw bool `json:"raw,omitempty"`
	// WaitEntry makes a stream refused with PermissionDenied try again
	// until its timeout: the entries of --setup --node reach the node's
	// agent a moment after they are created.
	WaitEntry bool `json:"wait_entry,omitempty"`
}

// socket returns the index in s.Sockets of the group's worker w.
func (s benchSpec) socket(w int) int { return (s.First + w) % len(s.Sockets) }

// groupResult is what one group measured.
type groupResult struct {
	// Samples are latencies in nanoseconds: of each successful call
	// (fetch, jwt) or of each stream's first SVID (stream, propagation).
	Samples []int64 `json:"samples_ns"`
	// Raw, if the spec asked for it, is every call or stream opening,
	// failed ones included, with its start time.
	Raw []sample `json:"raw,omitempty"`
	// Errors counts failed calls or streams by gRPC code.
	Errors   map[string]int `json:"errors,omitempty"`
	FirstErr string         `json:"first_error,omitempty"`
	// Fatal, with its gRPC code, is an error that ends the run
	// (PermissionDenied, Unimplemented, a first call that failed).
	Fatal     string `json:"fatal,omitempty"`
	FatalCode string `json:"fatal_code,omitempty"`
	// FatalSocket is the socket whose call failed with Fatal.
	FatalSocket string `json:"fatal_socket,omitempty"`
	// IDs are the SPIFFE IDs of the first response (streams only).
	IDs []string `json:"ids,omitempty"`
	// With several sockets, SampleSockets has the socket (its index in
	// the spec's Sockets) of each of Samples, and SocketErrors the
	// Errors of each socket.
	SampleSockets []int            `json:"sample_sockets,omitempty"`
	SocketErrors  []map[string]int `json:"socket_errors,omitempty"`
}

// sample is one call, stream opening or propagation, as --samples writes it.
type sample struct {
	Start int64 `json:"s"`  // wall clock at its start, Unix nanoseconds
	NS    int64 `json:"ns"` // how long it took
	// Code is "" for a call that succeeded, else its gRPC code; for
	// propagation, sampleCreate or sampleDelete.
	Code string `json:"c,omitempty"`
}

// The result column of propagation samples.
const (
	sampleCreate = "create" // a new entry reached a stream
	sampleDelete = "delete" // a deleted entry left a stream
)

// localGroup runs workers in this process.
type localGroup struct {
	spec    benchSpec
	uid     uint32
	streams *streamSet
}

func (g *localGroup) UID() uint32 { return g.uid }

func (g *localGroup) Run(ctx context.Context) (groupResult, error) {
	switch g.spec.Mode {
	case benchFetch, benchJWT:
		return runCallers(ctx, g.spec), nil
	default:
		g.streams = newStreamSet(g.spec.Sockets, g.spec.First)
		g.streams.waitEntry = g.spec.WaitEntry
		return g.streams.open(ctx, g.spec.Workers, g.spec.Timeout, g.spec.Raw), nil
	}
}

func (g *localGroup) Wait(ctx context.Context, id string, gone bool, timeout time.Duration) ([]int64, error) {
	if g.streams == nil {
		return nil, errors.New("no streams are open")
	}
	return g.streams.wait(ctx, id, gone, timeout), nil
}

func (g *localGroup) Close() error {
	if g.streams != nil {
		g.streams.close()
	}
	return nil
}

// fatalCode reports whether a call failing with c makes the run meaningless.
func fatalCode(c codes.Code) bool {
	return c == codes.PermissionDenied || c == codes.Unimplemented || c == codes.InvalidArgument
}

// runCallers runs spec.Workers callers for spec.Duration. A fetch caller
// opens a fresh connection for every FetchX509SVID; a jwt caller keeps one
// connection and calls FetchJWTSVID on it.
func runCallers(ctx context.Context, spec benchSpec) groupResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	until := time.Now().Add(spec.Duration)
	type out struct {
		sock     int // index in spec.Sockets
		ns       []int64
		raw      []sample
		errs     map[string]int
		firstErr string
	}
	outs := make([]out, spec.Workers)
	var (
		fatalOnce sync.Once
		fatal     error
		wg        sync.WaitGroup
	)
	fatalSock := 0
	stop := func(sock int, err error) { fatalOnce.Do(func() { fatal, fatalSock = err, sock; cancel() }) }
	for w := range outs {
		o := &outs[w]
		o.errs = map[string]int{}
		o.sock = spec.socket(w)
		addr := "unix://" + spec.Sockets[o.sock]
		wg.Go(func() {
			var jc *workloadapi.Client
			if spec.Mode == benchJWT {
				var err error
				if jc, err = workloadapi.New(ctx, workloadapi.WithAddr(addr)); err != nil {
					stop(o.sock, err)
					return
				}
				defer jc.Close()
			}
			for first := true; time.Now().Before(until) && ctx.Err() == nil; first = false {
				cctx, ccancel := context.WithTimeout(ctx, spec.Timeout)
				start := time.Now()
				var err error
				if jc != nil {
					_, err = jc.FetchJWTSVID(cctx, jwtsvid.Params{Audience: spec.Audience})
				} else {
					err = fetchFresh(cctx, addr)
				}
				d := time.Since(start)
				ccancel()
				if err != nil {
					if ctx.Err() != nil {
						return // another worker ended the run
					}
					code := status.Code(err)
					if fatalCode(code) || (first && code == codes.Unavailable) {
						stop(o.sock, err)
						return
					}
					o.errs[code.String()]++
					if o.firstErr == "" {
						o.firstErr = err.Error()
					}
					if spec.Raw {
						o.raw = append(o.raw, sample{Start: start.UnixNano(), NS: int64(d), Code: code.String()})
					}
					continue
				}
				o.ns = append(o.ns, int64(d))
				if spec.Raw {
					o.raw = append(o.raw, sample{Start: start.UnixNano(), NS: int64(d)})
				}
			}
		})
	}
	wg.Wait()
	var r groupResult
	if fatal != nil {
		r.Fatal, r.FatalCode, r.FatalSocket = status.Convert(fatal).Message(), status.Code(fatal).String(), spec.Sockets[fatalSock]
		return r
	}
	r.Errors = map[string]int{}
	r.initSockets(len(spec.Sockets))
	for _, o := range outs {
		r.Samples = append(r.Samples, o.ns...)
		r.Raw = append(r.Raw, o.raw...)
		for k, v := range o.errs {
			r.Errors[k] += v
		}
		if r.SocketErrors != nil {
			for range o.ns {
				r.SampleSockets = append(r.SampleSockets, o.sock)
			}
			for k, v := range o.errs {
				r.SocketErrors[o.sock][k] += v
			}
		}
		if r.FirstErr == "" {
			r.FirstErr = o.firstErr
		}
	}
	return r
}

// initSockets readies the per-socket part of r for n sockets: none for one.
func (r *groupResult) initSockets(n int) {
	if n < 2 {
		return
	}
	r.SocketErrors = make([]map[string]int, n)
	for i := range r.SocketErrors {
		r.SocketErrors[i] = map[string]int{}
	}
}

// fetchFresh connects, fetches the default X.509-SVID and disconnects, as a
// workload that starts up does.
func fetchFresh(ctx context.Context, addr string) error {
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.FetchX509SVID(ctx)
	return err
}

// streamSet holds FetchX509SVID streams, each on its own connection, and
// records when each SPIFFE ID arrives on (and leaves) each of them.
// Stream i is on sockets[(first+i) % len(sockets)].
type streamSet struct {
	sockets   []string
	first     int
	waitEntry bool // retry a stream refused with PermissionDenied until its timeout
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu       sync.Mutex
	conns    []*grpc.ClientConn
	nOpen    int                // streams that received their first SVID
	changed  chan struct{}      // closed and replaced on every response
	seen     map[string][]int64 // SPIFFE ID → when each stream got it
	gone     map[string][]int64 // SPIFFE ID → when each stream that had it lost it
	renewed  int                // responses whose first certificate is new: rotations
	errs     map[string]int
	sockErr  []map[string]int // errs by socket, with several
	firstErr string
}

func newStreamSet(sockets []string, first int) *streamSet {
	s := &streamSet{
		sockets: sockets, first: first, changed: make(chan struct{}),
		seen: map[string][]int64{}, gone: map[string][]int64{}, errs: map[string]int{},
	}
	if len(sockets) > 1 {
		s.sockErr = make([]map[string]int, len(sockets))
		for i := range s.sockErr {
			s.sockErr[i] = map[string]int{}
		}
	}
	return s
}

// socket returns the index in s.sockets of stream i.
func (s *streamSet) socket(i int) int { return (s.first + i) % len(s.sockets) }

// open opens n streams, benchOpenParallel at a time, each waiting up to
// timeout for its first SVID. With raw, the result has every opening,
// failed ones included, with its start time.
// Cancelling ctx stops the opening; the streams opened stay open until
// close.
func (s *streamSet) open(ctx context.Context, n int, timeout time.Duration, raw bool) groupResult {
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	sem := make(chan struct{}, benchOpenParallel)
	opens := make([]sample, n)
	var (
		wg        sync.WaitGroup
		fatalOnce sync.Once
		fatal     error
		fatalSock int
		firstIDs  []string
		started   int
	)
	for i := range n {
		if ctx.Err() != nil || s.ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		started++
		wg.Go(func() {
			defer func() { <-sem }()
			start := time.Now()
			sock := s.socket(i)
			d, ids, err := s.openOne(sock, timeout)
			for s.waitEntry && status.Code(err) == codes.PermissionDenied && time.Since(start) < timeout-entryRetry && s.ctx.Err() == nil {
				// The Workload API refuses at once: no event to wait on.
				select {
				case <-time.After(entryRetry):
				case <-s.ctx.Done():
				}
				d, ids, err = s.openOne(sock, timeout-time.Since(start))
				d = int64(time.Since(start))
			}
			if err != nil {
				code := status.Code(err)
				if fatalCode(code) {
					fatalOnce.Do(func() { fatal, fatalSock = err, sock; s.cancel() })
				}
				s.noteErr(sock, err)
				opens[i] = sample{Start: start.UnixNano(), NS: int64(time.Since(start)), Code: code.String()}
				return
			}
			opens[i] = sample{Start: start.UnixNano(), NS: d}
			if i == 0 {
				firstIDs = ids
			}
		})
	}
	wg.Wait()
	var r groupResult
	if fatal != nil {
		r.Fatal, r.FatalCode, r.FatalSocket = status.Convert(fatal).Message(), status.Code(fatal).String(), s.sockets[fatalSock]
		return r
	}
	several := len(s.sockets) > 1
	for i, o := range opens[:started] {
		if o.Code == "" {
			r.Samples = append(r.Samples, o.NS)
			if several {
				r.SampleSockets = append(r.SampleSockets, s.socket(i))
			}
		}
	}
	if raw {
		r.Raw = opens[:started]
	}
	s.mu.Lock()
	r.Errors, r.FirstErr = maps.Clone(s.errs), s.firstErr
	for _, m := range s.sockErr {
		r.SocketErrors = append(r.SocketErrors, maps.Clone(m))
	}
	s.mu.Unlock()
	r.IDs = firstIDs
	return r
}

// entryRetry is how often a stream of WaitEntry asks again.
const entryRetry = 10 * time.Millisecond

// openOne opens a stream on socket sock (an index in s.sockets).
func (s *streamSet) openOne(sock int, timeout time.Duration) (int64, []string, error) {
	start := time.Now()
	conn, err := grpc.NewClient("unix://"+s.sockets[sock],
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithReadBufferSize(8<<10), grpc.WithWriteBufferSize(8<<10))
	if err != nil {
		return 0, nil, err
	}
	ctx := metadata.AppendToOutgoingContext(s.ctx, "workload.spiffe.io", "true")
	ctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(timeout, cancel)
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	var resp *workload.X509SVIDResponse
	if err == nil {
		resp, err = stream.Recv()
	}
	if !timer.Stop() && err != nil && s.ctx.Err() == nil {
		err = status.Errorf(codes.DeadlineExceeded, "no X.509-SVID within %s", timeout)
	}
	if err != nil {
		cancel()
		conn.Close()
		return 0, nil, err
	}
	d := int64(time.Since(start))
	got := svidIDs(resp)
	s.mu.Lock()
	s.conns = append(s.conns, conn)
	s.nOpen++
	s.recordLocked(nil, got, monoNow())
	s.mu.Unlock()
	s.wg.Go(func() {
		defer cancel()
		s.recvLoop(sock, stream, got, certHash(resp))
	})
	return d, got, nil
}

// recvLoop records what the stream, on socket sock, receives until it
// ends; cert is the hash of the first certificate it holds.
func (s *streamSet) recvLoop(sock int, stream grpc.ServerStreamingClient[workload.X509SVIDResponse], cur []string, cert uint64) {
	for {
		resp, err := stream.Recv()
		now := monoNow()
		if err != nil {
			if s.ctx.Err() == nil {
				s.noteErr(sock, err)
			}
			return
		}
		next := svidIDs(resp)
		c := certHash(resp)
		s.mu.Lock()
		if c != cert {
			s.renewed++
		}
		s.recordLocked(cur, next, now)
		s.mu.Unlock()
		cur, cert = next, c
	}
}

// renewals returns how many responses brought a new first certificate to
// a stream already open: rotations, and new SVIDs after a revocation or an
// entry change.
func (s *streamSet) renewals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewed
}

// certHash identifies the first certificate of a response.
func certHash(resp *workload.X509SVIDResponse) uint64 {
	var cert []byte
	if svids := resp.GetSvids(); len(svids) > 0 {
		cert = svids[0].GetX509Svid()
	}
	return maphash.Bytes(certSeed, cert)
}

var certSeed = maphash.MakeSeed()

// received returns the number of streams open and, by SPIFFE ID, how many
// streams have received it.
func (s *streamSet) received() (open int, byID map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byID = make(map[string]int, len(s.seen))
	for id, t := range s.seen {
		byID[id] = len(t)
	}
	return s.nOpen, byID
}

// recordLocked notes a response carrying next on a stream that held prev.
func (s *streamSet) recordLocked(prev, next []string, now int64) {
	for _, id := range next {
		if !slices.Contains(prev, id) {
			s.seen[id] = append(s.seen[id], now)
		}
	}
	for _, id := range prev {
		if !slices.Contains(next, id) {
			s.gone[id] = append(s.gone[id], now)
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// noteErr counts err, of a stream on socket sock.
func (s *streamSet) noteErr(sock int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	code := status.Code(err).String()
	s.errs[code]++
	if s.sockErr != nil {
		s.sockErr[sock][code]++
	}
	if s.firstErr == "" {
		s.firstErr = err.Error()
	}
}

func (s *streamSet) wait(ctx context.Context, id string, gone bool, timeout time.Duration) []int64 {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		m := s.seen
		if gone {
			m = s.gone
		}
		got, ch, want := m[id], s.changed, s.nOpen
		if len(got) >= want {
			defer s.mu.Unlock()
			return slices.Clone(got)
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			s.mu.Lock()
			defer s.mu.Unlock()
			return slices.Clone(m[id])
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *streamSet) close() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}

func svidIDs(resp *workload.X509SVIDResponse) []string {
	out := make([]string, len(resp.GetSvids()))
	for i, sv := range resp.GetSvids() {
		out[i] = sv.GetSpiffeId()
	}
	return out
}

// monoNow is CLOCK_MONOTONIC in nanoseconds: comparable between the
// processes of one machine, unlike the monotonic reading of time.Time.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Now().UnixNano()
	}
	return ts.Nano()
}
