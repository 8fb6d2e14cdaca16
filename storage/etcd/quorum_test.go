package etcd

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/etcd/etcdtest"
)

// TestQuorum: a store given the endpoints of a three-member cluster, with
// a timeout of 1 s, about one election. Writers keep recording serials
// and creating entries while the leader is killed: a write in flight
// then may fail (TestQuorumMemberKilled shows none does with the default
// timeout), with storage.ErrUnavailable only, and every acknowledged
// write is kept; once another
// member leads, writes, reads and revocations succeed with no error.
// With a second member killed, quorum is lost: writes fail within the
// timeout with storage.ErrUnavailable naming the endpoints. When the
// members restart, writes succeed again by themselves.
func TestQuorum(t *testing.T) {
	t.Parallel() // its own members
	c := etcdtest.StartCluster(t, 3)
	const timeout = time.Second
	s := open(t, Options{Endpoints: c.Endpoints(), Timeout: timeout})
	defer s.Close()
	ctx := t.Context()
	web := "spiffe://example.org/web"
	notAfter := time.Now().Add(time.Hour)

	var (
		n                atomic.Int64
		mu               sync.Mutex
		failed           []error
		entries, serials []int64 // acknowledged
	)
	// write makes the next entry or serial record and notes what was
	// acknowledged.
	write := func() error {
		i := n.Add(1)
		var err error
		if i%2 == 0 {
			err = s.CreateEntry(ctx, storage.Entry{ID: fmt.Sprintf("e%d", i), SPIFFEID: web, CreatedAt: t0})
		} else {
			err = s.RecordSerial(ctx, rec(int(i), web, notAfter))
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			failed = append(failed, err)
		case i%2 == 0:
			entries = append(entries, i)
		default:
			serials = append(serials, i)
		}
		return err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = write()
			}
		})
	}
	leader, err := c.WaitLeader(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for n.Load() < 20 {
		time.Sleep(time.Millisecond) // no event: the writers' progress
	}
	start := time.Now()
	c.Members[leader].Stop()
	if _, err := c.WaitLeader(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	elected := time.Since(start)
	close(stop)
	wg.Wait()
	t.Logf("leader killed, another leads within %s; %d writes in flight failed", elected, len(failed))
	for _, err := range failed {
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("a write in flight while the leader died: %v; want ErrUnavailable", err)
		}
	}
	// Another member leads: no error.
	for range 20 {
		if err := write(); err != nil {
			t.Fatalf("write with one member killed and a new leader: %v", err)
		}
	}
	for _, i := range entries {
		if _, err := s.GetEntry(ctx, fmt.Sprintf("e%d", i)); err != nil {
			t.Errorf("acknowledged entry e%d: %v", i, err)
		}
	}
	got, err := s.SerialsFor(ctx, web, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, r := range got {
		have[r.Serial] = true
	}
	for _, i := range serials {
		if r := rec(int(i), web, notAfter); !have[r.Serial] {
			t.Errorf("acknowledged serial %s is missing", r.Serial)
		}
	}
	if _, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: time.Now()}, time.Now()); err != nil {
		t.Errorf("RevokeID with one member killed: %v", err)
	}

	second := (leader + 1) % 3
	c.Members[second].Stop()
	start = time.Now()
	err = s.RecordSerial(ctx, rec(1_000_000, web, notAfter))
	took := time.Since(start)
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), c.Members[second].Endpoint) {
		t.Errorf("RecordSerial with quorum lost = %v; want ErrUnavailable naming the endpoints", err)
	}
	if took > 3*timeout {
		t.Errorf("RecordSerial with quorum lost took %s; want about the timeout %s", took, timeout)
	}

	for _, i := range []int{leader, second} {
		if err := c.Members[i].Restart(); err != nil {
			t.Fatal(err)
		}
	}
	start = time.Now()
	deadline := start.Add(15 * time.Second)
	for {
		err := s.RecordSerial(ctx, rec(1_000_001, web, notAfter))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("RecordSerial after quorum came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // no event: the cluster's recovery
	}
	t.Logf("writes back %s after the restart", time.Since(start))
}

