package ca

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/badge-dev/badge/internal/testclock"
	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/etcd"
	"github.com/badge-dev/badge/storage/etcd/etcdtest"
)

// waitSnapshot waits up to 5s for a snapshot of a that satisfies ok,
// woken by each new snapshot.
func waitSnapshot(t *testing.T, a *Authority, what string, ok func(*Snapshot) bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		s := a.Snapshot()
		if ok(s) {
			return
		}
		select {
		case <-s.Done():
		case <-deadline:
			t.Fatalf("%s: not published within 5s", what)
		}
	}
}

// TestWatchPublishesOtherServersChanges: two authorities share an etcd
// store (and, as a first step, the key directory). An entry, a
// revocation and a node eviction made through A are published in B's
// snapshots.
func TestWatchPublishesOtherServersChanges(t *testing.T) {
	srv := etcdtest.Start(t, nil)
	dir := t.TempDir()
	clock := testclock.New(testStart)
	openAuth := func(replica string) *Authority {
		t.Helper()
		st, err := etcd.Open(t.Context(), etcd.Options{Endpoints: []string{srv.Endpoint}, TrustDomain: "example.org", ReplicaID: replica})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		a, err := New(context.Background(), Config{Store: st, KeyDir: filepath.Join(dir, "keys"), Time: clock.Now, Monotonic: clock.Monotonic})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	a := openAuth("a")
	b := openAuth("b")
	ctx := t.Context()

	id := mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	waitSnapshot(t, b, "entry created on A", func(s *Snapshot) bool {
		for _, e := range s.Entries() {
			if e.Record.ID == id {
				return true
			}
		}
		return false
	})

	if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Reason: "test", Block: true}); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, b, "revocation made on A", func(s *Snapshot) bool {
		for _, r := range s.revocations.ids {
			if r.ID.String() == "spiffe://example.org/web" && r.Blocked {
				return true
			}
		}
		return false
	})

	if err := a.store.PutNode(ctx, storage.Node{Name: "n1", Attestation: storage.AttestJoinToken, FirstAttestedAt: testStart, LastAttestedAt: testStart}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.EvictNode(ctx, "n1", 0); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, b, "node evicted on A", func(s *Snapshot) bool { return s.evictedNodes["n1"] })

	if err := a.DeleteEntry(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, b, "entry deleted on A", func(s *Snapshot) bool { return len(s.Entries()) == 0 })
}

// TestAuditAcrossServers: two authorities on one store append to one
// audit trail in turn; each append chains to the head the other moved,
// and the trail verifies.
func TestAuditAcrossServers(t *testing.T) {
	srv := etcdtest.Start(t, nil)
	dir := t.TempDir()
	clock := testclock.New(testStart)
	auths := map[string]*Authority{}
	for _, replica := range []string{"a", "b"} {
		st, err := etcd.Open(t.Context(), etcd.Options{Endpoints: []string{srv.Endpoint}, TrustDomain: "example.org", ReplicaID: replica})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		a, err := New(context.Background(), Config{Store: st, KeyDir: filepath.Join(dir, "keys"), Time: clock.Now, Monotonic: clock.Monotonic})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		auths[replica] = a
	}
	ctx := t.Context()
	for i, r := range []string{"a", "b", "a", "a", "b"} {
		if err := auths[r].Audit(ctx, AuditEvent{Action: AuditEntryCreate, Target: fmt.Sprintf("e%d", i)}); err != nil {
			t.Fatalf("audit %d on %s: %v", i, r, err)
		}
	}
	rep, err := auths["b"].VerifyAudit(ctx)
	if err != nil || !rep.OK || rep.Records != 5 {
		t.Fatalf("VerifyAudit = %+v, %v; want 5 records, OK", rep, err)
	}
}

// TestRevokeAbandoned: the reserved, unbound serials of a server that
// died are revoked by a running server's sweep, and published in its
// revocation list.
func TestRevokeAbandoned(t *testing.T) {
	srv := etcdtest.Start(t, nil)
	dir := t.TempDir()
	clock := testclock.New(testStart)
	openStore := func(replica string) *etcd.Store {
		st, err := etcd.Open(t.Context(), etcd.Options{Endpoints: []string{srv.Endpoint}, TrustDomain: "example.org", ReplicaID: replica})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	a, err := New(context.Background(), Config{Store: openStore("a"), KeyDir: filepath.Join(dir, "keys"), Time: clock.Now, Monotonic: clock.Monotonic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ctx := t.Context()
	dead := openStore("dead")
	serials := []string{"dead01", "dead02"}
	if err := dead.ReserveSerials(ctx, storage.Reservation{Serials: serials, NotAfter: testStart.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := dead.Close(); err != nil { // its run ends; the serials were never bound nor released
		t.Fatal(err)
	}
	if err := a.revokeAbandoned(ctx); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, a, "serials of the dead server revoked", func(s *Snapshot) bool {
		_, ok1 := s.revocations.serials[serials[0]]
		_, ok2 := s.revocations.serials[serials[1]]
		return ok1 && ok2
	})
}

// TestJWTRevocationAcrossServers: a JWT-SVID signed by server A validates
// on server B; after B revokes its ID, A refuses it within a second, as
// /introspect on every server must.
func TestJWTRevocationAcrossServers(t *testing.T) {
	srv := etcdtest.Start(t, nil)
	dir := t.TempDir()
	clock := testclock.New(testStart)
	auths := map[string]*Authority{}
	for _, replica := range []string{"a", "b"} {
		st, err := etcd.Open(t.Context(), etcd.Options{Endpoints: []string{srv.Endpoint}, TrustDomain: "example.org", ReplicaID: replica})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		a, err := New(context.Background(), Config{Store: st, KeyDir: filepath.Join(dir, "keys"), Time: clock.Now, Monotonic: clock.Monotonic})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		auths[replica] = a
	}
	a, b := auths["a"], auths["b"]
	ctx := t.Context()
	id := mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	tok, err := a.SignJWTSVID(ctx, a.Snapshot(), entryFor(t, a.Snapshot(), id), []string{"orders"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ValidateJWTSVID(b.Snapshot(), tok.Token, "orders"); err != nil {
		t.Fatalf("B validating A's token: %v", err)
	}
	clock.Advance(time.Second)
	if _, err := b.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitSnapshot(t, a, "revocation made on B", func(s *Snapshot) bool {
		_, err := a.ValidateJWTSVID(s, tok.Token, "orders")
		return err != nil
	})
	if took := time.Since(start); took > time.Second {
		t.Errorf("A refused the revoked token %s after B's revocation, want within 1s", took)
	}
}
