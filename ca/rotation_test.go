package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/badge-dev/badge/storage"
)

// scheduleConfig is a key schedule short enough to step through: the
// root signs for 160m (4h minus an overlap of max(80m, 1h)), its
// successor enters the bundle 30m before; the intermediate rotates about
// every 30m; a JWT key signs for 20m, its successor is published 5m
// before.
func scheduleConfig(c *Config) {
	c.RootTTL, c.RootPrepareLead = 4*time.Hour, 30*time.Minute
	c.IntermediateTTL = time.Hour
	c.JWTTTL, c.JWTKeyTTL, c.JWTPrepareLead = time.Minute, 20*time.Minute, 5*time.Minute
}

// step advances the clock by d and runs the key schedule, as the rotation
// loop does when a step is due.
func step(t *testing.T, a *Authority, env *testEnv, d time.Duration) []keyEvent {
	t.Helper()
	env.clock.Advance(d)
	events, err := a.advanceKeys(context.Background(), "", 0)
	if err != nil {
		t.Fatalf("advanceKeys at +%s: %v", d, err)
	}
	return events
}

func rootIDs(a *Authority) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, r := range a.keys.roots {
		out = append(out, r.id)
	}
	return out
}

func recordOf(t *testing.T, s Store, id string) (storage.Key, bool) {
	t.Helper()
	recs, err := s.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.ID == id {
			return r, true
		}
	}
	return storage.Key{}, false
}

// verifySVID checks chain against the current bundle at the clock's time.
func verifySVID(t *testing.T, a *Authority, env *testEnv, chain []byte) error {
	t.Helper()
	certs := parseChain(t, chain)
	_, _, err := x509svid.Verify(certs, a.Snapshot().Bundle(), x509svid.WithTime(env.clock.Now()))
	return err
}

// TestJWTKeyRotationWithOverlap: the next JWT key is in the JWKS a lead
// before it signs; tokens of the old key validate until they expire; the
// old key leaves the JWKS, and its file and record are deleted, only once
// its last token has expired.
func TestJWTKeyRotationWithOverlap(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, scheduleConfig)
	id := mustCreate(t, a, "spiffe://example.org/web", testSel)
	first := a.Snapshot().jwt.active
	sign := func() *JWTSVID {
		t.Helper()
		s := a.Snapshot()
		tok, err := a.SignJWTSVID(context.Background(), s, entryFor(t, s, id), []string{"api"})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	valid := func(tok *JWTSVID) error {
		_, err := a.ValidateJWTSVID(a.Snapshot(), tok.Token, "api")
		return err
	}

	// 14m59s: nothing to do yet.
	if ev := step(t, a, env, 15*time.Minute-time.Second); len(ev) != 0 {
		t.Fatalf("events before the prepare lead: %+v", ev)
	}
	// 15m: the next key is published, not signing.
	before := a.Snapshot()
	step(t, a, env, time.Second)
	if !replaced(before) {
		t.Fatal("no new snapshot when the next JWT key was published")
	}
	s := a.Snapshot()
	next := s.jwt.next
	if next == nil || s.jwt.active.id != first.id {
		t.Fatalf("after the prepare lead: active %s, next %v; want %s active and a next key", s.jwt.active.id, next, first.id)
	}
	if b, err := jwtbundle.Parse(s.TrustDomain(), s.JWKS()); err != nil || !b.HasJWTAuthority(next.id) || !b.HasJWTAuthority(first.id) {
		t.Fatalf("JWKS %s lacks the next key %s or the active %s (%v)", s.JWKS(), next.id, first.id, err)
	}
	if want := env.clock.Now().Add(5 * time.Minute); !next.rec.ActivatesAt.Equal(want) {
		t.Errorf("next key activates at %v, want %v (a lead after it was published)", next.rec.ActivatesAt, want)
	}
	if tok := sign(); tok.KeyID != first.id {
		t.Errorf("a token was signed by %s before it activated", tok.KeyID)
	}

	// 19m59s: a token signed by the old key just before it retires.
	step(t, a, env, 5*time.Minute-time.Second)
	old := sign()
	if old.KeyID != first.id {
		t.Fatalf("token signed by %s, want the active %s", old.KeyID, first.id)
	}
	// 20m: the next key signs; the old one is retired and published.
	step(t, a, env, time.Second)
	s = a.Snapshot()
	if s.jwt.active.id != next.id || s.jwt.next != nil {
		t.Fatalf("after activation: active %s, next %v; want %s", s.jwt.active.id, s.jwt.next, next.id)
	}
	if tok := sign(); tok.KeyID != next.id {
		t.Errorf("new token signed by %s, want %s", tok.KeyID, next.id)
	}
	if err := valid(old); err != nil {
		t.Errorf("a token of the retired key is refused before it expires: %v", err)
	}
	rec, _ := recordOf(t, env.store, first.id)
	if rec.State != storage.KeyRetired || rec.RemoveAt.Before(old.ExpiresAt) {
		t.Errorf("retired key record %+v: want retired, removed no sooner than its last token expires (%v)", rec, old.ExpiresAt)
	}

	// Until its RemoveAt it stays published, then leaves, with its file.
	step(t, a, env, rec.RemoveAt.Sub(env.clock.Now())-time.Second)
	if _, ok := a.Snapshot().jwt.keys[first.id]; !ok {
		t.Fatal("the retired key left the JWKS before its RemoveAt")
	}
	step(t, a, env, time.Second)
	if _, ok := a.Snapshot().jwt.keys[first.id]; ok {
		t.Fatal("the retired key is still in the JWKS after its RemoveAt")
	}
	if _, ok := recordOf(t, env.store, first.id); ok {
		t.Error("the record of the removed key is still stored")
	}
	if _, err := os.Stat(filepath.Join(env.keyDir, first.rec.PrivateRef)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the key file of the removed key: %v, want it deleted", err)
	}
}

