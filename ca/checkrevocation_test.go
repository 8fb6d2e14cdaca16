package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/storage"
)

// revocationCase is one credential and the answer revocation must give.
type revocationCase struct {
	name string
	cred Credential
	// token is the real JWT-SVID behind cred, if any: ValidateJWTSVID must
	// give the same answer.
	token string
	want  error // nil, ErrRevoked or ErrBlocked
}

// checkRevocationCases asserts every case against snap: CheckRevocation,
// and ValidateJWTSVID for the real tokens.
func checkRevocationCases(t *testing.T, a *Authority, snap *Snapshot, cases []revocationCase) {
	t.Helper()
	for _, tc := range cases {
		err := snap.CheckRevocation(tc.cred)
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: CheckRevocation = %v, want accepted", tc.name, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: CheckRevocation = %v, want %v", tc.name, err, tc.want)
		case tc.want != nil && (!errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), tc.cred.ID.String())):
			t.Errorf("%s: refusal %q does not match ErrRevoked or does not name the ID", tc.name, err)
		}
		if tc.token == "" {
			continue
		}
		_, verr := a.ValidateJWTSVID(snap, tc.token, "")
		var te *TokenError
		switch {
		case tc.want == nil && verr != nil:
			t.Errorf("%s: ValidateJWTSVID = %v, want valid", tc.name, verr)
		case tc.want != nil && (!errors.As(verr, &te) || te.Reason != TokenRevoked):
			t.Errorf("%s: ValidateJWTSVID = %v, want refused as revoked", tc.name, verr)
		}
	}
}

