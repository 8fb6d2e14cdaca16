package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/storage"
)

// loseAnswers returns an interceptor that lets every other write (Txn,
// Put, DeleteRange) reach etcd and commit, then reports Unavailable
// instead of its answer: what a client sees when the member it asked dies
// after the commit. The first write of every call after an answered one
// is lost, so each call repeats a write that committed. lost counts them.
func loseAnswers(lost *atomic.Int64) grpc.UnaryClientInterceptor {
	var n atomic.Int64
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		switch method {
		case "/etcdserverpb.KV/Txn", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange":
		default:
			return err
		}
		if err == nil && n.Add(1)%2 == 1 {
			lost.Add(1)
			return status.Error(codes.Unavailable, "test: the answer was lost after the commit")
		}
		return err
	}
}

// TestLostAnswers: every write of the store commits, then its answer is
// lost (Unavailable), and the store sends it again. Each call still gives
// the answer it would have given had nothing been lost: a create does not
// report ErrExists, a token use ErrTokenUsed, a delete ErrNotFound, an
// audit append ErrExists; what a call returns counts what it did once;
// revocation-list numbers keep growing. A true duplicate is still
// refused.
func TestLostAnswers(t *testing.T) {
	var lost atomic.Int64
	s := open(t, Options{interceptor: loseAnswers(&lost)})
	defer s.Close()
	ctx := t.Context()
	web := "spiffe://example.org/web"
	notAfter := time.Now().Add(time.Hour)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	want := func(what string, err, sentinel error) {
		t.Helper()
		if !errors.Is(err, sentinel) {
			t.Fatalf("%s = %v; want %v", what, err, sentinel)
		}
	}

	// Entries, clients, keys: create, refuse a duplicate, delete once.
	e := storage.Entry{ID: "e1", SPIFFEID: web, CreatedAt: t0}
	must("CreateEntry", s.CreateEntry(ctx, e))
	want("CreateEntry again", s.CreateEntry(ctx, e), storage.ErrExists)
	if got, err := s.GetEntry(ctx, "e1"); err != nil || got.ID != "e1" {
		t.Fatalf("GetEntry = %v, %v", got, err)
	}
	must("DeleteEntry", s.DeleteEntry(ctx, "e1"))
	want("DeleteEntry again", s.DeleteEntry(ctx, "e1"), storage.ErrNotFound)
	want("DeleteEntry of none", s.DeleteEntry(ctx, "never"), storage.ErrNotFound)
	c := storage.Client{ID: "c1", SPIFFEID: web, SecretHash: strings.Repeat("a", 64), CreatedAt: t0}
	must("CreateClient", s.CreateClient(ctx, c))
	want("CreateClient again", s.CreateClient(ctx, c), storage.ErrExists)
	must("DeleteClient", s.DeleteClient(ctx, "c1"))
	k := testKey("root-1")
	must("CreateFirstKey", s.CreateFirstKey(ctx, k, "root-"))
	want("CreateFirstKey of another", s.CreateFirstKey(ctx, testKey("root-2"), "root-"), storage.ErrExists)
	k.State = storage.KeyRetired
	must("PutKey", s.PutKey(ctx, k))
	must("DeleteKey", s.DeleteKey(ctx, "root-1"))
	want("DeleteKey again", s.DeleteKey(ctx, "root-1"), storage.ErrNotFound)

	// Join tokens and nodes: a token is used once, by the call that used
	// it; an eviction counts the tokens it deleted.
	tok := func(h, node string) storage.JoinToken {
		return storage.JoinToken{Hash: strings.Repeat(h, 64), Node: node, CreatedAt: t0, ExpiresAt: time.Now().Add(time.Hour)}
	}
	must("CreateJoinToken", s.CreateJoinToken(ctx, tok("a", "n1")))
	want("CreateJoinToken again", s.CreateJoinToken(ctx, tok("a", "n1")), storage.ErrExists)
	now := time.Now().UTC()
	used, node, err := s.ConsumeJoinToken(ctx, strings.Repeat("a", 64), now)
	must("ConsumeJoinToken", err)
	if !used.UsedAt.Equal(now) || node.Name != "n1" || !node.LastAttestedAt.Equal(now) || node.Attestation != storage.AttestJoinToken {
		t.Fatalf("ConsumeJoinToken = %+v, %+v", used, node)
	}
	_, _, err = s.ConsumeJoinToken(ctx, strings.Repeat("a", 64), now)
	want("ConsumeJoinToken again", err, storage.ErrTokenUsed)
	must("PutNode", s.PutNode(ctx, storage.Node{Name: "n2", Attestation: storage.AttestJoinToken, FirstAttestedAt: t0, LastAttestedAt: t0}))
	must("CreateJoinToken n2", s.CreateJoinToken(ctx, tok("b", "n2")))
	must("CreateJoinToken n2", s.CreateJoinToken(ctx, tok("c", "n2")))
	evicted, n, err := s.EvictNode(ctx, "n2", now, 7)
	must("EvictNode", err)
	if n != 2 || !evicted.EvictedAt.Equal(now) || evicted.EvictedBy != 7 {
		t.Fatalf("EvictNode = %+v, %d tokens; want evicted, 2 tokens", evicted, n)
	}

	// Serials: recorded once, a true duplicate refused; revocations
	// return what they revoked, once.
	for i := range 3 {
		must("RecordSerial", s.RecordSerial(ctx, rec(i, web, notAfter)))
	}
	want("RecordSerial again", s.RecordSerial(ctx, rec(0, web, notAfter)), storage.ErrExists)
	must("ReserveSerials", s.ReserveSerials(ctx, storage.Reservation{NotAfter: notAfter, Serials: []string{fmt.Sprintf("%032x", 10)}}))
	must("BindSerial", s.BindSerial(ctx, rec(10, web, notAfter)))
	revoked, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: now, Blocked: true}, now)
	must("RevokeID", err)
	if len(revoked) != 4 {
		t.Fatalf("RevokeID revoked %d certificates: %v; want the 4 recorded", len(revoked), revoked)
	}
	again, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: now}, now)
	if err != nil || len(again) != 0 {
		t.Fatalf("RevokeID again = %v, %v; want nothing newly revoked", again, err)
	}
	must("Unblock", s.Unblock(ctx, web))
	want("Unblock again", s.Unblock(ctx, web), storage.ErrNotFound)
	api := "spiffe://example.org/api"
	must("RecordSerial", s.RecordSerial(ctx, rec(20, api, notAfter)))
	rs, err := s.RevokeSerial(ctx, fmt.Sprintf("%032x", 20), "test", 0, now)
	if err != nil || rs.SPIFFEID != api {
		t.Fatalf("RevokeSerial = %+v, %v", rs, err)
	}
	_, err = s.RevokeSerial(ctx, fmt.Sprintf("%032x", 20), "test", 0, now)
	want("RevokeSerial again", err, storage.ErrExists)

	// Revocation-list numbers keep growing.
	var last uint64
	for range 5 {
		n, err := s.NextCRLNumber(ctx, 1)
		must("NextCRLNumber", err)
		if n <= last {
			t.Fatalf("NextCRLNumber = %d after %d", n, last)
		}
		last = n
	}

	// The audit trail: each append once, pruning counts what it deleted.
	var head storage.AuditHead
	for seq := uint64(1); seq <= 3; seq++ {
		r := storage.AuditRecord{Seq: seq, Time: t0, Action: "test", Result: "ok", Prev: head.Hash, Hash: fmt.Sprintf("%064x", seq)}
		head = storage.AuditHead{Seq: seq, Hash: r.Hash}
		must(fmt.Sprintf("AppendAudit %d", seq), s.AppendAudit(ctx, r, head))
	}
	r4 := storage.AuditRecord{Seq: 4, Time: t0, Action: "prune", Result: "ok", Prev: head.Hash, Hash: fmt.Sprintf("%064x", 4)}
	pruned, err := s.PruneAudit(ctx, 2, r4, storage.AuditHead{Seq: 4, Hash: r4.Hash, AnchorSeq: 2, AnchorHash: fmt.Sprintf("%064x", 2)})
	if err != nil || pruned != 2 {
		t.Fatalf("PruneAudit = %d, %v; want 2 records pruned", pruned, err)
	}
	var seqs []uint64
	if _, err := s.ScanAudit(ctx, 0, func(r storage.AuditRecord, err error) bool {
		seqs = append(seqs, r.Seq)
		return err == nil
	}); err != nil || fmt.Sprint(seqs) != "[3 4]" {
		t.Fatalf("audit records after pruning: %v, %v; want [3 4]", seqs, err)
	}
	if lost.Load() < 30 {
		t.Fatalf("only %d answers were lost", lost.Load())
	}
	t.Logf("%d answers lost after their commit", lost.Load())
}

