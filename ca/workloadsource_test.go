package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca/workload"
)

// countingBudget counts the signatures charged and refuses when err is set.
type countingBudget struct {
	x509, jwt, signed int
	err               error
}

func (b *countingBudget) SignX509(context.Context) error { b.x509++; return b.err }
func (b *countingBudget) SignJWT(context.Context) error  { b.jwt++; return b.err }
func (b *countingBudget) SignedJWT(context.Context, time.Time) {
	b.signed++
}

// caller is a workload.Caller attested for kinds.
func caller(tb testing.TB, kinds attest.Kind, sels ...string) workload.Caller {
	return workload.Caller{PID: 1, UID: 1001, GID: 1001, Selectors: set(tb, sels...), Kinds: kinds}
}

// TestWorkloadSourceReuse: the server's Source hands out a held SVID again
// while it is current and replaces it, charging the budget, when its entry
// revision differs, it reached half its life, or it was revoked; a held SVID
// of a blocked ID ends the stream.
func TestWorkloadSourceReuse(t *testing.T) {
	ctx := context.Background()
	a, env := newTestAuthority(t, nil)
	src := a.WorkloadSource()
	mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	c := caller(t, attest.KindUID, "unix:uid:1001")

	var b countingBudget
	first, err := src.X509(ctx, workload.X509Request{Caller: c, Budget: &b})
	if err != nil || len(first.SVIDs) != 1 || b.x509 != 1 {
		t.Fatalf("first X509: %d SVIDs, %v, %d charged; want 1, nil, 1", len(first.SVIDs), err, b.x509)
	}
	sv := first.SVIDs[0]
	if sv.ID.String() != "spiffe://example.org/web" || sv.Serial == "" || len(sv.CertChainDER) == 0 || len(sv.KeyDER) == 0 {
		t.Fatalf("first SVID: %+v", sv)
	}
	if want := (&X509SVID{NotBefore: sv.NotBefore, NotAfter: sv.NotAfter}).RefreshAt(); !first.RefreshAt.Equal(want) {
		t.Errorf("RefreshAt %s, want half-life %s", first.RefreshAt, want)
	}
	snap := a.Snapshot()
	crl, _ := snap.CRL()
	if first.Done != snap.Done() || !bytes.Equal(first.Bundle, snap.BundleDER()) || !bytes.Equal(first.CRL, crl) {
		t.Error("the update does not carry the snapshot's Done, bundle and CRL")
	}

	ask := func(held []workload.X509SVID) (workload.X509SVID, int) {
		t.Helper()
		b = countingBudget{}
		u, err := src.X509(ctx, workload.X509Request{Caller: c, Held: held, Budget: &b})
		if err != nil || len(u.SVIDs) != 1 {
			t.Fatalf("X509: %d SVIDs, %v", len(u.SVIDs), err)
		}
		return u.SVIDs[0], b.x509
	}
	if got, n := ask([]workload.X509SVID{sv}); got.Serial != sv.Serial || n != 0 {
		t.Errorf("current SVID: serial %s (charged %d), want the held %s reused for free", got.Serial, n, sv.Serial)
	}
	other := sv
	other.Revision++
	if got, n := ask([]workload.X509SVID{other}); got.Serial == sv.Serial || n != 1 {
		t.Errorf("SVID of another entry revision: serial %s (charged %d), want a new one", got.Serial, n)
	}

	env.clock.Advance(first.RefreshAt.Sub(env.clock.Now()))
	renewed, n := ask([]workload.X509SVID{sv})
	if renewed.Serial == sv.Serial || n != 1 {
		t.Errorf("SVID at half-life: serial %s (charged %d), want a new one", renewed.Serial, n)
	}

	if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if got, n := ask([]workload.X509SVID{renewed}); got.Serial == renewed.Serial || bytes.Equal(got.KeyDER, renewed.KeyDER) || n != 1 {
		t.Errorf("revoked SVID: serial %s (charged %d), want a new one with a new key", got.Serial, n)
	}

	if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Reason: "test", Block: true}); err != nil {
		t.Fatal(err)
	}
	_, err = src.X509(ctx, workload.X509Request{Caller: c, Held: []workload.X509SVID{renewed}})
	var be *workload.BlockedError
	if !errors.As(err, &be) || !be.Held || fmt.Sprint(be.IDs) != "[spiffe://example.org/web]" {
		t.Errorf("held SVID of a blocked ID: %v, want a *BlockedError with Held", err)
	}
}

// crlSignedByIssuer checks that the CRL of u verifies against the CA that
// issued its first SVID, as a workload that knows no other intermediate
// must verify it.
func crlSignedByIssuer(u workload.X509Update) error {
	chain, err := x509.ParseCertificates(u.SVIDs[0].CertChainDER)
	if err != nil {
		return err
	}
	if len(chain) < 2 {
		return errors.New("the SVID chain holds no intermediate")
	}
	crl, err := x509.ParseRevocationList(u.CRL)
	if err != nil {
		return err
	}
	return crl.CheckSignatureFrom(chain[1])
}

