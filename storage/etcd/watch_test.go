package etcd

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage"
)

// TestWatch: server B's Watch reports each kind of change server A makes,
// and returns when its context ends.
func TestWatch(t *testing.T) {
	td := newTrustDomain()
	a := open(t, Options{TrustDomain: td, ReplicaID: "a"})
	defer a.Close()
	b := open(t, Options{TrustDomain: td, ReplicaID: "b"})
	defer b.Close()
	ctx, cancel := context.WithCancel(t.Context())
	// A change made after B opened but before B watches (while B reads
	// its state) is reported too.
	if err := a.CreateEntry(ctx, storage.Entry{ID: "w", SPIFFEID: "spiffe://example.org/w", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	changes := make(chan storage.Change, 16)
	watchErr := make(chan error, 1)
	go func() { watchErr <- b.Watch(ctx, func(c storage.Change) { changes <- c }) }()
	select {
	case c := <-changes:
		if c&storage.ChangeEntries == 0 {
			t.Fatalf("after CreateEntry: change %b, want entries", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an entry created between Open and Watch was not reported within 5s")
	}
	drain := func() {
		for {
			select {
			case <-changes:
			default:
				return
			}
		}
	}
	node := storage.Node{Name: "n1", Attestation: storage.AttestJoinToken, FirstAttestedAt: t0, LastAttestedAt: t0}
	for _, tc := range []struct {
		name string
		do   func() error
		want storage.Change
	}{
		{"RevokeID", func() error {
			_, err := a.RevokeID(ctx, storage.Revocation{SPIFFEID: "spiffe://example.org/x", RevokedAt: t0}, t0)
			return err
		}, storage.ChangeRevocations},
		{"PutNode", func() error { return a.PutNode(ctx, node) }, storage.ChangeNodes},
		{"EvictNode", func() error { _, _, err := a.EvictNode(ctx, "n1", t0, 0); return err }, storage.ChangeNodes},
		{"PutKey", func() error { return a.PutKey(ctx, storage.Key{ID: "k1", State: storage.KeyActive}) }, storage.ChangeKeys},
		{"DeleteEntry", func() error { return a.DeleteEntry(ctx, "w") }, storage.ChangeEntries},
	} {
		drain()
		if err := tc.do(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		select {
		case c := <-changes:
			if c&tc.want == 0 {
				t.Errorf("%s: change %b reported, want %b", tc.name, c, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no change reported within 5s", tc.name)
		}
	}
	cancel()
	select {
	case err := <-watchErr:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Watch after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}
