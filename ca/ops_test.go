package ca

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestKeys(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	keys := a.Keys()
	if len(keys) != 3 {
		t.Fatalf("Keys() = %+v, want a root, an intermediate and a JWT key", keys)
	}
	for i, kind := range []string{KeyRoot, KeyIntermediate, KeyJWT} {
		k := keys[i]
		if k.Kind != kind || k.ID == "" || !k.Signing || !k.NotBefore.Before(k.NotAfter) {
			t.Errorf("Keys()[%d] = %+v, want a signing %s key with an id and a validity", i, k, kind)
		}
	}
	if got, want := keys[1].NotAfter.Sub(keys[1].NotBefore), DefaultIntermediateTTL; got < want || got > want+2*Backdate {
		t.Errorf("intermediate validity %s, want about %s", got, want)
	}
}

func TestCheckSignerAndCRL(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	if err := a.CheckSigner(); err != nil {
		t.Errorf("CheckSigner on a new authority: %v", err)
	}
	if err := a.CheckCRL(); err != nil {
		t.Errorf("CheckCRL on a new authority: %v", err)
	}
	this, next := a.Snapshot().CRLValidity()
	if !this.Before(env.clock.Now()) || !next.After(env.clock.Now()) {
		t.Errorf("CRL valid %s to %s, want around now %s", this, next, env.clock.Now())
	}
	// Nothing re-signs the list while the fake clock runs ahead (the
	// refresh ticker runs on real time): it goes stale.
	env.clock.Advance(next.Sub(env.clock.Now()) + time.Second)
	if err := a.CheckCRL(); !errors.Is(err, ErrNotReady) {
		t.Errorf("CheckCRL past NextUpdate = %v, want ErrNotReady", err)
	}
	// Past the intermediate's NotAfter, unrotated, it may not sign.
	env.clock.Advance(DefaultIntermediateTTL)
	if err := a.CheckSigner(); !errors.Is(err, ErrNotReady) {
		t.Errorf("CheckSigner past the intermediate's NotAfter = %v, want ErrNotReady", err)
	}
}

func TestRevocationCounts(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	ctx := context.Background()
	if ids, serials := a.Snapshot().RevocationCounts(); ids != 0 || serials != 0 {
		t.Fatalf("RevocationCounts of a new authority = %d, %d; want 0, 0", ids, serials)
	}
	mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	snap := a.Snapshot()
	svid, err := a.SignX509SVID(ctx, snap, snap.Entries()[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Block: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RevokeSerial(ctx, svid.Serial, "", 0); err != nil {
		t.Fatal(err)
	}
	if ids, serials := a.Snapshot().RevocationCounts(); ids != 1 || serials != 1 {
		t.Errorf("RevocationCounts = %d, %d; want 1 ID and 1 serial", ids, serials)
	}
}
