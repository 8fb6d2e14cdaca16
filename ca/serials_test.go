package ca

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage"
)

// lostBindings is a store whose serial bindings never reach the disk, as
// when the process is killed before the queued writes are committed.
type lostBindings struct{ Store }

func (lostBindings) BindSerial(context.Context, storage.Serial) error { return nil }

// crlSerials returns the serials listed on the snapshot's revocation list.
func crlSerials(t *testing.T, s *Snapshot) []string {
	t.Helper()
	der, _ := s.CRL()
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range crl.RevokedCertificateEntries {
		out = append(out, r.SerialNumber.Text(16))
	}
	return out
}

// TestUnboundSerialsRevokedAtStart: SVIDs whose bindings were lost (the
// daemon died with them queued) are on the revocation list of the next
// start, until their reservation ends; after a clean run nothing is.
func TestUnboundSerialsRevokedAtStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose bool
	}{
		{"bindings lost", true},
		{"clean restart", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t)
			ctx := context.Background()
			a, err := New(ctx, env.config(func(c *Config) {
				if tc.lose {
					c.Store = lostBindings{env.store}
				}
			}))
			if err != nil {
				t.Fatal(err)
			}
			id := mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
			snap := a.Snapshot()
			var issued []string
			for range serialBlock + 3 { // more than one block
				svid, err := a.SignX509SVID(ctx, snap, entryFor(t, snap, id))
				if err != nil {
					t.Fatal(err)
				}
				issued = append(issued, svid.Serial)
			}
			slices.Sort(issued)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			// The next process opens the file again.
			if err := env.store.Close(); err != nil {
				t.Fatal(err)
			}
			env.store = openStore(t, filepath.Dir(env.keyDir), true)

			b := env.open(t, nil)
			listed := crlSerials(t, b.Snapshot())
			_, revoked := b.Revocations()
			if !tc.lose {
				if len(listed) != 0 || len(revoked) != 0 {
					t.Fatalf("after a clean restart the revocation list has %d serials, %d records; want none", len(listed), len(revoked))
				}
				return
			}
			// Exactly the serials used: the unused ones were released.
			if !slices.Equal(listed, issued) {
				t.Fatalf("revocation list after lost bindings has %d serials, want the %d issued", len(listed), len(issued))
			}
			limit := env.clock.Now().Add(serialBlockLife + DefaultMaxSVIDTTL)
			for _, r := range revoked {
				if r.NotAfter.After(limit) || r.Reason != UnboundReason {
					t.Fatalf("revoked %+v; want NotAfter by %s and the unbound reason", r, limit)
				}
			}
			// Once the reservations' NotAfter and the prune margin have passed, the records go.
			env.clock.Advance(serialBlockLife + DefaultMaxSVIDTTL + DefaultPruneMargin + time.Second)
			b.mu.Lock()
			err = b.refreshRevocationsLocked(ctx)
			b.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if got := crlSerials(t, b.Snapshot()); len(got) != 0 {
				t.Errorf("after the reservations ended the list still has %d serials", len(got))
			}
		})
	}
}

// TestRevokeIDFindsQueuedBindings: revocation by ID right after issuance
// revokes the SVIDs whose bindings are only queued.
func TestRevokeIDFindsQueuedBindings(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	ctx := context.Background()
	id := mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	snap := a.Snapshot()
	var issued []string
	for range 20 {
		svid, err := a.SignX509SVID(ctx, snap, entryFor(t, snap, id))
		if err != nil {
			t.Fatal(err)
		}
		issued = append(issued, svid.Serial)
	}
	res, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web"})
	if err != nil || res.Revoked != len(issued) {
		t.Fatalf("RevokeID = %d, %v; want %d", res.Revoked, err, len(issued))
	}
	for _, s := range issued {
		if !a.Snapshot().SerialRevoked(s) {
			t.Errorf("serial %s not revoked", s)
		}
	}
}

func TestSerialBlockSize(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name      string
		size      int // pool's current size
		n         int // size of the block being used
		took      time.Duration
		want      int
		wantAfter int
	}{
		{"first block", 0, minSerialBlock, time.Minute, minSerialBlock, minSerialBlock},
		{"used fast grows", 16, 16, 100 * time.Millisecond, 32, 32},
		{"grows to the limit", serialBlock, serialBlock, time.Millisecond, serialBlock, serialBlock},
		{"steady", 128, 128, 5 * time.Second, 128, 128},
		{"used slowly shrinks", 128, 128, time.Minute, 64, 64},
		{"shrinks to the limit", minSerialBlock, minSerialBlock, time.Hour, minSerialBlock, minSerialBlock},
		{"an older small block does not grow it again", 256, 128, time.Millisecond, 256, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &serialPool{size: tc.size}
			if got := p.nextSize(tc.n, t0, t0.Add(tc.took)); got != tc.want || p.size != tc.wantAfter {
				t.Errorf("nextSize = %d (pool size %d), want %d (%d)", got, p.size, tc.want, tc.wantAfter)
			}
		})
	}
}
