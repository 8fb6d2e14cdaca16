package ca

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/badge-dev/badge/internal/testclock"
	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/etcd"
	"github.com/badge-dev/badge/storage/etcd/etcdtest"
)

// replicaSet opens authorities that share one etcd store, each with its
// own replica id and key directory, and one root key-encryption key.
type replicaSet struct {
	t        *testing.T
	endpoint string
	dir      string
	kek      []byte
	mod      func(*Config)
}

func newReplicaSet(t *testing.T, mod func(*Config)) *replicaSet {
	srv := etcdtest.Start(t, nil)
	kek := make([]byte, RootKEKSize)
	rand.Read(kek)
	return &replicaSet{t: t, endpoint: srv.Endpoint, dir: t.TempDir(), kek: kek, mod: mod}
}

// open starts replica id; the returned close function stops it (also
// done at the end of the test).
func (r *replicaSet) open(id string) (*Authority, func()) {
	r.t.Helper()
	a, stop, err := r.tryOpen(id)
	if err != nil {
		r.t.Fatalf("replica %s: %v", id, err)
	}
	return a, stop
}

func (r *replicaSet) tryOpen(id string) (*Authority, func(), error) {
	st, err := etcd.Open(context.Background(), etcd.Options{Endpoints: []string{r.endpoint}, TrustDomain: "example.org", ReplicaID: id, RunTTL: 2 * time.Second})
	if err != nil {
		return nil, nil, err
	}
	cfg := Config{Store: st, KeyDir: filepath.Join(r.dir, id, "keys"), ReplicaID: id, RootKEK: r.kek}
	if r.mod != nil {
		r.mod(&cfg)
	}
	a, err := New(context.Background(), cfg)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			a.Close()
			st.Close()
		})
	}
	r.t.Cleanup(stop)
	return a, stop, nil
}

// keysOf returns the key set a holds now.
func keysOf(a *Authority) *keySet {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.keys
}

