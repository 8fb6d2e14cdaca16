package nodeapi_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/nodeproto"
	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/bbolt"
)

// closingStore is a real bbolt store that, once armed, closes itself at
// the next serial reservation: the store becomes unavailable right when a
// node SVID is to be signed.
type closingStore struct {
	*bbolt.Store
	armed atomic.Bool
}

func (s *closingStore) ReserveSerials(ctx context.Context, r storage.Reservation) error {
	if s.armed.Load() {
		s.Store.Close()
	}
	return s.Store.ReserveSerials(ctx, r)
}

// TestJoinTokenKeptWhenSigningFails: a join token is spent only with a
// node SVID signed for it. A store that fails when the serial is to be
// reserved, or a node SVID ID blocked by an admin, refuses the agent and
// leaves its token usable.
func TestJoinTokenKeptWhenSigningFails(t *testing.T) {
	t.Run("store closed at signing", func(t *testing.T) {
		dir := t.TempDir()
		var cs *closingStore
		f := newFixtureIn(t, dir, func(s *bbolt.Store) ca.Store { cs = &closingStore{Store: s}; return cs }, nil)
		tok := f.token("web-1")
		c := f.dial(nil)
		cs.armed.Store(true)
		_, err := c.Attest(ctxT(t), &nodeproto.AttestRequest{JoinToken: tok, Csr: csrFor(t, newKey(t))})
		if status.Code(err) != codes.Internal {
			t.Fatalf("Attest with the store closed at signing: %v, want Internal", err)
		}
		if len(f.logs.lines("agent listener: attestation failed", "reserving the serial of a node SVID")) != 1 {
			t.Errorf("the failure is not logged:\n%s", f.logs)
		}
		// The server restarts on the same file: the token still attests.
		g := newFixtureIn(t, dir, nil, nil)
		resp, err := g.dial(nil).Attest(ctxT(t), &nodeproto.AttestRequest{JoinToken: tok, Csr: csrFor(t, newKey(t))})
		if err != nil {
			t.Fatalf("the token after a failed signing: %v (it was spent without a node SVID)", err)
		}
		if resp.NodeName != "web-1" {
			t.Errorf("attested as %q, want web-1", resp.NodeName)
		}
	})
	t.Run("node SVID ID blocked", func(t *testing.T) {
		f := newFixture(t, nil)
		tok := f.token("web-2")
		id := "spiffe://example.org" + ca.NodePath + "web-2"
		ctx := context.Background()
		if _, err := f.auth.RevokeID(ctx, ca.RevokeRequest{SPIFFEID: id, Block: true, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		c := f.dial(nil)
		_, err := c.Attest(ctxT(t), &nodeproto.AttestRequest{JoinToken: tok, Csr: csrFor(t, newKey(t))})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Attest of a node whose ID is blocked: %v, want PermissionDenied", err)
		}
		if err := f.auth.Unblock(ctx, id, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Attest(ctxT(t), &nodeproto.AttestRequest{JoinToken: tok, Csr: csrFor(t, newKey(t))}); err != nil {
			t.Fatalf("the token after the block was lifted: %v (it was spent by the refusal)", err)
		}
	})
}

// TestJoinTokenAttestRace: of agents presenting one token at once through
// the listener, exactly one gets a node SVID; the node records its serial.
func TestJoinTokenAttestRace(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token("race-1")
	const n = 6
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = f.dial(nil)
	}
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		resps = make([]*nodeproto.AttestResponse, n)
		errs  = make([]error, n)
		ctx   = ctxT(t)
	)
	for i := range n {
		csr := csrFor(t, newKey(t))
		wg.Go(func() {
			<-start
			resps[i], errs[i] = clients[i].Attest(ctx, &nodeproto.AttestRequest{JoinToken: tok, Csr: csr})
		})
	}
	close(start)
	wg.Wait()
	var won *nodeproto.AttestResponse
	for i, err := range errs {
		switch {
		case err == nil && won == nil:
			won = resps[i]
		case err == nil:
			t.Errorf("a second agent attested with the token")
		case status.Code(err) != codes.PermissionDenied:
			t.Errorf("loser: %v, want PermissionDenied", err)
		}
	}
	if won == nil {
		t.Fatal("no agent attested with the token")
	}
	nodes, err := f.auth.ListNodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].Name != "race-1" || nodes[0].SVIDSerial == "" {
		t.Fatalf("nodes after the race: %+v", nodes)
	}
	leaf := tlsCert(t, won.Svid, newKey(t)).Leaf
	if got := leaf.SerialNumber.Text(16); got != nodes[0].SVIDSerial {
		t.Errorf("the node records serial %s, the winner holds %s", nodes[0].SVIDSerial, got)
	}
}

// TestJoinTokenAfterEviction: a token made after a node's eviction
// attests it again, its node SVID ID blocked until then.
func TestJoinTokenAfterEviction(t *testing.T) {
	f := newFixture(t, nil)
	f.attest("web-3")
	if _, err := f.auth.EvictNode(context.Background(), "web-3", 0); err != nil {
		t.Fatal(err)
	}
	resp, err := f.dial(nil).Attest(ctxT(t), &nodeproto.AttestRequest{JoinToken: f.token("web-3"), Csr: csrFor(t, newKey(t))})
	if err != nil {
		t.Fatalf("Attest with a token made after the eviction: %v", err)
	}
	s := f.auth.Snapshot()
	if s.NodeEvicted("web-3") {
		t.Error("the node is still evicted after attesting with a new token")
	}
	leaf := tlsCert(t, resp.Svid, newKey(t)).Leaf
	if err := s.CheckRevocation(ca.X509Credential(mustID("spiffe://example.org"+ca.NodePath+"web-3"), leaf.SerialNumber.Text(16))); err != nil {
		t.Errorf("the new node SVID: %v", err)
	}
}