// TestRootRotationWithOverlap: the next root enters the bundle a lead
// before anything chains to it; when it activates, the intermediate
// rotates under it at once; SVIDs chaining to the old root verify until
// they expire, and the old root leaves the bundle only when its last
// intermediate has expired.
func TestRootRotationWithOverlap(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, scheduleConfig)
	id := mustCreate(t, a, "spiffe://example.org/web", testSel)
	root := a.keys.root
	svid := func() *X509SVID {
		t.Helper()
		s := a.Snapshot()
		sv, err := a.SignX509SVID(context.Background(), s, entryFor(t, s, id))
		if err != nil {
			t.Fatal(err)
		}
		return sv
	}
	// The root signs for 160m; its successor is prepared at 130m. Step
	// there in intermediate-sized steps, as the loop would.
	for range 12 {
		step(t, a, env, 10*time.Minute)
	}
	if got := rootIDs(a); len(got) != 1 {
		t.Fatalf("roots at 120m: %v, want the first alone", got)
	}
	step(t, a, env, 10*time.Minute) // 130m
	roots := rootIDs(a)
	if len(roots) != 2 || roots[0] != root.id {
		t.Fatalf("roots at 130m: %v, want %s and its successor", roots, root.id)
	}
	next := a.keys.nextRoot
	if b := a.Snapshot().Bundle(); len(b.X509Authorities()) != 2 {
		t.Fatalf("bundle holds %d roots at 130m, want 2", len(b.X509Authorities()))
	}
	if a.keys.inter.cert.CheckSignatureFrom(root.cert) != nil {
		t.Fatal("the intermediate chains to the next root before it activates")
	}
	step(t, a, env, 29*time.Minute)
	old := svid() // 159m, under the old root

	// 160m: the next root activates; the intermediate rotates under it.
	step(t, a, env, time.Minute)
	if a.keys.root.id != next.id {
		t.Fatalf("active root %s at 160m, want %s", a.keys.root.id, next.id)
	}
	if err := a.keys.inter.cert.CheckSignatureFrom(next.cert); err != nil {
		t.Fatalf("the intermediate does not chain to the new root: %v", err)
	}
	if err := verifySVID(t, a, env, svid().CertChainDER); err != nil {
		t.Errorf("a new SVID does not verify: %v", err)
	}
	if err := verifySVID(t, a, env, old.CertChainDER); err != nil {
		t.Errorf("an SVID under the retired root does not verify before it expires: %v", err)
	}
	rec, _ := recordOf(t, env.store, root.id)
	if rec.State != storage.KeyRetired || slices.Index(rootIDs(a), root.id) < 0 {
		t.Fatalf("old root: record %+v, in bundle %v; want retired and in the bundle", rec, rootIDs(a))
	}
	// It stays until its last intermediate (signed at 150m, 1h) expires.
	lastInter := time.Time{}
	for _, r := range keyRecords(t, env.store)[kindIntermediate] {
		if c, err := x509.ParseCertificate(r.Certificate); err == nil && c.CheckSignatureFrom(root.cert) == nil && c.NotAfter.After(lastInter) {
			lastInter = c.NotAfter
		}
	}
	if !rec.RemoveAt.Equal(lastInter) {
		t.Errorf("old root removed at %v, want when its last intermediate expires, %v", rec.RemoveAt, lastInter)
	}
	step(t, a, env, rec.RemoveAt.Sub(env.clock.Now())-time.Second)
	if slices.Index(rootIDs(a), root.id) < 0 {
		t.Fatal("the old root left the bundle before its last intermediate expired")
	}
	step(t, a, env, time.Second)
	if got := rootIDs(a); len(got) != 1 || got[0] != next.id {
		t.Errorf("roots after the old root's RemoveAt: %v, want %s alone", got, next.id)
	}
	if _, err := os.Stat(filepath.Join(env.keyDir, root.rec.PrivateRef)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the key file of the removed root: %v, want it deleted", err)
	}
}

