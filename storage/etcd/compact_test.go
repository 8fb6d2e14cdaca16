package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/etcd/etcdtest"
)

// testCompactEvery is the compaction interval of the tests: the flag's
// minimum (a minute) applies to the command line only.
const testCompactEvery = 200 * time.Millisecond

// compactions counts the compactions of one store and reports each on a
// channel.
type compactions struct {
	n    atomic.Int64
	revs chan int64 // buffered; events past its capacity are dropped
}

func newCompactions() *compactions { return &compactions{revs: make(chan int64, 64)} }

// hook is the store's onCompact.
func (c *compactions) hook(rev int64) {
	c.n.Add(1)
	select {
	case c.revs <- rev:
	default:
	}
}

// next waits for the store's next compaction and returns its revision.
func (c *compactions) next(t *testing.T, within time.Duration, what string) int64 {
	t.Helper()
	select {
	case rev := <-c.revs:
		return rev
	case <-time.After(within):
		t.Fatalf("%s: no compaction within %s", what, within)
		return 0
	}
}

// churn writes and deletes n records of 300 bytes under prefix, as
// issuance then pruning does serial records, in transactions of 64
// operations, and returns the revision after.
func churn(t *testing.T, cli *clientv3.Client, prefix string, n int) int64 {
	t.Helper()
	ctx := t.Context()
	val := strings.Repeat("x", 300)
	var rev int64
	for _, del := range []bool{false, true} {
		for i := 0; i < n; i += 64 {
			var ops []clientv3.Op
			for j := i; j < min(i+64, n); j++ {
				key := fmt.Sprintf("%sserials/%08d", prefix, j)
				if del {
					ops = append(ops, clientv3.OpDelete(key))
				} else {
					ops = append(ops, clientv3.OpPut(key, val))
				}
			}
			resp, err := cli.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		}
	}
	return rev
}