// TestCheckRevocation is the table of the revocation invariant: every
// question "is this credential revoked?" in badge (the Workload API
// stream, issuance, the public listener, JWT-SVID validation) is answered
// by Snapshot.CheckRevocation, and the answer is the same after a restart.
func TestCheckRevocation(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, nil)
	ctx := context.Background()
	ids := map[string]string{}
	for i, name := range []string{"web", "api", "exact", "blocked", "unblocked", "other"} {
		ids[name] = mustCreate(t, a, "spiffe://example.org/"+name, "unix:uid:"+string(rune('1'+i)))
	}
	id := func(name string) spiffeid.ID { return spiffeid.RequireFromString("spiffe://example.org/" + name) }
	x509 := func(name string) Credential {
		t.Helper()
		snap := a.Snapshot()
		svid, err := a.SignX509SVID(ctx, snap, entryFor(t, snap, ids[name]))
		if err != nil {
			t.Fatalf("SignX509SVID(%s): %v", name, err)
		}
		return X509Credential(svid.ID, svid.Serial)
	}
	aud := 0
	jwt := func(name string) (Credential, string) {
		t.Helper()
		aud++ // a new audience: a new token, not the cached one
		snap := a.Snapshot()
		tok, err := a.SignJWTSVID(ctx, snap, entryFor(t, snap, ids[name]), []string{"aud" + string(rune('a'+aud))})
		if err != nil {
			t.Fatalf("SignJWTSVID(%s): %v", name, err)
		}
		return JWTCredential(tok.ID, tok.IssuedAt), tok.Token
	}
	revoke := func(name string, block bool) time.Time {
		t.Helper()
		if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/" + name, Block: block}); err != nil {
			t.Fatal(err)
		}
		r, _ := a.Snapshot().Revoked(id(name))
		return r.RevokedAt
	}
	var cases []revocationCase
	add := func(name string, c Credential, token string, want error) {
		cases = append(cases, revocationCase{name: name, cred: c, token: token, want: want})
	}

	// The clock starts on a whole second (testStart).
	otherCert := x509("other")
	otherJWT, otherTok := jwt("other")
	add("unrevoked certificate", otherCert, "", nil)
	add("unrevoked token", otherJWT, otherTok, nil)

	apiOld, apiNew := x509("api"), Credential{}
	if _, err := a.RevokeSerial(ctx, apiOld.Serial, "rotated", 0); err != nil {
		t.Fatal(err)
	}
	apiNew = x509("api")
	add("revoked serial", apiOld, "", ErrRevoked)
	add("certificate of the same ID, another serial", apiNew, "", nil)

	// web: revoked half-way through a second.
	env.clock.Advance(200 * time.Millisecond)
	webOld := x509("web")
	webJWTOld, webTokOld := jwt("web") // iat: the whole second, before the revocation
	env.clock.Advance(300 * time.Millisecond)
	rWeb := revoke("web", false)
	webNew := x509("web") // NotBefore backdated to before the revocation
	webJWTNew, webTokNew := jwt("web")
	add("certificate issued before its ID was revoked", webOld, "", ErrRevoked)
	add("certificate issued after its ID was revoked (NotBefore backdated before it)", webNew, "", nil)
	add("token issued earlier in the revocation's second", webJWTOld, webTokOld, ErrRevoked)
	add("token issued later in the revocation's second", webJWTNew, webTokNew, nil)
	add("token iat a second before the revocation", JWTCredential(id("web"), rWeb.Add(-time.Second)), "", ErrRevoked)
	add("token iat a second after the revocation", JWTCredential(id("web"), rWeb.Truncate(time.Second).Add(time.Second)), "", nil)
	add("token without iat of a revoked ID", JWTCredential(id("web"), time.Time{}), "", ErrRevoked)
	if !webJWTNew.IssuedAt.After(rWeb) || webJWTNew.IssuedAt.Sub(rWeb) > time.Second {
		t.Errorf("token signed after the revocation at %s has iat %s; want the next second", rWeb, webJWTNew.IssuedAt)
	}

	// exact: revoked on a whole second, the iat of a token of that second.
	env.clock.Advance(500 * time.Millisecond)
	exactJWTOld, exactTokOld := jwt("exact")
	rExact := revoke("exact", false)
	if rExact.Nanosecond() != 0 || !exactJWTOld.IssuedAt.Equal(rExact) {
		t.Fatalf("setup: revocation at %s, token iat %s; want both on the same whole second", rExact, exactJWTOld.IssuedAt)
	}
	exactJWTNew, exactTokNew := jwt("exact")
	add("token iat equal to the revocation time", exactJWTOld, exactTokOld, ErrRevoked)
	add("token signed at the revocation instant, dated after it", exactJWTNew, exactTokNew, nil)

	// blocked: nothing of the ID is accepted, nor issued.
	blockedOld := x509("blocked")
	blockedJWT, blockedTok := jwt("blocked")
	env.clock.Advance(2 * time.Second)
	revoke("blocked", true)
	add("certificate of a blocked ID", blockedOld, "", ErrBlocked)
	add("token of a blocked ID", blockedJWT, blockedTok, ErrBlocked)
	add("certificate about to be signed for a blocked ID", X509Credential(id("blocked"), ""), "", ErrBlocked)
	add("token of a blocked ID dated in the future", JWTCredential(id("blocked"), env.clock.Now().Add(time.Hour)), "", ErrBlocked)
	snap := a.Snapshot()
	if _, err := a.SignX509SVID(ctx, snap, entryFor(t, snap, ids["blocked"])); !errors.Is(err, ErrBlocked) || !errors.Is(err, ErrRevoked) {
		t.Errorf("SignX509SVID for a blocked ID = %v, want ErrBlocked", err)
	}
	if _, err := a.SignJWTSVID(ctx, snap, entryFor(t, snap, ids["blocked"]), []string{"x"}); !errors.Is(err, ErrBlocked) {
		t.Errorf("SignJWTSVID for a blocked ID = %v, want ErrBlocked", err)
	}

	// unblocked: what was issued before stays revoked; what comes after is good.
	unblockedOld := x509("unblocked")
	unblockedJWTOld, unblockedTokOld := jwt("unblocked")
	env.clock.Advance(2 * time.Second)
	revoke("unblocked", true)
	if err := a.Unblock(ctx, "spiffe://example.org/unblocked", 0); err != nil {
		t.Fatal(err)
	}
	env.clock.Advance(2 * time.Second)
	unblockedNew := x509("unblocked")
	unblockedJWTNew, unblockedTokNew := jwt("unblocked")
	add("certificate issued before a block, after unblock", unblockedOld, "", ErrRevoked)
	add("token issued before a block, after unblock", unblockedJWTOld, unblockedTokOld, ErrRevoked)
	add("certificate issued after unblock", unblockedNew, "", nil)
	add("token issued after unblock", unblockedJWTNew, unblockedTokNew, nil)

	t.Run("live", func(t *testing.T) { checkRevocationCases(t, a, a.Snapshot(), cases) })
	a.Close()
	a = env.open(t, nil)
	t.Run("after restart", func(t *testing.T) { checkRevocationCases(t, a, a.Snapshot(), cases) })

	// Expired: records stay for the prune margin past what they refuse,
	// then go; what they refused has expired by then.
	refresh := func() {
		t.Helper()
		a.mu.Lock()
		defer a.mu.Unlock()
		if err := a.refreshRevocationsLocked(ctx); err != nil {
			t.Fatal(err)
		}
	}
	env.clock.Advance(DefaultMaxSVIDTTL + time.Minute)
	refresh()
	var expired []revocationCase
	for _, tc := range cases {
		if tc.token == "" { // the tokens have expired; ValidateJWTSVID says so first
			expired = append(expired, tc)
		}
	}
	t.Run("expired, within the prune margin", func(t *testing.T) { checkRevocationCases(t, a, a.Snapshot(), expired) })
	env.clock.Advance(DefaultPruneMargin)
	refresh()
	revIDs, revSerials := a.Revocations()
	if len(revSerials) != 0 || len(revIDs) != 1 || revIDs[0].SPIFFEID != "spiffe://example.org/blocked" {
		t.Errorf("past expiry and margin: IDs %+v, serials %+v; want only the block", revIDs, revSerials)
	}
	if err := a.Snapshot().CheckRevocation(blockedOld); !errors.Is(err, ErrBlocked) {
		t.Errorf("a block expired: %v", err)
	}
}