// TestQuorumMemberKilled: with the default timeouts, a store given the
// endpoints of a three-member cluster, and writers doing every kind of
// write continuously (entries created and deleted, serials recorded and
// bound, IDs and certificates revoked, join tokens created and used,
// revocation-list numbers, node records, audit appends) while the leader
// is killed, a new one is elected, the old leader restarts, and then a
// follower the client holds a connection to is killed: no call returns
// an error; every acknowledged write is there afterwards, every deleted
// record gone; no token is used twice; no revocation-list number is
// returned twice or goes back; the audit trail has one record per
// acknowledged append.
func TestQuorumMemberKilled(t *testing.T) {
	t.Parallel() // its own members
	c := etcdtest.StartCluster(t, 3)
	s := open(t, Options{Endpoints: c.Endpoints()})
	defer s.Close()
	ctx := t.Context()
	notAfter := time.Now().Add(time.Hour)

	var (
		mu      sync.Mutex
		failed  []error
		worst   time.Duration
		worstOp string
		killed  atomic.Bool // a member is down or was just restarted
		during  time.Duration
	)
	// timed runs one call of the store and notes its error and latency.
	timed := func(op string, f func() error) error {
		start := time.Now()
		err := f()
		d := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", op, err))
		}
		if d > worst {
			worst, worstOp = d, op
		}
		if killed.Load() && d > during {
			during = d
		}
		return err
	}

	// What was acknowledged, by kind.
	type acked struct {
		mu                      sync.Mutex
		entries, deleted        []string
		serials, revokedSerials []string
		revokedIDs, tokens      []string
		nodes                   []string
		crl                     [][]uint64 // by writer
		audit                   uint64
	}
	var ack acked
	ack.crl = make([][]uint64, 2)
	note := func(f func()) {
		ack.mu.Lock()
		f()
		ack.mu.Unlock()
	}
	serialOf := func(w, i int) storage.Serial {
		return rec(w*1_000_000+i, fmt.Sprintf("spiffe://example.org/w%d/%d", w, i), notAfter)
	}
	var auditHead storage.AuditHead
	writers := []func(w, i int){
		func(w, i int) { // entries: create, and delete every other one
			id := fmt.Sprintf("e%d", i)
			if timed("CreateEntry", func() error {
				return s.CreateEntry(ctx, storage.Entry{ID: id, SPIFFEID: "spiffe://example.org/web", CreatedAt: t0})
			}) == nil {
				note(func() { ack.entries = append(ack.entries, id) })
			}
			if i%2 == 1 {
				prev := fmt.Sprintf("e%d", i-1)
				if timed("DeleteEntry", func() error { return s.DeleteEntry(ctx, prev) }) == nil {
					note(func() { ack.deleted = append(ack.deleted, prev) })
				}
			}
		},
		func(w, i int) { // serials: recorded, and reserved then bound
			r := serialOf(w, i)
			if i%2 == 0 {
				if timed("RecordSerial", func() error { return s.RecordSerial(ctx, r) }) == nil {
					note(func() { ack.serials = append(ack.serials, r.Serial) })
				}
				return
			}
			if timed("ReserveSerials", func() error {
				return s.ReserveSerials(ctx, storage.Reservation{NotAfter: notAfter, Serials: []string{r.Serial}})
			}) != nil {
				return
			}
			if timed("BindSerial", func() error { return s.BindSerial(ctx, r) }) == nil {
				note(func() { ack.serials = append(ack.serials, r.Serial) })
			}
		},
		func(w, i int) { // revocations: of an ID with a certificate, of a certificate
			r := serialOf(w, i)
			if timed("RecordSerial", func() error { return s.RecordSerial(ctx, r) }) != nil {
				return
			}
			note(func() { ack.serials = append(ack.serials, r.Serial) })
			if i%2 == 0 {
				var got []storage.RevokedSerial
				if timed("RevokeID", func() error {
					var err error
					got, err = s.RevokeID(ctx, storage.Revocation{SPIFFEID: r.SPIFFEID, RevokedAt: time.Now(), Reason: "test"}, time.Now())
					return err
				}) == nil {
					if len(got) != 1 || got[0].Serial != r.Serial {
						timed("RevokeID result", func() error { return fmt.Errorf("revoked %v; want %s", got, r.Serial) })
					}
					note(func() {
						ack.revokedIDs, ack.revokedSerials = append(ack.revokedIDs, r.SPIFFEID), append(ack.revokedSerials, r.Serial)
					})
				}
				return
			}
			if timed("RevokeSerial", func() error {
				_, err := s.RevokeSerial(ctx, r.Serial, "test", 0, time.Now())
				return err
			}) == nil {
				note(func() { ack.revokedSerials = append(ack.revokedSerials, r.Serial) })
			}
		},
		func(w, i int) { // join tokens: created, then used
			hash := fmt.Sprintf("%064x", i)
			node := fmt.Sprintf("t%d", i)
			if timed("CreateJoinToken", func() error {
				return s.CreateJoinToken(ctx, storage.JoinToken{Hash: hash, Node: node, CreatedAt: t0, ExpiresAt: time.Now().Add(time.Hour)})
			}) != nil {
				return
			}
			if timed("ConsumeJoinToken", func() error {
				_, _, err := s.ConsumeJoinToken(ctx, hash, time.Now())
				return err
			}) == nil {
				note(func() { ack.tokens = append(ack.tokens, hash) })
			}
		},
		func(w, i int) { // revocation-list numbers, from two writers
			for k := range 2 {
				var n uint64
				if timed("NextCRLNumber", func() error {
					var err error
					n, err = s.NextCRLNumber(ctx, 1)
					return err
				}) == nil {
					note(func() { ack.crl[k] = append(ack.crl[k], n) })
				}
			}
		},
		func(w, i int) { // node records
			name := fmt.Sprintf("n%d", i)
			if timed("PutNode", func() error {
				return s.PutNode(ctx, storage.Node{Name: name, Attestation: storage.AttestJoinToken, FirstAttestedAt: t0, LastAttestedAt: t0})
			}) == nil {
				note(func() { ack.nodes = append(ack.nodes, name) })
			}
		},
		func(w, i int) { // the audit trail
			seq := auditHead.Seq + 1
			r := storage.AuditRecord{Seq: seq, Time: t0, Action: "test", Result: "ok", Prev: auditHead.Hash, Hash: fmt.Sprintf("%064x", seq)}
			head := storage.AuditHead{Seq: seq, Hash: r.Hash}
			if timed("AppendAudit", func() error { return s.AppendAudit(ctx, r, head) }) == nil {
				auditHead = head
				note(func() { ack.audit = seq })
			}
		},
	}
	done := make([]atomic.Int64, len(writers))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, write := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				write(w, i)
				done[w].Add(1)
			}
		})
	}
	// progress waits until every writer has done n more rounds: there is
	// no event to wait on but their progress.
	progress := func(what string, n int64) {
		t.Helper()
		want := make([]int64, len(done))
		for w := range done {
			want[w] = done[w].Load() + n
		}
		deadline := time.Now().Add(30 * time.Second)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for w := range done {
			for done[w].Load() < want[w] {
				if time.Now().After(deadline) {
					t.Fatalf("%s: writer %d made no progress in 30 s", what, w)
				}
				<-tick.C
			}
		}
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	progress("before the kill", 3)
	leader, err := c.WaitLeader(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	killed.Store(true)
	start := time.Now()
	c.Members[leader].Stop()
	if _, err := c.WaitLeader(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("leader m%d killed; another elected within %s", leader, time.Since(start).Round(time.Millisecond))
	progress("with the leader killed", 3)
	if err := c.Members[leader].Restart(); err != nil {
		t.Fatal(err)
	}
	progress("with the old leader back", 3)
	now, err := c.WaitLeader(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The member that followed throughout, unless the restarted one
	// leads again.
	follower := 3 - leader - now
	if now == leader {
		follower = (now + 1) % 3
	}
	if n := c.Members[follower].Clients(); n == 0 {
		t.Fatalf("the client holds no connection to follower m%d", follower)
	}
	c.Members[follower].Stop()
	t.Logf("follower m%d killed", follower)
	progress("with a follower killed", 3)
	killed.Store(false)
	close(stop)
	wg.Wait()

	for _, err := range failed {
		t.Errorf("a call failed with one member killed: %v", err)
	}
	t.Logf("worst latency of a call while a member was down: %s (worst overall: %s, %s)", during.Round(time.Millisecond), worst.Round(time.Millisecond), worstOp)

	// Every acknowledged write is there; each once.
	deleted := map[string]bool{}
	for _, id := range ack.deleted {
		deleted[id] = true
		if _, err := s.GetEntry(ctx, id); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("deleted entry %s: %v; want ErrNotFound", id, err)
		}
	}
	for _, id := range ack.entries {
		if _, err := s.GetEntry(ctx, id); !deleted[id] && err != nil {
			t.Errorf("acknowledged entry %s: %v", id, err)
		}
	}
	have := map[string]bool{}
	for w := range writers {
		for i := range int(done[w].Load()) + 1 {
			r := serialOf(w, i)
			got, err := s.SerialsFor(ctx, r.SPIFFEID, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range got {
				have[g.Serial] = true
			}
		}
	}
	for _, sr := range ack.serials {
		if !have[sr] {
			t.Errorf("acknowledged serial %s is missing", sr)
		}
	}
	ids, rsl, err := s.ListRevocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	revoked := map[string]bool{}
	for _, r := range ids {
		revoked[r.SPIFFEID] = true
	}
	for _, r := range rsl {
		revoked[r.Serial] = true
	}
	for _, k := range append(ack.revokedIDs, ack.revokedSerials...) {
		if !revoked[k] {
			t.Errorf("acknowledged revocation of %s is missing", k)
		}
	}
	toks, err := s.ListJoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, j := range toks {
		used[j.Hash] = !j.UsedAt.IsZero()
	}
	for _, h := range ack.tokens {
		if !used[h] {
			t.Errorf("join token %s… used, acknowledged, is not recorded as used", h[:8])
		}
	}
	nodes, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	haveNode := map[string]bool{}
	for _, n := range nodes {
		haveNode[n.Name] = true
	}
	for _, n := range ack.nodes {
		if !haveNode[n] {
			t.Errorf("acknowledged node %s is missing", n)
		}
	}
	seen := map[uint64]bool{}
	for k, ns := range ack.crl {
		for i, n := range ns {
			if seen[n] {
				t.Errorf("revocation-list number %d returned twice", n)
			}
			seen[n] = true
			if i > 0 && n <= ns[i-1] {
				t.Errorf("writer %d: revocation-list number %d after %d", k, n, ns[i-1])
			}
		}
	}
	var seqs int
	head, err := s.ScanAudit(ctx, 0, func(r storage.AuditRecord, err error) bool {
		seqs++
		return err == nil
	})
	if err != nil || head.Seq != ack.audit || uint64(seqs) != ack.audit {
		t.Errorf("audit trail: head %d, %d records, %v; want %d appended", head.Seq, seqs, err, ack.audit)
	}
	t.Logf("acknowledged: %d entries (%d deleted), %d serials, %d revocations, %d tokens used, %d CRL numbers, %d nodes, %d audit records",
		len(ack.entries), len(ack.deleted), len(ack.serials), len(ack.revokedIDs)+len(ack.revokedSerials), len(ack.tokens), len(seen), len(ack.nodes), ack.audit)
}