// inUse returns the bytes of the member's database in use, and its size.
func inUse(t *testing.T, s *Store) (used, size int64) {
	t.Helper()
	st, err := s.cli.Status(t.Context(), s.cli.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	return st.DbSizeInUse, st.DbSize
}

// TestCompact: the leader compacts etcd's history every interval, to the
// revision it read one interval earlier: the old revisions of the
// records written and deleted are gone, the current state is intact, and
// the compacted revision itself is still read. With compaction off
// (a negative interval; --etcd-compact-interval 0) a leader never
// compacts, though it led for as long as the other compacted twice.
func TestCompact(t *testing.T) {
	t.Parallel() // its own members: compaction is cluster-wide
	on, off := etcdtest.Start(t, nil), etcdtest.Start(t, nil)
	onC, offC := newCompactions(), newCompactions()
	s := open(t, Options{Endpoints: []string{on.Endpoint}, CompactInterval: testCompactEvery, onCompact: onC.hook})
	defer s.Close()
	so := open(t, Options{Endpoints: []string{off.Endpoint}, CompactInterval: -1, onCompact: offC.hook})
	defer so.Close()
	ctx := t.Context()
	const n = 2000
	type history struct {
		first, after int64 // the revisions of the key's two values
	}
	write := func(st *Store) history {
		var h history
		key := st.p.meta("compact-test")
		r1, err := st.cli.Put(ctx, key, "v1")
		if err != nil {
			t.Fatal(err)
		}
		h.first = r1.Header.Revision
		churn(t, st.cli, string(st.p), n)
		r2, err := st.cli.Put(ctx, key, "v2")
		if err != nil {
			t.Fatal(err)
		}
		h.after = r2.Header.Revision
		return h
	}
	hOn, hOff := write(s), write(so)
	usedBefore, sizeBefore := inUse(t, s)
	// Only now does each store campaign, and lead (each alone in its
	// trust domain): the leader reads the revision at once and compacts
	// to it one interval later.
	leadStart := time.Now()
	waitLeader(t, 10*time.Second, s)
	waitLeader(t, 10*time.Second, so)
	c1 := onC.next(t, 10*time.Second, "the leader")
	if took := time.Since(leadStart); took < testCompactEvery {
		t.Errorf("the first compaction came %s after the campaign began; want at least the interval %s", took, testCompactEvery)
	}
	if c1 < hOn.after {
		t.Errorf("compacted to revision %d; want at least %d, the revision when the leader began", c1, hOn.after)
	}
	// A write, so that there is something new to compact: a leader
	// does not compact an idle cluster again.
	if _, err := s.cli.Put(ctx, s.p.meta("compact-test-2"), "x"); err != nil {
		t.Fatal(err)
	}
	c2 := onC.next(t, 10*time.Second, "the leader, again")
	if c2 <= c1 {
		t.Errorf("the second compaction went to revision %d, the first to %d: want later", c2, c1)
	}
	key := s.p.meta("compact-test")
	if _, err := s.cli.Get(ctx, key, clientv3.WithRev(hOn.first)); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Errorf("a read at revision %d, before the compaction to %d: %v, want ErrCompacted", hOn.first, c2, err)
	}
	if resp, err := s.cli.Get(ctx, key, clientv3.WithRev(c2)); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v2" {
		t.Errorf("a read at the compacted revision %d: %v, %v; want v2 (compaction keeps the revision it compacts to)", c2, resp, err)
	}
	if resp, err := s.cli.Get(ctx, key); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v2" {
		t.Errorf("the current value after compaction: %v, %v; want v2", resp, err)
	}
	if _, err := s.GetEntry(ctx, "none"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the store after compaction: GetEntry = %v, want ErrNotFound", err)
	}
	if n, rev := s.Compactions(); n < 2 || rev < c2 {
		t.Errorf("Compactions = %d, revision %d; want at least 2, the last to %d or later", n, rev, c2)
	}
	// The leader with compaction off led as long, and kept everything.
	if got := offC.n.Load(); got != 0 {
		t.Errorf("the leader with compaction off compacted %d times", got)
	}
	if resp, err := so.cli.Get(ctx, so.p.meta("compact-test"), clientv3.WithRev(hOff.first)); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Errorf("with compaction off, a read at revision %d: %v, %v; want v1, history kept", hOff.first, resp, err)
	}
	if n, rev := so.Compactions(); n != 0 || rev != 0 {
		t.Errorf("with compaction off, Compactions = %d, revision %d; want none", n, rev)
	}
	// The space the old revisions held is free inside the file, for
	// later writes; the file keeps its size (only a defragmentation
	// shrinks it). Members free it in the background: poll.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	used, size := inUse(t, s)
	for used >= usedBefore && time.Now().Before(deadline) {
		<-tick.C
		used, size = inUse(t, s)
	}
	usedOff, sizeOff := inUse(t, so)
	t.Logf("%d records of 300 bytes written and deleted (%d revisions): database in use %d of %d bytes before compaction, "+
		"%d of %d after (compacted to revision %d); with compaction off %d of %d",
		n, hOn.after, usedBefore, sizeBefore, used, size, c2, usedOff, sizeOff)
	if used >= usedBefore {
		t.Errorf("database in use %d bytes after compaction, %d before: want less", used, usedBefore)
	}
}