// TestRevokeAgainCountsOnlyNew: a second revocation neither counts nor
// re-dates certificates revoked before; the CRL dates do not move.
func TestRevokeAgainCountsOnlyNew(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	ctx := context.Background()
	eid := mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
	sign := func() string {
		t.Helper()
		snap := a.Snapshot()
		svid, err := a.SignX509SVID(ctx, snap, entryFor(t, snap, eid))
		if err != nil {
			t.Fatal(err)
		}
		return svid.Serial
	}
	first := []string{sign(), sign()}
	res, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Reason: "first"})
	if err != nil || res != (RevokeResult{Revoked: 2, SPIFFEID: "spiffe://example.org/web"}) {
		t.Fatalf("first RevokeID = %+v, %v", res, err)
	}
	crlDates := func() map[string]time.Time {
		t.Helper()
		der, _ := a.Snapshot().CRL()
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]time.Time{}
		for _, e := range crl.RevokedCertificateEntries {
			out[e.SerialNumber.Text(16)] = e.RevocationTime
		}
		return out
	}
	before := crlDates()
	env.clock.Advance(time.Minute)
	later := sign()
	for _, tc := range []struct {
		name string
		do   func() (RevokeResult, error)
		want RevokeResult
	}{
		{"ID again, one new certificate", func() (RevokeResult, error) {
			return a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Reason: "second"})
		}, RevokeResult{Revoked: 1, AlreadyRevoked: 2, SPIFFEID: "spiffe://example.org/web"}},
		{"ID a third time", func() (RevokeResult, error) {
			return a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Reason: "third"})
		}, RevokeResult{Revoked: 0, AlreadyRevoked: 3, SPIFFEID: "spiffe://example.org/web"}},
		{"serial already revoked", func() (RevokeResult, error) {
			return a.RevokeSerial(ctx, first[0], "again", 0)
		}, RevokeResult{Revoked: 0, AlreadyRevoked: 1, SPIFFEID: "spiffe://example.org/web"}},
	} {
		env.clock.Advance(time.Minute)
		got, err := tc.do()
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	after := crlDates()
	for _, s := range first {
		if !after[s].Equal(before[s]) {
			t.Errorf("serial %s: CRL revocation date moved from %s to %s", s, before[s], after[s])
		}
	}
	if _, ok := after[later]; !ok || len(after) != 3 {
		t.Errorf("CRL %v; want the three serials", after)
	}
	_, serials := a.Revocations()
	reasons := map[string]string{}
	for _, r := range serials {
		reasons[r.Serial] = r.Reason
	}
	if reasons[first[0]] != "first" || reasons[first[1]] != "first" || reasons[later] != "second" {
		t.Errorf("reasons %v; want each as first revoked", reasons)
	}
}

