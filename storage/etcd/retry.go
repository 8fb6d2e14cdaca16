package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/storage"
)

// How a call survives the loss of one etcd member.
//
// A call is bounded by Options.Timeout as a whole, and runs as attempts:
// each request to etcd is bounded by Options.AttemptTimeout, doubled
// after each attempt that had a request time out, and by what is left in
// the last attempt (attemptTimeout). An attempt that fails with a
// transient error (transient: no leader, leader changed, the member
// stopped, a request timed out, a broken connection) is run again after
// a backoff, until the call's bound or the caller's context ends. An
// answer of the store (ErrExists, ErrNotFound, ErrTokenUsed...) ends the
// call at once.
//
// A write whose attempt failed that way may still have committed: the
// member applied it and died before answering, or the leader committed it
// while the follower that forwarded it timed out. Every write is therefore
// safe to repeat. Plain puts and deletes of what was read are. A write
// that must not be applied twice, or whose answer depends on whether it
// was (creating a record, using a join token, the audit head...), tags
// the record it writes with the call's write ID (writeIDField, one per
// call): when a later attempt finds the record already there, the tag
// tells its own earlier commit from another writer's.

// Defaults of the attempts.
const (
	// retryBase is the first backoff between attempts; it doubles, up to
	// retryMax, each drawn at random from its upper half. An election in
	// a cluster with etcd's defaults (100 ms heartbeat, 1 s election
	// timeout) takes 1 to 2 s after the leader dies, 0.5 to 1 s with the
	// test clusters' 500 ms: backoffs of up to 50, 100, 200, 400, then
	// 500 ms put five attempts in the first second, and one every half
	// second or less after, so a call retries a few times while the
	// followers elect, and lands within half a second of the new leader.
	retryBase = 50 * time.Millisecond
	retryMax  = 500 * time.Millisecond
)

// retryWait returns the wait before attempt n+1 (n from 0): exponential,
// with jitter so that the calls that failed together do not all come
// back together.
func retryWait(n int) time.Duration {
	d := retryMax
	if n < 10 {
		d = min(retryBase<<n, retryMax)
	}
	return d/2 + rand.N(d/2+1)
}

// errAttemptTimeout is the cause of an attempt's request timing out.
var errAttemptTimeout = errors.New("storage/etcd: no answer within the attempt timeout")

// attemptKey is the context key of an *attempt, which call sets for
// attemptInterceptor.
type attemptKey struct{}

// attempt is what attemptInterceptor knows of the attempt a request is
// part of.
type attempt struct {
	// slow is how many earlier attempts of the call had a request time
	// out.
	slow int
	// timedOut is set when a request of this attempt timed out.
	timedOut atomic.Bool
}

// attemptTimeout returns the bound of a request when the first attempt's
// is d: it doubles after each attempt that had a request time out, so
// that a cluster that is only slow (a loaded machine) is given the time
// it needs; an attempt that could not run another after it within the
// call's deadline gets all the time left (0: no bound of its own).
// Attempts that failed at once (a broken connection, no leader) do not
// count: the next is as short, in case it meets the same trouble (a
// proposal forwarded to a leader that just died) and needs a third.
func attemptTimeout(ctx context.Context, d time.Duration) time.Duration {
	if a, ok := ctx.Value(attemptKey{}).(*attempt); ok {
		d <<= min(a.slow, 8)
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*d {
		return 0
	}
	return d
}

// attemptInterceptor bounds each unary request to etcd (not the watches
// and lease keepalives, which are streams) by attemptTimeout. A request
// that got no answer within it, while the caller's context still runs,
// fails with Unavailable: the etcd client then sends a read again to the
// next endpoint, and returns a write to Store.call, which sends it again
// knowing it is safe to repeat. Without it a request in flight to a
// member that stopped answering, or a proposal forwarded to a leader that
// died, holds the whole call's timeout (etcd itself gives up on such a
// proposal only after 5 s and two election timeouts).
func attemptInterceptor(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		d := attemptTimeout(ctx, d)
		if d == 0 {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		actx, cancel := context.WithTimeoutCause(ctx, d, errAttemptTimeout)
		defer cancel()
		err := invoker(actx, method, req, reply, cc, opts...)
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(actx), errAttemptTimeout) {
			if a, ok := ctx.Value(attemptKey{}).(*attempt); ok {
				a.timedOut.Store(true)
			}
			return status.Errorf(codes.Unavailable, "%v (%s)", errAttemptTimeout, d)
		}
		return err
	}
}

