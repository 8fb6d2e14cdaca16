package etcd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/etcd/etcdtest"
)

var t0 = time.Date(2026, 11, 24, 13, 0, 0, 0, time.UTC)

func rec(n int, id string, notAfter time.Time) storage.Serial {
	return storage.Serial{Serial: fmt.Sprintf("%032x", n), SPIFFEID: id, EntryID: "e", NotBefore: t0, NotAfter: notAfter, IssuedAt: t0}
}

// TestJoinTokenRaceAcrossReplicas: two servers sharing a trust domain use
// one join token at once from many goroutines: exactly one use wins.
func TestJoinTokenRaceAcrossReplicas(t *testing.T) {
	td := newTrustDomain()
	a := open(t, Options{TrustDomain: td, ReplicaID: "a"})
	defer a.Close()
	b := open(t, Options{TrustDomain: td, ReplicaID: "b"})
	defer b.Close()
	ctx := t.Context()
	tok := storage.JoinToken{Hash: strings.Repeat("ab", 32), Node: "n1", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if err := a.CreateJoinToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	const n = 24
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			<-start
			_, _, errs[i] = s.ConsumeJoinToken(ctx, tok.Hash, t0.Add(time.Minute))
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, storage.ErrTokenUsed):
			t.Errorf("consumer %d: %v, want ErrTokenUsed", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d consumers won, want exactly 1", wins)
	}
}

