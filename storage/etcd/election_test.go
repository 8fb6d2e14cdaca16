package etcd

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage"
)

// waitLeader waits until exactly one of stores leads, woken by their
// Lead channels, and returns it.
func waitLeader(t *testing.T, within time.Duration, stores ...*Store) *Store {
	t.Helper()
	deadline := time.After(within)
	for {
		var leaders []*Store
		var changed []<-chan struct{}
		for _, s := range stores {
			ok, ch := s.Lead()
			if ok {
				leaders = append(leaders, s)
			}
			changed = append(changed, ch)
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		select {
		case <-changed[0]:
		case <-changed[len(changed)-1]:
		case <-deadline:
			t.Fatalf("%d leaders after %s, want 1", len(leaders), within)
		case <-time.After(100 * time.Millisecond): // a store not listed first or last
		}
	}
}

// TestElection: of the servers of a trust domain exactly one leads; when
// it closes, another leads at once (it resigned); when it dies, another
// leads once its lease has expired.
func TestElection(t *testing.T) {
	td := newTrustDomain()
	opts := func(r string) Options { return Options{TrustDomain: td, ReplicaID: r, RunTTL: 2 * time.Second} }
	s1, s2, s3 := open(t, opts("r1")), open(t, opts("r2")), open(t, opts("r3"))
	stores := []*Store{s1, s2, s3}
	leader := waitLeader(t, 10*time.Second, stores...)
	var rest []*Store
	for _, s := range stores {
		if s != leader {
			rest = append(rest, s)
		}
	}
	start := time.Now()
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	next := waitLeader(t, 5*time.Second, rest...)
	if took := time.Since(start); took > time.Second {
		t.Errorf("after a clean close another server led after %s, want at once (resigned)", took)
	}
	last := rest[0]
	if next == last {
		last = rest[1]
	}
	start = time.Now()
	crash(t, next)
	if got := waitLeader(t, 10*time.Second, last); got != last {
		t.Fatal("the last server does not lead")
	}
	t.Logf("after the leader died, another led after %s", time.Since(start))
	last.Close()
}

// TestCreateFirstKey: of servers making the first root at once exactly
// one stores it; a key of another kind does not count.
func TestCreateFirstKey(t *testing.T) {
	td := newTrustDomain()
	s1 := open(t, Options{TrustDomain: td, ReplicaID: "r1"})
	s2 := open(t, Options{TrustDomain: td, ReplicaID: "r2"})
	t.Cleanup(func() { s1.Close(); s2.Close() })
	ctx := t.Context()
	now := time.Now().UTC()
	if err := s1.PutKey(ctx, storage.Key{ID: "x509-intermediate-1", Kind: "x509-intermediate", State: storage.KeyActive, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, s := range []*Store{s1, s2} {
		wg.Go(func() {
			errs[i] = s.CreateFirstKey(ctx, storage.Key{ID: "x509-root-" + s.replica, Kind: "x509-root", State: storage.KeyActive, CreatedAt: now}, "x509-root-")
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, storage.ErrExists):
			t.Fatalf("CreateFirstKey: %v, want nil or ErrExists", err)
		}
	}
	keys, err := s1.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if won != 1 || len(keys) != 2 {
		t.Fatalf("%d won, %d keys; want one root beside the intermediate", won, len(keys))
	}
	if err := s1.CreateFirstKey(ctx, storage.Key{ID: "x509-root-late", Kind: "x509-root", State: storage.KeyActive, CreatedAt: now}, "x509-root-"); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("a second first root: %v, want ErrExists", err)
	}
}
