package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/storage"
)

func TestRevokeIDLifecycle(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, nil)
	ctx := context.Background()
	id := mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	caller := set(t, "unix:uid:1001")
	snap := a.Snapshot()
	e := entryFor(t, snap, id)
	var issued []string
	for range 3 {
		svid, err := a.SignX509SVID(ctx, snap, e)
		if err != nil {
			t.Fatal(err)
		}
		issued = append(issued, svid.Serial)
	}
	slices.Sort(issued)

	n, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Reason: "leak", AdminUID: 7})
	if err != nil || n.Revoked != 3 || n.AlreadyRevoked != 0 {
		t.Fatalf("RevokeID = %+v, %v; want 3 certificates", n, err)
	}
	if !replaced(snap) {
		t.Fatal("revocation did not replace the snapshot")
	}
	snap = a.Snapshot()
	for _, s := range issued {
		if !snap.SerialRevoked(s) {
			t.Errorf("serial %s not revoked in the snapshot", s)
		}
	}
	der, number := snap.CRL()
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(a.keys.current().cert); err != nil {
		t.Fatalf("CRL not signed by the intermediate: %v", err)
	}
	if crl.Number.Uint64() != number {
		t.Fatalf("CRL number %d, snapshot says %d", crl.Number, number)
	}
	var listed []string
	for _, r := range crl.RevokedCertificateEntries {
		listed = append(listed, r.SerialNumber.Text(16))
	}
	if !slices.Equal(listed, issued) {
		t.Fatalf("CRL lists %v, want %v", listed, issued)
	}
	// Not blocked: the entry still matches and new SVIDs are issued.
	if got := snap.Match(caller); len(got) != 1 {
		t.Fatalf("revoked (not blocked) entry matches %d", len(got))
	}
	fresh, err := a.SignX509SVID(ctx, snap, entryFor(t, snap, id))
	if err != nil || snap.SerialRevoked(fresh.Serial) {
		t.Fatalf("fresh SVID after revocation: %v, revoked=%v", err, err == nil && snap.SerialRevoked(fresh.Serial))
	}
	r, ok := snap.Revoked(spiffeid.RequireFromString("spiffe://example.org/web"))
	if !ok || r.Blocked || r.Reason != "leak" {
		t.Fatalf("Revoked = %+v, %v", r, ok)
	}

	// Everything survives a reopen, including the growing CRL number.
	a.Close()
	b := env.open(t, nil)
	snap = b.Snapshot()
	for _, s := range issued {
		if !snap.SerialRevoked(s) {
			t.Errorf("after reopen, serial %s not revoked", s)
		}
	}
	if _, n2 := snap.CRL(); n2 <= number {
		t.Fatalf("CRL number went from %d to %d across a reopen", number, n2)
	}
}

func TestBlock(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	ctx := context.Background()
	id := mustCreate(t, a, "spiffe://example.org/bad", "unix:uid:1001")
	mustCreate(t, a, "spiffe://example.org/good", "unix:uid:1001", "unix:gid:1001")
	old := a.Snapshot()
	if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/bad", Block: true}); err != nil {
		t.Fatal(err)
	}
	caller := set(t, "unix:uid:1001", "unix:gid:1001")
	got := a.Snapshot().Match(caller)
	if len(got) != 1 || got[0].ID.String() != "spiffe://example.org/good" {
		t.Fatalf("blocked ID still matches: %v", got)
	}
	// A stream holding the old snapshot cannot get a certificate either.
	if _, err := a.SignX509SVID(ctx, old, entryFor(t, old, id)); !errors.Is(err, ErrBlocked) {
		t.Fatalf("SignX509SVID for a blocked ID with a stale snapshot = %v, want ErrBlocked", err)
	}
	// A second revocation without --block keeps the block.
	if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/bad"}); err != nil {
		t.Fatal(err)
	}
	if r, _ := a.Snapshot().Revoked(spiffeid.RequireFromString("spiffe://example.org/bad")); !r.Blocked {
		t.Fatal("a later revocation lifted the block")
	}
	if err := a.Unblock(ctx, "spiffe://example.org/bad", 0); err != nil {
		t.Fatal(err)
	}
	if got := a.Snapshot().Match(caller); len(got) != 2 {
		t.Fatalf("after unblock %d entries match, want 2", len(got))
	}
	if err := a.Unblock(ctx, "spiffe://example.org/bad", 0); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second Unblock = %v, want ErrNotFound", err)
	}
}

func TestRevocationsExpire(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	ctx := context.Background()
	id := mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	snap := a.Snapshot()
	svid, err := a.SignX509SVID(ctx, snap, entryFor(t, snap, id))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RevokeSerial(ctx, svid.Serial, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/blocked", Block: true}); err != nil {
		t.Fatal(err)
	}
	refresh := func() {
		t.Helper()
		a.mu.Lock()
		err := a.refreshRevocationsLocked(ctx)
		a.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Expired, but within the prune margin: kept, for a clock that may
	// be ahead.
	env.clock.Advance(DefaultMaxSVIDTTL + time.Minute)
	refresh()
	if _, serials := a.Revocations(); len(serials) != 1 {
		t.Fatalf("revoked certificate dropped within the prune margin: %+v", serials)
	}
	env.clock.Advance(DefaultPruneMargin)
	refresh()
	ids, serials := a.Revocations()
	if len(serials) != 0 {
		t.Fatalf("expired certificate still listed: %+v", serials)
	}
	if len(ids) != 1 || ids[0].SPIFFEID != "spiffe://example.org/blocked" {
		t.Fatalf("after expiry: %+v; want only the blocked ID", ids)
	}
	der, _ := a.Snapshot().CRL()
	crl, err := x509.ParseRevocationList(der)
	if err != nil || len(crl.RevokedCertificateEntries) != 0 {
		t.Fatalf("CRL after expiry: %v entries, %v", len(crl.RevokedCertificateEntries), err)
	}
}

func TestParseSerial(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"0a3f", "a3f", true},
		{"0A:3F", "a3f", true},
		{"ff", "ff", true},
		{"", "", false},
		{"0", "", false},
		{"-1", "", false},
		{"+1", "", false},
		{"xyz", "", false},
		{"1 2", "", false},
		{fmt.Sprintf("%041x", 1), "", false},
	} {
		got, err := parseSerial(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSerial(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("parseSerial(%q) error %v does not match ErrInvalid", tc.in, err)
		}
	}
}

// BenchmarkSignCRL signs a revocation list of 10,000 revoked certificates
// and reports its size.
func BenchmarkSignCRL(b *testing.B) {
	for _, n := range []int{0, 10000} {
		b.Run(fmt.Sprintf("serials=%d", n), func(b *testing.B) {
			a, env := newTestAuthority(b, nil)
			state := a.revocations.clone()
			now := env.clock.Now()
			for i := range n {
				s := new(big.Int).Lsh(big.NewInt(int64(i+1)), 100).Text(16)
				state.serials[s] = storage.RevokedSerial{Serial: s, SPIFFEID: "spiffe://example.org/w", NotAfter: now.Add(time.Minute), RevokedAt: now}
			}
			b.ResetTimer()
			for range b.N {
				a.mu.Lock()
				err := a.signCRLLocked(state)
				a.mu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(state.crl)), "crl-bytes")
		})
	}
}