// TestIntermediatePreparedAhead: the next intermediate key exists before
// the rotation (prepared, without a certificate), and is the one that
// becomes active.
func TestIntermediatePreparedAhead(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, scheduleConfig)
	cur := a.keys.inter
	lead := a.cfg.interPrepareLead()
	step(t, a, env, cur.rotateAt().Sub(env.clock.Now())-lead)
	next := a.keys.nextInter
	if next == nil {
		t.Fatal("no intermediate prepared a lead before the rotation")
	}
	if rec, _ := recordOf(t, env.store, next.id); rec.State != storage.KeyPrepared || len(rec.Certificate) != 0 {
		t.Errorf("prepared intermediate record %+v: want prepared, no certificate", rec)
	}
	if a.keys.inter != cur {
		t.Fatal("the intermediate rotated at its prepare lead")
	}
	step(t, a, env, lead)
	if a.keys.inter.id != next.id {
		t.Errorf("active intermediate %s after the rotation, want the prepared %s", a.keys.inter.id, next.id)
	}
}

// TestRotationResumesAfterRestart: a restart in the middle of a rotation
// (next root and JWT key published, not yet active) keeps the same next
// keys and activates them when they were due; a crash that left two keys
// recorded active signs with the newer, never the retired one.
func TestRotationResumesAfterRestart(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, scheduleConfig)
	for range 13 {
		step(t, a, env, 10*time.Minute)
	}
	step(t, a, env, 6*time.Minute) // 136m: next root and next JWT key published
	nextRoot, nextJWT, prevJWT := a.keys.nextRoot, a.keys.jwt.next, a.keys.jwt.active
	if nextRoot == nil || nextJWT == nil {
		t.Fatalf("at 136m: next root %v, next JWT key %v; want both", nextRoot, nextJWT)
	}
	a.Close()
	// The restart keeps the same next keys.
	a = env.open(t, scheduleConfig)
	if a.keys.nextRoot == nil || a.keys.nextRoot.id != nextRoot.id || a.keys.jwt.next == nil || a.keys.jwt.next.id != nextJWT.id {
		t.Fatalf("after a restart the next keys changed: root %v, JWT %v", a.keys.nextRoot, a.keys.jwt.next)
	}
	a.Close()

	env.clock.Advance(31 * time.Minute) // past both activations, while down
	a = env.open(t, scheduleConfig)
	if a.keys.root.id != nextRoot.id {
		t.Errorf("root after restart %s, want the prepared %s", a.keys.root.id, nextRoot.id)
	}
	if a.keys.jwt.active.id != nextJWT.id {
		t.Errorf("JWT key after restart %s, want the prepared %s", a.keys.jwt.active.id, nextJWT.id)
	}
	if err := a.keys.inter.cert.CheckSignatureFrom(nextRoot.cert); err != nil {
		t.Errorf("intermediate after restart does not chain to the new root: %v", err)
	}
	for _, r := range keyRecords(t, env.store)[kindRoot] {
		if r.ID != nextRoot.id && r.State == storage.KeyActive {
			t.Errorf("root %s still recorded active", r.ID)
		}
	}
	if rec, _ := recordOf(t, env.store, prevJWT.id); rec.State == storage.KeyActive {
		t.Errorf("the JWT key replaced at the restart is still recorded active")
	}

	// A crash between activating a key and retiring the previous one
	// leaves two active records: the newer signs, the other is retired.
	res, err := a.RotateKey(context.Background(), RotateJWT, 0)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	stale, _ := recordOf(t, env.store, nextJWT.id)
	stale.State = storage.KeyActive
	stale.RemoveAt = time.Time{}
	if err := env.store.PutKey(context.Background(), stale); err != nil {
		t.Fatal(err)
	}
	a = env.open(t, scheduleConfig)
	if got := a.keys.jwt.active.id; got != res.Active.ID {
		t.Errorf("with two active JWT records the key %s signs, want the newer %s", got, res.Active.ID)
	}
	if rec, _ := recordOf(t, env.store, nextJWT.id); rec.State != storage.KeyRetired {
		t.Errorf("the older active record is %s after the restart, want retired", rec.State)
	}
}