func testKey(id string) storage.Key {
	return storage.Key{ID: id, Kind: "x509-root", PublicKey: []byte{1}, PrivateRef: id + ".key", CreatedAt: t0, NotAfter: t0.Add(time.Hour), State: storage.KeyActive}
}

func TestTag(t *testing.T) {
	for _, tc := range []struct {
		val, want string
	}{
		{`{"id":"e1"}`, `{"id":"e1","write_id":"0a"}`},
		{`{}`, `{"write_id":"0a"}`},
		{`7`, `7`}, // not an object: unchanged
	} {
		got := tag(tc.val, "0a")
		if got != tc.want {
			t.Errorf("tag(%s) = %s; want %s", tc.val, got, tc.want)
		}
		if strings.HasPrefix(tc.val, "{") {
			if !taggedBy([]byte(got), "0a") || taggedBy([]byte(got), "0b") || taggedBy([]byte(got), "") {
				t.Errorf("taggedBy(%s) does not tell its write ID", got)
			}
			var e storage.Entry
			if err := json.Unmarshal([]byte(got), &e); err != nil {
				t.Errorf("a tagged record does not decode: %v", err)
			}
		}
	}
	if taggedBy([]byte(`{"id":"e1"}`), "") {
		t.Error("an untagged record is taken for one of the empty write ID")
	}
}

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no leader", rpctypes.ErrNoLeader, true},
		{"leader changed", rpctypes.ErrLeaderChanged, true},
		{"server timeout", rpctypes.ErrTimeout, true},
		{"stopped", rpctypes.ErrStopped, true},
		{"too many requests", rpctypes.ErrTooManyRequests, true},
		{"grpc unavailable", status.Error(codes.Unavailable, "transport is closing"), true},
		{"attempt timed out", status.Error(codes.Unavailable, errAttemptTimeout.Error()), true},
		{"deadline", context.DeadlineExceeded, true},
		{"broken connection", &net.OpError{Op: "read", Err: io.ErrUnexpectedEOF}, true},
		{"exists", fmt.Errorf("x: %w", storage.ErrExists), false},
		{"not found", storage.ErrNotFound, false},
		{"token used", storage.ErrTokenUsed, false},
		{"conflict", errConflict, false},
		{"corrupt", corrupt([]byte("k"), "bad"), false},
		{"no space", rpctypes.ErrNoSpace, false},
		{"too many ops", rpctypes.ErrTooManyOps, false},
		{"canceled", context.Canceled, false},
		{"grpc canceled", status.Error(codes.Canceled, "the client connection is closing"), false},
		{"compacted", rpctypes.ErrCompacted, false},
		{"proposal dropped", status.Error(codes.Unknown, "raft proposal dropped"), true},
		{"unknown", status.Error(codes.Unknown, "something else"), false},
	} {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("transient(%s: %v) = %v; want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestRetryWait(t *testing.T) {
	var total time.Duration
	for n := range 64 {
		d := retryWait(n)
		hi := min(retryBase<<min(n, 10), retryMax)
		if d < hi/2 || d > hi {
			t.Errorf("retryWait(%d) = %s; want within [%s, %s]", n, d, hi/2, hi)
		}
		if n < 5 {
			total += hi
		}
	}
	if total > 2*time.Second {
		t.Errorf("the first five backoffs add up to %s; want them within an election", total)
	}
}

func TestAttemptTimeout(t *testing.T) {
	const d = time.Second
	for _, tc := range []struct {
		slow int           // earlier attempts that timed out
		left time.Duration // 0: no deadline
		want time.Duration
	}{
		{0, 0, d},
		{0, 5 * time.Second, d},
		{1, 0, 2 * d},
		{1, 5 * time.Second, 2 * d},
		{1, 3 * time.Second, 0}, // the last attempt: all that is left
		{2, 0, 4 * d},
		{0, 1500 * time.Millisecond, 0},
	} {
		ctx := context.WithValue(t.Context(), attemptKey{}, &attempt{slow: tc.slow})
		if tc.left > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, tc.left)
			defer cancel()
		}
		if got := attemptTimeout(ctx, d); got != tc.want {
			t.Errorf("after %d slow attempts with %s left: timeout %s; want %s", tc.slow, tc.left, got, tc.want)
		}
	}
}