// TestWorkloadSourceReissuesAfterIntermediateRotation: once the
// intermediate rotates, a held SVID of the previous one is replaced at
// once, so that the holder can verify the CRL the new intermediate signs;
// the replacement is then reused.
func TestWorkloadSourceReissuesAfterIntermediateRotation(t *testing.T) {
	ctx := context.Background()
	a, _ := newTestAuthority(t, nil)
	src := a.WorkloadSource()
	mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	c := caller(t, attest.KindUID, "unix:uid:1001")
	ask := func(held []workload.X509SVID) (workload.X509Update, int) {
		t.Helper()
		var b countingBudget
		u, err := src.X509(ctx, workload.X509Request{Caller: c, Held: held, Budget: &b})
		if err != nil || len(u.SVIDs) != 1 {
			t.Fatalf("X509: %d SVIDs, %v", len(u.SVIDs), err)
		}
		return u, b.x509
	}
	first, _ := ask(nil)
	if err := crlSignedByIssuer(first); err != nil {
		t.Fatalf("before the rotation the CRL does not verify against the SVID's intermediate: %v", err)
	}
	if _, err := a.RotateKey(ctx, RotateIntermediate, 0); err != nil {
		t.Fatal(err)
	}
	after, n := ask(first.SVIDs)
	if after.SVIDs[0].Serial == first.SVIDs[0].Serial || n != 1 {
		t.Errorf("SVID of the previous intermediate: serial %s (charged %d), want a new one", after.SVIDs[0].Serial, n)
	}
	if err := crlSignedByIssuer(after); err != nil {
		t.Errorf("after the rotation the CRL does not verify against the SVID's intermediate: %v", err)
	}
	if again, n := ask(after.SVIDs); again.SVIDs[0].Serial != after.SVIDs[0].Serial || n != 0 {
		t.Errorf("SVID of the current intermediate: serial %s (charged %d), want the held %s reused", again.SVIDs[0].Serial, n, after.SVIDs[0].Serial)
	}
}

// TestWorkloadSourceRefusals: the server's Source says why a caller gets
// nothing, asks for the kinds it needs, and stops at a refusing budget.
func TestWorkloadSourceRefusals(t *testing.T) {
	ctx := context.Background()
	a, _ := newTestAuthority(t, nil)
	src := a.WorkloadSource()
	mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	mustCreate(t, a, "spiffe://example.org/gone", "unix:uid:1002")
	mustCreate(t, a, "spiffe://example.org/gone", "unix:uid:1002", "unix:gid:5")
	mustCreate(t, a, "spiffe://example.org/odd", "unix:uid:1003", "unix:path:/bin/odd")
	if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/gone", Reason: "test", Block: true}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		caller workload.Caller
		budget error
		check  func(error) bool
	}{
		{"not registered", caller(t, attest.KindUID|attest.KindPath|attest.KindGID, "unix:uid:1004"), nil,
			func(err error) bool { return errors.Is(err, workload.ErrNotRegistered) }},
		{"kinds of the entries missing", caller(t, attest.KindUID, "unix:uid:1001"), nil,
			func(err error) bool {
				var ke *workload.KindsError
				return errors.As(err, &ke) && ke.Kinds&attest.KindPath != 0
			}},
		{"kinds of the blocked entries missing", caller(t, attest.KindUID|attest.KindPath, "unix:uid:1002"), nil,
			func(err error) bool {
				var ke *workload.KindsError
				return errors.As(err, &ke) && ke.Kinds&attest.KindGID != 0
			}},
		{"blocked, each ID once", caller(t, attest.KindUID|attest.KindPath|attest.KindGID, "unix:uid:1002", "unix:gid:5"), nil,
			func(err error) bool {
				var be *workload.BlockedError
				return errors.As(err, &be) && !be.Held && fmt.Sprint(be.IDs) == "[spiffe://example.org/gone]"
			}},
		{"budget spent", caller(t, attest.KindUID|attest.KindPath, "unix:uid:1001"), errors.New("spent"),
			func(err error) bool { return err != nil && err.Error() == "spent" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &countingBudget{err: tt.budget}
			_, err := src.X509(ctx, workload.X509Request{Caller: tt.caller, Budget: b})
			if !tt.check(err) {
				t.Errorf("X509: %v", err)
			}
			if _, jerr := src.SignJWT(ctx, workload.JWTRequest{Caller: tt.caller, Audience: []string{"a"}, Budget: b}); !tt.check(jerr) {
				t.Errorf("SignJWT: %v", jerr)
			}
			if tt.budget == nil {
				if cerr := src.Check(ctx, tt.caller); !tt.check(cerr) {
					t.Errorf("Check: %v", cerr)
				}
			}
		})
	}
}