// TestRevokeIDAtomicAcrossReplicas: while server B records certificates
// of an ID, server A revokes the ID. Every record of the ID is then either
// revoked or was committed after the revocation's record: none slips
// between the read of the ID's certificates and the revocation.
func TestRevokeIDAtomicAcrossReplicas(t *testing.T) {
	td := newTrustDomain()
	a := open(t, Options{TrustDomain: td, ReplicaID: "a"})
	defer a.Close()
	b := open(t, Options{TrustDomain: td, ReplicaID: "b"})
	defer b.Close()
	ctx := t.Context()
	web := "spiffe://example.org/web"
	notAfter := time.Now().Add(time.Hour)
	for i := range 50 {
		if err := b.RecordSerial(ctx, rec(i, web, notAfter)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var recorded atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 1000 * (g + 1); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r := rec(i, web, notAfter)
				r.IssuedAt = time.Now()
				if err := b.RecordSerial(ctx, r); err != nil {
					t.Errorf("RecordSerial: %v", err)
					return
				}
				recorded.Add(1)
			}
		})
	}
	// Let the writers run, then revoke while they keep writing.
	for recorded.Load() < 20 {
		time.Sleep(time.Millisecond) // no event to wait on: B's writes are another server's
	}
	if _, err := a.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: time.Now()}, time.Now()); err != nil {
		t.Fatalf("RevokeID: %v", err)
	}
	for n := recorded.Load(); recorded.Load() < n+20; {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()

	// Read the records and revocations, with their revisions, directly.
	idResp, err := a.cli.Get(ctx, a.p.revokedID(web))
	if err != nil || len(idResp.Kvs) != 1 {
		t.Fatalf("revocation record: %v, %v", idResp, err)
	}
	revokedAt := idResp.Kvs[0].ModRevision
	revoked := map[string]bool{}
	rdir := a.p.dir(kindRevokedSerials)
	rs, err := a.cli.Get(ctx, rdir, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range rs.Kvs {
		revoked[strings.TrimPrefix(string(kv.Key), rdir)] = true
	}
	recs, err := a.cli.Get(ctx, a.p.serialIDs(web), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	after := 0
	for _, kv := range recs.Kvs {
		var r storage.Serial
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			t.Fatal(err)
		}
		switch {
		case revoked[r.Serial]:
		case kv.ModRevision > revokedAt:
			after++
		default:
			t.Errorf("serial %s recorded at revision %d, before the revocation (%d), is not revoked", r.Serial, kv.ModRevision, revokedAt)
		}
	}
	if len(revoked) < 50 || after == 0 {
		t.Errorf("%d revoked, %d recorded after the revocation: the race did not happen as planned", len(revoked), after)
	}
}

// TestRevokeUnboundAcrossReplicas: a restart revokes the unbound serials
// of its own crashed run and of a replica whose lease expired, never
// those of a live replica.
func TestRevokeUnboundAcrossReplicas(t *testing.T) {
	td := newTrustDomain()
	ctx := t.Context()
	now := time.Now()
	reserve := func(s *Store, from int) {
		t.Helper()
		if err := s.ReserveSerials(ctx, storage.Reservation{Serials: []string{fmt.Sprintf("%032x", from), fmt.Sprintf("%032x", from+1)}, NotAfter: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	a := open(t, Options{TrustDomain: td, ReplicaID: "a"})
	live := open(t, Options{TrustDomain: td, ReplicaID: "live"})
	defer live.Close()
	dead := open(t, Options{TrustDomain: td, ReplicaID: "dead"})
	reserve(a, 10)
	reserve(live, 20)
	reserve(dead, 30)
	crash(t, a)
	// The dead replica's lease expires: revoked here rather than waited for.
	if _, err := live.cli.Revoke(ctx, dead.lease); err != nil {
		t.Fatal(err)
	}
	crash(t, dead)

	a = open(t, Options{TrustDomain: td, ReplicaID: "a"})
	defer a.Close()
	got, err := a.RevokeUnbound(ctx, now, "crash")
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	for _, r := range got {
		serials = append(serials, r.Serial)
	}
	want := []string{fmt.Sprintf("%032x", 10), fmt.Sprintf("%032x", 11), fmt.Sprintf("%032x", 30), fmt.Sprintf("%032x", 31)}
	if fmt.Sprint(serials) != fmt.Sprint(want) {
		t.Fatalf("RevokeUnbound revoked %v, want %v (never the live replica's 20, 21)", serials, want)
	}
	// The live replica's reservation is still there: its own clean close
	// releases it.
	if err := live.ReleaseSerials(ctx, []string{fmt.Sprintf("%032x", 20), fmt.Sprintf("%032x", 21)}); err != nil {
		t.Fatal(err)
	}
	resp, err := a.cli.Get(ctx, a.p.dir(kindReservations), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("reservations left: %d, %v; want none", resp.Count, err)
	}
}

// TestSerialsBatched: bindings are written many to a transaction, not one
// round trip per certificate.
func TestSerialsBatched(t *testing.T) {
	s := open(t, Options{})
	defer s.Close()
	ctx := t.Context()
	const n = 640
	for i := range n {
		if err := s.BindSerial(ctx, rec(i, "spiffe://example.org/web", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.SerialsFor(ctx, "spiffe://example.org/web", t0)
	if err != nil || len(got) != n {
		t.Fatalf("SerialsFor = %d records, %v; want %d", len(got), err, n)
	}
	if txns := s.serialTxns.Load(); txns > n/8 {
		t.Errorf("%d records took %d transactions; want at most %d", n, txns, n/8)
	}
}

// TestUnavailable: with etcd stopped, calls fail within the timeout with
// an error wrapping storage.ErrUnavailable that names the endpoint;
// bindings queued meanwhile are written once etcd is back, and calls
// succeed again.
func TestUnavailable(t *testing.T) {
	t.Parallel() // its own member, whose stop waits out the client's streams
	srv := etcdtest.Start(t, nil)
	const timeout = 500 * time.Millisecond
	s := open(t, Options{Endpoints: []string{srv.Endpoint}, Timeout: timeout})
	defer s.Close()
	ctx := t.Context()
	web := "spiffe://example.org/web"
	if err := s.CreateEntry(ctx, storage.Entry{ID: "e1", SPIFFEID: web, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	downStart := time.Now()
	if err := s.BindSerial(ctx, rec(1, web, t0.Add(time.Hour))); err != nil {
		t.Fatalf("BindSerial while etcd is down: %v (queued, want nil)", err)
	}
	for name, call := range map[string]func() error{
		"GetEntry":     func() error { _, err := s.GetEntry(ctx, "e1"); return err },
		"CreateEntry":  func() error { return s.CreateEntry(ctx, storage.Entry{ID: "e2", SPIFFEID: web, CreatedAt: t0}) },
		"RecordSerial": func() error { return s.RecordSerial(ctx, rec(2, web, t0.Add(time.Hour))) },
		"SerialsFor":   func() error { _, err := s.SerialsFor(ctx, web, t0); return err },
		"RevokeID": func() error {
			_, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: t0}, t0)
			return err
		},
	} {
		start := time.Now()
		err := call()
		took := time.Since(start)
		if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), srv.Endpoint) {
			t.Errorf("%s with etcd down = %v; want ErrUnavailable naming %s", name, err, srv.Endpoint)
		}
		if took > 3*timeout {
			t.Errorf("%s with etcd down took %s; want about the timeout %s", name, took, timeout)
		}
	}
	// RecordSerial failed to write: no certificate is issued (bound)
	// until etcd takes writes again.
	if err := s.BindSerial(ctx, rec(3, web, t0.Add(time.Hour))); !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), srv.Endpoint) {
		t.Errorf("BindSerial after a failed write = %v; want ErrUnavailable naming %s", err, srv.Endpoint)
	}
	down := time.Now()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("calls with etcd down took %s; restart %s", down.Sub(downStart), time.Since(down))
	// The client reconnects with a backoff: poll until a read succeeds.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := s.GetEntry(ctx, "e1")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetEntry after etcd came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Bindings are taken again once the queued one is written (retried
	// every second).
	for {
		err := s.BindSerial(ctx, rec(4, web, t0.Add(time.Hour)))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("BindSerial after etcd came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := s.SerialsFor(ctx, web, t0)
	if err != nil || len(got) != 2 || got[0].Serial != fmt.Sprintf("%032x", 1) || got[1].Serial != fmt.Sprintf("%032x", 4) {
		t.Errorf("SerialsFor after etcd came back = %v, %v; want the binding queued while it was down and the one made after", got, err)
	}
}

// TestTLS: with client certificates required, a client with the
// certificate works; one without it, or in plain text, is refused.
func TestTLS(t *testing.T) {
	t.Parallel() // its own member
	files, err := etcdtest.NewTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := etcdtest.Start(t, files)
	cfg, err := TLSConfig(files.CA, files.ClientCert, files.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, Options{Endpoints: []string{srv.Endpoint}, TLS: cfg})
	if err := s.CreateEntry(t.Context(), storage.Entry{ID: "e1", SPIFFEID: "spiffe://example.org/a", CreatedAt: t0}); err != nil {
		t.Fatalf("CreateEntry over TLS: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	noCert, err := TLSConfig(files.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]*tls.Config{"no client certificate": noCert, "plain text": nil} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		s, err := Open(ctx, Options{Endpoints: []string{srv.Endpoint}, TLS: tc, TrustDomain: newTrustDomain(), ReplicaID: "r", Timeout: 500 * time.Millisecond})
		cancel()
		if err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded, want it refused", name)
		} else if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), srv.Endpoint) {
			t.Errorf("%s: Open = %v; want ErrUnavailable naming %s", name, err, srv.Endpoint)
		}
	}
	for name, args := range map[string][3]string{
		"cert without key": {files.CA, files.ClientCert, ""},
		"missing CA":       {files.CA + ".missing", "", ""},
		"CA not PEM":       {files.ClientKey + "x", "", ""},
	} {
		if _, err := TLSConfig(args[0], args[1], args[2]); err == nil {
			t.Errorf("TLSConfig(%s) succeeded, want an error", name)
		}
	}
}

// TestLateRecordRevoked: a certificate issued before its ID's revocation
// whose record lands only after it (its server was cut off from etcd) is
// revoked when it lands: the revocation could not see it.
func TestLateRecordRevoked(t *testing.T) {
	td := newTrustDomain()
	a := open(t, Options{TrustDomain: td, ReplicaID: "a"})
	defer a.Close()
	b := open(t, Options{TrustDomain: td, ReplicaID: "b"})
	defer b.Close()
	ctx := t.Context()
	web := "spiffe://example.org/web"
	revokedAt := t0.Add(time.Minute)
	if _, err := b.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: revokedAt, Reason: "stolen"}, revokedAt); err != nil {
		t.Fatal(err)
	}
	early := rec(1, web, t0.Add(time.Hour)) // IssuedAt t0: before the revocation
	late := rec(2, web, t0.Add(time.Hour))
	late.IssuedAt = revokedAt.Add(time.Second) // after it: not revoked
	other := rec(3, "spiffe://example.org/other", t0.Add(time.Hour))
	for _, r := range []storage.Serial{early, late, other} {
		if err := a.RecordSerial(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	_, serials, err := b.ListRevocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(serials) != 1 || serials[0].Serial != early.Serial || !serials[0].RevokedAt.Equal(revokedAt) || serials[0].Reason != "stolen" {
		t.Fatalf("revoked serials = %+v; want only %s, with the ID's revocation time and reason", serials, early.Serial)
	}
}