// TestRotateKeyForced: a forced rotation makes a new key active at once
// for each kind; the replaced key stays published until what it signed
// expires, and what it signed still verifies; the rotation is audited.
func TestRotateKeyForced(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, scheduleConfig)
	id := mustCreate(t, a, "spiffe://example.org/web", testSel)
	ctx := context.Background()
	s := a.Snapshot()
	oldSVID, err := a.SignX509SVID(ctx, s, entryFor(t, s, id))
	if err != nil {
		t.Fatal(err)
	}
	oldTok, err := a.SignJWTSVID(ctx, s, entryFor(t, s, id), []string{"api"})
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{RotateIntermediate, RotateJWT, RotateRoot} {
		before := a.Snapshot()
		res, err := a.RotateKey(ctx, kind, 4242)
		if err != nil {
			t.Fatalf("RotateKey(%s): %v", kind, err)
		}
		if res.Active.State != storage.KeyActive || res.Retired == nil || res.Retired.State != storage.KeyRetired || res.Active.ID == res.Retired.ID {
			t.Errorf("RotateKey(%s) = %+v, want a new active key and the old one retired", kind, res)
		}
		if !replaced(before) {
			t.Errorf("RotateKey(%s) published no new snapshot", kind)
		}
		if err := verifySVID(t, a, env, oldSVID.CertChainDER); err != nil {
			t.Errorf("after RotateKey(%s) an SVID signed before does not verify: %v", kind, err)
		}
		if _, err := a.ValidateJWTSVID(a.Snapshot(), oldTok.Token, "api"); err != nil {
			t.Errorf("after RotateKey(%s) a token signed before is refused: %v", kind, err)
		}
	}
	if a.keys.inter.cert.CheckSignatureFrom(a.keys.root.cert) != nil {
		t.Error("after a forced root rotation the intermediate does not chain to the new root")
	}
	if n := len(a.Snapshot().Bundle().X509Authorities()); n != 2 {
		t.Errorf("bundle after a forced root rotation holds %d roots, want the new and the retired one", n)
	}
	if _, err := a.RotateKey(ctx, "sideways", 0); !errors.Is(err, ErrUnknownKeyKind) {
		t.Errorf("RotateKey(sideways) = %v, want ErrUnknownKeyKind", err)
	}
	recs, _, err := a.AuditList(ctx, 0, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	forced := 0
	for _, r := range recs {
		if r.Action == AuditKeyRotate && r.AdminUID == 4242 {
			forced++
		}
	}
	if forced < 3 {
		t.Errorf("%d key.rotate audit records by uid 4242, want one per forced rotation (3) or more", forced)
	}
}

// TestKeyStatuses: every key record is listed, with where its private key
// lives and a fingerprint, roots first.
func TestKeyStatuses(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, scheduleConfig)
	step(t, a, env, 16*time.Minute) // a prepared JWT key
	sts, err := a.KeyStatuses(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	states := map[storage.KeyState]int{}
	for _, s := range sts {
		kinds = append(kinds, s.Kind)
		states[s.State]++
		if !filepath.IsAbs(s.PrivateKey) || filepath.Dir(s.PrivateKey) != env.keyDir || len(s.Fingerprint) != len("SHA256:")+64 {
			t.Errorf("key %s: private key %q, fingerprint %q", s.ID, s.PrivateKey, s.Fingerprint)
		}
	}
	if !slices.IsSortedFunc(kinds, func(x, y string) int {
		o := map[string]int{RotateRoot: 0, RotateIntermediate: 1, RotateJWT: 2}
		return o[x] - o[y]
	}) || states[storage.KeyPrepared] != 1 || states[storage.KeyActive] != 3 {
		t.Errorf("KeyStatuses kinds %v, states %v; want roots, intermediates, JWT keys; 3 active, 1 prepared", kinds, states)
	}
}