// TestRevocationsSurviveClockSteps: a wall clock that steps ahead while
// badge runs, or is ahead (within the prune margin) when it starts, drops
// no revocation and no serial record of a live credential; when the clock
// comes back, the revoked certificate is still on the list and the
// revoked token still refused.
func TestRevocationsSurviveClockSteps(t *testing.T) {
	for _, tc := range []struct {
		name string
		step func(t *testing.T, env *testEnv, a *Authority) *Authority // returns the authority to prune with
	}{
		{"a step while running", func(t *testing.T, env *testEnv, a *Authority) *Authority {
			env.clock.Step(time.Hour)
			return a
		}},
		{"a step of a day while running", func(t *testing.T, env *testEnv, a *Authority) *Authority {
			env.clock.Step(24 * time.Hour)
			return a
		}},
		{"ahead by less than the margin at a restart", func(t *testing.T, env *testEnv, a *Authority) *Authority {
			a.Close()
			env.clock.Step(DefaultPruneMargin - 5*time.Minute)
			return env.open(t, nil)
		}},
		{"ahead by a day at a restart", func(t *testing.T, env *testEnv, a *Authority) *Authority {
			a.Close()
			env.clock.Step(24 * time.Hour)
			return env.open(t, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			env := newEnv(t)
			a := env.open(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
			ctx := context.Background()
			// Long enough up that pruning is allowed at all (pruneReady).
			env.clock.Advance(10 * time.Minute)
			eid := mustCreate(t, a, "spiffe://example.org/web", "unix:uid:1001")
			snap := a.Snapshot()
			cert, err := a.SignX509SVID(ctx, snap, entryFor(t, snap, eid))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := a.SignJWTSVID(ctx, snap, entryFor(t, snap, eid), []string{"orders"})
			if err != nil {
				t.Fatal(err)
			}
			env.clock.Advance(time.Second)
			if _, err := a.RevokeSerial(ctx, cert.Serial, "", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web"}); err != nil {
				t.Fatal(err)
			}
			// The unrevoked certificate issued after: its serial record
			// must survive for a later revocation to find it.
			env.clock.Advance(time.Second)
			snap = a.Snapshot()
			fresh, err := a.SignX509SVID(ctx, snap, entryFor(t, snap, eid))
			if err != nil {
				t.Fatal(err)
			}

			b := tc.step(t, env, a)
			// What the background loops do on their tickers.
			b.mu.Lock()
			err = b.refreshRevocationsLocked(ctx)
			b.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.pruneSerials(ctx); err != nil {
				t.Fatal(err)
			}
			env.clock.Step(-env.clock.Steps()) // the clock is set right again

			snap = b.Snapshot()
			if err := snap.CheckRevocation(X509Credential(cert.ID, cert.Serial)); !errors.Is(err, ErrRevoked) {
				t.Errorf("revoked certificate after the step: %v, want revoked", err)
			}
			der, _ := snap.CRL()
			crl, err := x509.ParseRevocationList(der)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(crl.RevokedCertificateEntries, func(e x509.RevocationListEntry) bool { return e.SerialNumber.Text(16) == cert.Serial }) {
				t.Errorf("the revoked, still valid certificate left the CRL")
			}
			if _, serials, err := env.store.ListRevocations(ctx); err != nil || !slices.ContainsFunc(serials, func(r storage.RevokedSerial) bool { return r.Serial == cert.Serial }) {
				t.Errorf("the revocation left the database: %+v, %v", serials, err)
			}
			var te *TokenError
			if _, err := b.ValidateJWTSVID(snap, tok.Token, "orders"); !errors.As(err, &te) || te.Reason != TokenRevoked {
				t.Errorf("revoked token after the clock came back: %v, want revoked", err)
			}
			res, err := b.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web"})
			if err != nil || res.Revoked != 1 {
				t.Errorf("revoking again after the step = %+v, %v; want the fresh certificate %s found and revoked", res, err, fresh.Serial)
			}
			if !strings.Contains(tc.name, "restart") && !strings.Contains(logs.String(), "wall clock ran ahead") {
				t.Errorf("no log of the clock step:\n%s", logs.String())
			}
		})
	}
}
