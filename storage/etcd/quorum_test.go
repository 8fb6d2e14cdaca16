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

// TestQuorum: a store given the endpoints of a three-member cluster.
// Writers keep recording serials and creating entries while the leader
// is killed: a write in flight then may fail, with storage.ErrUnavailable
// only (its request went to the dead member, or its proposal was lost
// with the leader), and every acknowledged write is kept; once another
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