// TestReplicasOwnIntermediatesUnderSharedRoot: servers sharing an etcd
// store share one root, sealed in etcd, and each signs with an
// intermediate and a JWT key of its own, whose private keys only it
// holds. A JWT-SVID signed by one validates on the other; an
// intermediate rotation on A leaves B signing with its own; B restarts
// after A rotated. (Before, B looked for A's key files and failed.)
func TestReplicasOwnIntermediatesUnderSharedRoot(t *testing.T) {
	rs := newReplicaSet(t, nil)
	a, _ := rs.open("a")
	b, stopB := rs.open("b")
	ctx := t.Context()

	if ra, rb := rootIDs(a), rootIDs(b); len(ra) != 1 || !equalStrings(ra, rb) {
		t.Fatalf("roots: A %v, B %v; want one shared root", ra, rb)
	}
	ia, ib := keysOf(a).inter, keysOf(b).inter
	if ia.id == ib.id || ia.rec.Owner != "a" || ib.rec.Owner != "b" {
		t.Fatalf("intermediates: A %s (owner %q), B %s (owner %q); want one each, owned", ia.id, ia.rec.Owner, ib.id, ib.rec.Owner)
	}
	if ia.cert.CheckSignatureFrom(keysOf(b).root.cert) != nil || ib.cert.CheckSignatureFrom(keysOf(a).root.cert) != nil {
		t.Fatal("the intermediates do not chain to the shared root")
	}
	// The shared root's private key is sealed in its record, not in a file.
	recs, err := a.store.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if rec.Kind == kindRoot && (rec.PrivateRef != storage.SealedRef || len(rec.Sealed) == 0) {
			t.Errorf("root %s: private_ref %q, %d sealed bytes; want sealed in etcd", rec.ID, rec.PrivateRef, len(rec.Sealed))
		}
	}
	for _, id := range []string{"a", "b"} {
		ents, _ := filepathGlob(filepath.Join(rs.dir, id, "keys", kindRoot+"*"))
		if len(ents) != 0 {
			t.Errorf("replica %s has root key files %v", id, ents)
		}
	}

	// Each publishes the other's JWT key: a token from A validates on B.
	waitSnapshot(t, b, "A's JWT key in B's JWKS", func(s *Snapshot) bool { return s.jwt.keys[keysOf(a).jwt.active.id] != nil })
	waitSnapshot(t, a, "B's JWT key in A's JWKS", func(s *Snapshot) bool { return s.jwt.keys[keysOf(b).jwt.active.id] != nil })
	if keysOf(a).jwt.active.id == keysOf(b).jwt.active.id {
		t.Fatal("A and B sign JWT-SVIDs with one key; want one each")
	}
	id := mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	waitSnapshot(t, b, "entry on B", func(s *Snapshot) bool { return len(s.Entries()) == 1 })
	tok, err := a.SignJWTSVID(ctx, a.Snapshot(), entryFor(t, a.Snapshot(), id), []string{"aud"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ValidateJWTSVID(b.Snapshot(), tok.Token, "aud"); err != nil {
		t.Fatalf("B refuses A's JWT-SVID: %v", err)
	}

	// A rotates its intermediate; B keeps its own and issues.
	if _, err := a.RotateKey(ctx, RotateIntermediate, 0); err != nil {
		t.Fatal(err)
	}
	if keysOf(a).inter.id == ia.id {
		t.Fatal("A's intermediate did not rotate")
	}
	svid, err := b.SignX509SVID(ctx, b.Snapshot(), entryFor(t, b.Snapshot(), id))
	if err != nil {
		t.Fatalf("B after A rotated: %v", err)
	}
	if issuer := chainIssuer(t, svid.CertChainDER); issuer != ib.id {
		t.Errorf("B signed with %s, want its own intermediate %s", issuer, ib.id)
	}

	// B restarts after A rotated: it loads its own intermediate.
	stopB()
	b2, _ := rs.open("b")
	if keysOf(b2).inter.id != ib.id {
		t.Errorf("B after restart signs with %s, want its own %s", keysOf(b2).inter.id, ib.id)
	}
	if _, err := b2.SignX509SVID(ctx, b2.Snapshot(), entryFor(t, b2.Snapshot(), id)); err != nil {
		t.Fatalf("B after restart: %v", err)
	}
}

// chainIssuer returns the caKeyID of the intermediate in a chain.
func chainIssuer(t *testing.T, chain []byte) string {
	t.Helper()
	certs, err := x509.ParseCertificates(chain)
	if err != nil || len(certs) < 2 {
		t.Fatalf("chain: %d certificates, %v", len(certs), err)
	}
	pub, err := x509.MarshalPKIXPublicKey(certs[1].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return caKeyID(kindIntermediate, pub)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func filepathGlob(p string) ([]string, error) { return filepath.Glob(p) }

// TestReplicasFirstRootOnce: servers started at once on an empty store
// make exactly one root between them, and all use it.
func TestReplicasFirstRootOnce(t *testing.T) {
	rs := newReplicaSet(t, nil)
	const n = 3
	auths := make([]*Authority, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { auths[i], _, errs[i] = rs.tryOpen(string(rune('a' + i))) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	recs, err := auths[0].store.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	roots := 0
	for _, rec := range recs {
		if rec.Kind == kindRoot {
			roots++
		}
	}
	if roots != 1 {
		t.Errorf("%d root records, want 1", roots)
	}
	for i, a := range auths {
		if !bytes.Equal(keysOf(a).root.cert.Raw, keysOf(auths[0]).root.cert.Raw) {
			t.Errorf("replica %d has root %s, replica 0 %s", i, keysOf(a).root.id, keysOf(auths[0]).root.id)
		}
	}
}

// TestReplicasWrongKEK: a server given another key-encryption key than
// the one the root was sealed with refuses to start, naming the cause.
func TestReplicasWrongKEK(t *testing.T) {
	rs := newReplicaSet(t, nil)
	rs.open("a")
	rand.Read(rs.kek)
	if _, _, err := rs.tryOpen("b"); !errors.Is(err, ErrSealed) {
		t.Fatalf("start with another KEK: %v, want ErrSealed", err)
	}
}

// TestReplicasElection: exactly one server leads the singleton work;
// only it may rotate the root; when it stops another takes over, and a
// root rotation made there reaches the other servers' bundles.
func TestReplicasElection(t *testing.T) {
	rs := newReplicaSet(t, nil)
	a, stopA := rs.open("a")
	b, _ := rs.open("b")
	waitLeader := func(auths ...*Authority) *Authority {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			var leaders []*Authority
			for _, x := range auths {
				if ok, _ := x.leads(); ok {
					leaders = append(leaders, x)
				}
			}
			if len(leaders) == 1 {
				return leaders[0]
			}
			_, changed := auths[0].leads()
			select {
			case <-changed:
			case <-time.After(50 * time.Millisecond):
			}
		}
		t.Fatal("no single leader within 10s")
		return nil
	}
	leader := waitLeader(a, b)
	follower := b
	if leader == b {
		follower = a
	}
	if _, err := follower.RotateKey(t.Context(), RotateRoot, 0); !errors.Is(err, ErrNotLeader) {
		t.Errorf("root rotation on the follower: %v, want ErrNotLeader", err)
	}
	stoppedA := leader == a
	if stoppedA {
		stopA()
		leader = waitLeader(b)
		if leader != b {
			t.Fatal("B does not lead after A stopped")
		}
	}
	before := rootIDs(b)
	rot, err := b.RotateKey(t.Context(), RotateRoot, 0)
	if err != nil {
		t.Fatal(err)
	}
	if equalStrings(rootIDs(b), before) {
		t.Fatalf("roots unchanged after rotation: %v", before)
	}
	if stoppedA {
		return
	}
	newRoot := keysOf(b).root.cert
	// A signs its intermediate under the new root, which is in its bundle.
	waitSnapshot(t, a, "A's intermediate under the new root", func(s *Snapshot) bool {
		inBundle := s.bundle.HasX509Authority(newRoot)
		return inBundle && s.signer.cert.CheckSignatureFrom(newRoot) == nil
	})
	_ = rot
}

// TestReplicasCRLNumbersIncrease: the revocation lists the servers of a
// store sign carry numbers that only grow, whichever server signs, and
// across one server stopping and another starting, under a wall clock
// stepped back (the number is the signing time unless the store has
// handed out a larger one).
func TestReplicasCRLNumbersIncrease(t *testing.T) {
	clock := testclock.New(testStart)
	rs := newReplicaSet(t, func(c *Config) { c.Time = clock.Now; c.Monotonic = clock.Monotonic })
	a, stopA := rs.open("a")
	b, _ := rs.open("b")
	// Two servers may sign concurrently (the one that revoked, the
	// other on its watch), in either order; every list signed after a
	// step completed has a number above every list of that step.
	var last uint64
	step := func(n int, servers ...*Authority) {
		t.Helper()
		var top uint64
		seen := map[uint64]bool{}
		for i, x := range servers {
			waitSnapshot(t, x, "a list with the revocation", func(s *Snapshot) bool { return len(s.revocations.ids) == n })
			_, num := x.Snapshot().CRL()
			if num <= last {
				t.Fatalf("server %d signed CRL number %d after a step that reached %d", i, num, last)
			}
			if seen[num] {
				t.Fatalf("two servers signed CRL number %d", num)
			}
			seen[num] = true
			top = max(top, num)
		}
		last = top
	}
	revoke := func(x *Authority, id string) {
		t.Helper()
		if _, err := x.RevokeID(t.Context(), RevokeRequest{SPIFFEID: id, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	revoke(a, "spiffe://example.org/one")
	step(1, a, b)
	clock.Step(-time.Hour) // the wall clock steps back
	revoke(b, "spiffe://example.org/two")
	step(2, a, b)
	stopA()
	c, _ := rs.open("c")
	revoke(c, "spiffe://example.org/three")
	step(3, b, c)
}

// TestReplicasKeyStatuses: `badge keys list` on one server shows every
// server's keys, each intermediate and JWT key with its owner, and never
// another server's key file as if it were in this server's directory.
func TestReplicasKeyStatuses(t *testing.T) {
	rs := newReplicaSet(t, nil)
	a, _ := rs.open("a")
	rs.open("b")
	sts, err := a.KeyStatuses(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]int{}
	for _, s := range sts {
		owners[s.Kind+"/"+s.Owner]++
		switch {
		case s.Kind == RotateRoot && s.PrivateKey != storage.SealedRef:
			t.Errorf("root %s: private key %q, want %q", s.ID, s.PrivateKey, storage.SealedRef)
		case s.Owner == "b" && !strings.HasPrefix(s.PrivateKey, "replica b: "):
			t.Errorf("B's key %s listed on A as %q", s.ID, s.PrivateKey)
		}
	}
	for _, want := range []string{"intermediate/a", "intermediate/b", "jwt/a", "jwt/b", "root/"} {
		if owners[want] != 1 {
			t.Errorf("keys by kind/owner %v: want one %s", owners, want)
		}
	}
}