// grpcCode returns the gRPC code of an error of the etcd client: its own
// errors (rpctypes.EtcdError) carry one without being gRPC statuses.
func grpcCode(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Unknown
}

// transient reports whether err may go away by itself: etcd has no
// leader or is electing one, the member stopped or timed out, the
// connection broke. An answer of the store (a sentinel), a cancellation
// (the client closing) and the errors of a bad request are not.
func transient(err error) bool {
	if err == nil || isSentinel(err) {
		return false
	}
	switch grpcCode(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.ResourceExhausted:
		return errors.Is(err, rpctypes.ErrTooManyRequests)
	case codes.Canceled:
		return false
	case codes.Unknown:
		// A member with no leader drops a proposal without a code of
		// its own: it was not applied.
		if strings.Contains(err.Error(), "raft proposal dropped") {
			return true
		}
	}
	return errors.Is(err, context.DeadlineExceeded) || isNetErr(err) && !errors.Is(err, context.Canceled)
}

// call runs fn in attempts (see the top of this file) within a context
// bounded by the store's timeout; with conflicts, errConflict (a
// read-check-write that lost to a concurrent writer) runs it again too,
// up to maxRetries times. It maps the error of the last attempt with
// mapErr.
func (s *Store) call(ctx context.Context, conflicts bool, what string, fn func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	lost, failed, slow := 0, 0, 0
	for {
		a := &attempt{slow: slow}
		err := fn(context.WithValue(cctx, attemptKey{}, a))
		if a.timedOut.Load() {
			slow++
		}
		switch {
		case err == nil:
			if failed > 0 {
				s.log.Debug("etcd answered after transient failures", slog.String("call", what), slog.Int("attempts", failed+1))
			}
			return nil
		case conflicts && errors.Is(err, errConflict):
			if lost++; lost == maxRetries {
				return fmt.Errorf("storage/etcd: %s: %w: gave up after %d conflicting concurrent changes", what, storage.ErrUnavailable, maxRetries)
			}
			continue
		case cctx.Err() != nil || !transient(err):
			return s.mapErr(ctx, err)
		}
		wait := retryWait(failed)
		failed++
		if dl, ok := cctx.Deadline(); ok {
			wait = min(wait, time.Until(dl)/2)
		}
		s.log.Debug("etcd request failed; trying again", slog.String("call", what), slog.Int("attempt", failed),
			slog.Duration("backoff", wait), slog.Any("error", err))
		t := time.NewTimer(wait)
		select {
		case <-cctx.Done():
			t.Stop()
			return s.mapErr(ctx, err)
		case <-t.C:
		}
	}
}

// writeIDField is the field of the JSON records written with a write ID
// (see the top of this file); readers ignore it.
const writeIDField = "write_id"

// newWriteID returns the write ID of one call.
func newWriteID() string { return randomID() }

// tag returns the JSON object val with the field writeIDField set to id.
func tag(val, id string) string {
	field := `"` + writeIDField + `":"` + id + `"}`
	if len(val) < 2 || val[len(val)-1] != '}' {
		return val // not an object: cannot happen with json.Marshal of a struct
	}
	if val == "{}" {
		return "{" + field
	}
	return val[:len(val)-1] + "," + field
}

// taggedBy reports whether the stored value val was written by the call
// whose write ID is id.
func taggedBy(val []byte, id string) bool {
	var w struct {
		WriteID string `json:"write_id"`
	}
	return id != "" && json.Unmarshal(val, &w) == nil && w.WriteID == id
}