// TestLostAuditAppendHeadMoved: an audit append commits and its answer is
// lost; before it is sent again another server appends the next record.
// The append still succeeds: its record, not the head, tells it that it
// committed. Each record is stored once.
func TestLostAuditAppendHeadMoved(t *testing.T) {
	td := newTrustDomain()
	var hook atomic.Pointer[func()]
	lose := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method != "/etcdserverpb.KV/Txn" || err != nil {
			return err
		}
		if f := hook.Swap(nil); f != nil {
			(*f)()
			return status.Error(codes.Unavailable, "test: the answer was lost after the commit")
		}
		return err
	}
	a := open(t, Options{TrustDomain: td, ReplicaID: "a", interceptor: lose})
	defer a.Close()
	b := open(t, Options{TrustDomain: td, ReplicaID: "b"})
	defer b.Close()
	ctx := t.Context()
	r1 := storage.AuditRecord{Seq: 1, Time: t0, Action: "test", Result: "ok", Hash: fmt.Sprintf("%064x", 1)}
	r2 := storage.AuditRecord{Seq: 2, Time: t0, Action: "test", Result: "ok", Prev: r1.Hash, Hash: fmt.Sprintf("%064x", 2)}
	moved := func() {
		if err := b.AppendAudit(ctx, r2, storage.AuditHead{Seq: 2, Hash: r2.Hash}); err != nil {
			t.Errorf("the other server's append: %v", err)
		}
	}
	hook.Store(&moved)
	if err := a.AppendAudit(ctx, r1, storage.AuditHead{Seq: 1, Hash: r1.Hash}); err != nil {
		t.Fatalf("AppendAudit whose answer was lost while the head moved on: %v", err)
	}
	if hook.Load() != nil {
		t.Fatal("no answer was lost")
	}
	var seqs []uint64
	head, err := a.ScanAudit(ctx, 0, func(r storage.AuditRecord, err error) bool {
		seqs = append(seqs, r.Seq)
		return err == nil
	})
	if err != nil || head.Seq != 2 || fmt.Sprint(seqs) != "[1 2]" {
		t.Fatalf("audit trail: head %d, records %v, %v; want [1 2]", head.Seq, seqs, err)
	}
}
