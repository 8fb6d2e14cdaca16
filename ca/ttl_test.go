package ca

import (
	"context"
	"testing"
	"time"
)

// TestSetTTLs: new lifetimes apply to the next X.509-SVID and JWT-SVID
// signed, an entry's own TTL still wins, and values out of bounds change
// nothing.
func TestSetTTLs(t *testing.T) {
	ctx := context.Background()
	f := newJWTFixture(t, nil)
	a, clk := f.a, f.env.clock
	rec, err := a.CreateEntry(ctx, EntryRequest{SPIFFEID: "spiffe://example.org/own", Selectors: []string{"unix:uid:7"}, TTL: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.TTLs(); got != (TTLs{SVID: DefaultSVIDTTL, JWT: DefaultJWTTTL}) {
		t.Fatalf("TTLs() = %+v, want the defaults", got)
	}
	var old TTLs
	old, err = a.SetTTLs(TTLs{SVID: time.Minute, JWT: 30 * time.Second})
	if err != nil || old != (TTLs{SVID: DefaultSVIDTTL, JWT: DefaultJWTTTL}) {
		t.Fatalf("SetTTLs = %+v, %v; want the defaults back and no error", old, err)
	}
	svid, err := a.SignX509SVID(ctx, a.Snapshot(), f.e)
	if err != nil {
		t.Fatal(err)
	}
	if life := svid.NotAfter.Sub(clk.Now()); life != time.Minute {
		t.Errorf("X.509-SVID lives %s after issuance, want the new SVID TTL 1m", life)
	}
	svid, err = a.SignX509SVID(ctx, a.Snapshot(), entryFor(t, a.Snapshot(), rec.ID))
	if err != nil {
		t.Fatal(err)
	}
	if life := svid.NotAfter.Sub(clk.Now()); life != 2*time.Minute {
		t.Errorf("X.509-SVID of an entry with its own TTL lives %s, want the entry's 2m", life)
	}
	clk.Advance(3 * time.Minute) // past the cached token's half-life
	tok := f.sign(t, "orders")
	if life := tok.ExpiresAt.Sub(tok.IssuedAt); life != 30*time.Second {
		t.Errorf("JWT-SVID lives %s, want the new JWT TTL 30s", life)
	}

	for _, bad := range []TTLs{
		{SVID: MinSVIDTTL - time.Second},
		{SVID: DefaultMaxSVIDTTL + time.Second},
		{JWT: DefaultJWTTTL + time.Second},
		{JWT: time.Second},
	} {
		if _, err := a.SetTTLs(bad); err == nil {
			t.Errorf("SetTTLs(%+v) accepted a value out of bounds", bad)
		}
		if got := a.TTLs(); got != (TTLs{SVID: time.Minute, JWT: 30 * time.Second}) {
			t.Fatalf("after SetTTLs(%+v) failed, TTLs() = %+v; want them unchanged", bad, got)
		}
	}
	// A zero field keeps its value.
	if _, err := a.SetTTLs(TTLs{JWT: 2 * time.Minute}); err != nil || a.TTLs() != (TTLs{SVID: time.Minute, JWT: 2 * time.Minute}) {
		t.Errorf("SetTTLs(JWT only) = %v, TTLs %+v", err, a.TTLs())
	}
}