// TestCompactOnlyLeader: of two servers on one cluster only the leader
// compacts; when it closes, the other leads, and compacts from then on,
// an interval after it began to lead (it starts afresh).
func TestCompactOnlyLeader(t *testing.T) {
	t.Parallel() // its own member: compaction is cluster-wide
	srv := etcdtest.Start(t, nil)
	td := newTrustDomain()
	counts := map[*Store]*compactions{}
	var stores []*Store
	for _, r := range []string{"r1", "r2"} {
		c := newCompactions()
		s := open(t, Options{Endpoints: []string{srv.Endpoint}, TrustDomain: td, ReplicaID: r, RunTTL: 2 * time.Second,
			CompactInterval: testCompactEvery, onCompact: c.hook})
		defer s.Close()
		counts[s] = c
		stores = append(stores, s)
	}
	leader := waitLeader(t, 10*time.Second, stores...)
	other := stores[0]
	if other == leader {
		other = stores[1]
	}
	// Each compaction needs a write since the last: a leader does not
	// compact an idle cluster again.
	write := func() {
		t.Helper()
		if _, err := other.cli.Put(t.Context(), other.p.meta("compact-test"), time.Now().String()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		write()
		counts[leader].next(t, 10*time.Second, fmt.Sprintf("the leader's compaction %d", i+1))
	}
	if got := counts[other].n.Load(); got != 0 {
		t.Fatalf("the server that does not lead compacted %d times", got)
	}
	closing := time.Now()
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	byLeader := counts[leader].n.Load()
	waitLeader(t, 10*time.Second, other)
	write()
	counts[other].next(t, 10*time.Second, "the new leader")
	if took := time.Since(closing); took < testCompactEvery {
		t.Errorf("the new leader compacted %s after the old one closed; want an interval (%s) later at least", took, testCompactEvery)
	}
	write()
	counts[other].next(t, 10*time.Second, "the new leader, again")
	if got := counts[leader].n.Load(); got != byLeader {
		t.Errorf("the closed server compacted %d times after Close", got-byLeader)
	}
}

// TestWatchAfterCompaction: a compaction under a running watch does not
// disturb it; a watch whose history was compacted before it caught up
// starts again from the current state, reports ChangeAll, and reports
// the changes made after.
func TestWatchAfterCompaction(t *testing.T) {
	t.Parallel() // its own member: compaction is cluster-wide
	srv := etcdtest.Start(t, nil)
	td := newTrustDomain()
	eps := []string{srv.Endpoint}
	a := open(t, Options{Endpoints: eps, TrustDomain: td, ReplicaID: "a", CompactInterval: -1})
	defer a.Close()
	running := open(t, Options{Endpoints: eps, TrustDomain: td, ReplicaID: "b", CompactInterval: -1})
	defer running.Close()
	late := open(t, Options{Endpoints: eps, TrustDomain: td, ReplicaID: "c", CompactInterval: -1})
	defer late.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	watch := func(s *Store) chan storage.Change {
		ch := make(chan storage.Change, 64)
		go func() { _ = s.Watch(ctx, func(c storage.Change) { ch <- c }) }()
		return ch
	}
	next := func(ch chan storage.Change, what string) storage.Change {
		t.Helper()
		select {
		case c := <-ch:
			return c
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no change reported within 10s", what)
			return 0
		}
	}
	compact := func() {
		t.Helper()
		rev, err := a.revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.cli.Compact(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	runCh := watch(running)
	if err := a.CreateEntry(ctx, storage.Entry{ID: "e1", SPIFFEID: "spiffe://example.org/e1", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if c := next(runCh, "the running watch"); c&storage.ChangeEntries == 0 {
		t.Fatalf("the running watch reported %b, want entries", c)
	}
	// late's watch begins at the revision late was opened at, older
	// than the compaction: etcd refuses it.
	for i := range 3 {
		if err := a.PutNode(ctx, storage.Node{Name: fmt.Sprint("n", i), Attestation: storage.AttestJoinToken, FirstAttestedAt: t0, LastAttestedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	if c := next(runCh, "the running watch"); c&storage.ChangeNodes == 0 {
		t.Fatalf("the running watch reported %b, want nodes", c)
	}
	compact()
	lateCh := watch(late)
	if c := next(lateCh, "the watch whose history was compacted"); c != storage.ChangeAll {
		t.Fatalf("the watch whose history was compacted first reported %b, want ChangeAll %b", c, storage.ChangeAll)
	}
	if err := a.PutKey(ctx, storage.Key{ID: "k1", State: storage.KeyActive}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		name string
		ch   chan storage.Change
	}{{"the running watch, after the compaction", runCh}, {"the watch started again after the compaction", lateCh}} {
		for {
			c := next(w.ch, w.name)
			if c&storage.ChangeKeys != 0 {
				break
			}
			// An earlier burst (the nodes) may come first.
		}
	}
}
