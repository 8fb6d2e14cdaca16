package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/badge-dev/badge/ca/upstream"
	"github.com/badge-dev/badge/internal/testpki"
	"github.com/badge-dev/badge/storage"
)

// newTestCA makes a CA certificate valid around testStart for ten years,
// signed by parent (self-signed when nil).
func newTestCA(t *testing.T, cn string, parent *testpki.Cert) *testpki.Cert {
	t.Helper()
	return testpki.NewCA(t, cn, parent, testpki.Options{NotBefore: testStart.Add(-time.Hour), NotAfter: testStart.Add(10 * 365 * 24 * time.Hour)})
}

// writeDisk writes the certificate file (certs, in order) and the key
// file of a disk upstream into a new directory, and loads it on the fake
// clock.
func writeDisk(t *testing.T, env *testEnv, key crypto.Signer, certs ...*x509.Certificate) *upstream.Disk {
	t.Helper()
	dir := t.TempDir()
	d, err := upstream.LoadDisk(testpki.WriteCerts(t, filepath.Join(dir, "ca.crt"), certs...), testpki.WriteKey(t, filepath.Join(dir, "ca.key"), key))
	if err != nil {
		t.Fatalf("LoadDisk: %v", err)
	}
	d.Now = env.clock.Now
	return d
}

// flakyUpstream passes requests to an upstream, counts them, and fails
// them while down is set; with bad set, it returns what bad makes of the
// answer instead.
type flakyUpstream struct {
	Upstream
	calls atomic.Int32
	down  atomic.Bool
	mu    sync.Mutex
	bad   func(chain, roots []*x509.Certificate) ([]*x509.Certificate, []*x509.Certificate)
}

func (f *flakyUpstream) SignIntermediate(ctx context.Context, csr *x509.CertificateRequest, lifetime time.Duration) ([]*x509.Certificate, []*x509.Certificate, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return nil, nil, errors.New("connection refused")
	}
	chain, roots, err := f.Upstream.SignIntermediate(ctx, csr, lifetime)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && f.bad != nil {
		chain, roots = f.bad(chain, roots)
	}
	return chain, roots, err
}

// issue signs an SVID for a fresh entry and returns its chain.
func issue(t *testing.T, a *Authority) []*x509.Certificate {
	t.Helper()
	s := a.Snapshot()
	var e *Entry
	if len(s.Entries()) == 0 {
		id := mustCreate(t, a, "spiffe://example.org/w", "unix:uid:1000")
		e = entryFor(t, a.Snapshot(), id)
	} else {
		e = s.Entries()[0]
	}
	svid, err := a.SignX509SVID(context.Background(), a.Snapshot(), e)
	if err != nil {
		t.Fatalf("SignX509SVID: %v", err)
	}
	return parseChain(t, svid.CertChainDER)
}

// TestUpstreamDisk: under a disk upstream (an operator's intermediate
// and root in the certificate file), badge makes no root, the bundle is
// the operator's root alone, SVIDs carry the operator's intermediate and
// verify against that root alone, and every intermediate rotation asks
// the upstream again.
func TestUpstreamDisk(t *testing.T) {
	env := newEnv(t)
	root := newTestCA(t, "operator root", nil)
	opInter := newTestCA(t, "operator intermediate", root)
	up := &flakyUpstream{Upstream: writeDisk(t, env, opInter.Key, opInter.Cert, root.Cert)}
	a := env.open(t, func(c *Config) { scheduleConfig(c); c.Upstream = up })

	if got := a.Snapshot().Bundle().X509Authorities(); len(got) != 1 || !got[0].Equal(root.Cert) {
		t.Fatalf("bundle holds %d certificates, want the operator's root alone", len(got))
	}
	sts, err := a.KeyStatuses(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Kind == RotateRoot && s.State != KeyUpstream {
			t.Errorf("a root key %s (%s) was made under an upstream", s.ID, s.State)
		}
	}
	if len(sts) == 0 || sts[0].State != KeyUpstream || !sts[0].NotAfter.Equal(root.Cert.NotAfter) {
		t.Errorf("key statuses %+v: want the upstream root first", sts)
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("the upstream was asked %d times for the first intermediate, want 1", n)
	}
	onlyRoot := x509bundle.FromX509Authorities(a.TrustDomain(), []*x509.Certificate{root.Cert})
	check := func(when string) {
		t.Helper()
		chain := issue(t, a)
		if len(chain) != 3 || !chain[2].Equal(opInter.Cert) {
			t.Fatalf("%s: SVID chain of %d certificates, want leaf, badge's intermediate, the operator's intermediate", when, len(chain))
		}
		if _, _, err := x509svid.Verify(chain, onlyRoot, x509svid.WithTime(env.clock.Now())); err != nil {
			t.Fatalf("%s: SVID does not verify against the operator's root alone: %v", when, err)
		}
	}
	check("first intermediate")
	for i := range 3 {
		prev := a.keys.inter.id
		step(t, a, env, a.keys.inter.rotateAt().Sub(env.clock.Now()))
		if a.keys.inter.id == prev {
			t.Fatalf("rotation %d: the intermediate did not rotate", i+1)
		}
		if n := up.calls.Load(); n != int32(i+2) {
			t.Fatalf("rotation %d: the upstream was asked %d times in all, want %d", i+1, n, i+2)
		}
		check("after a rotation")
	}
	// A restart serves the recorded chain and bundle without asking.
	a.Close()
	up.down.Store(true)
	a = env.open(t, func(c *Config) { scheduleConfig(c); c.Upstream = up })
	if got := a.Snapshot().Bundle().X509Authorities(); len(got) != 1 || !got[0].Equal(root.Cert) {
		t.Fatalf("after a restart the bundle holds %d certificates, want the operator's root alone", len(got))
	}
	check("after a restart")
	if _, err := a.RotateKey(context.Background(), RotateRoot, 0); !errors.Is(err, ErrUpstreamRoot) {
		t.Errorf("RotateKey(root) under an upstream: %v, want ErrUpstreamRoot", err)
	}
}

// TestUpstreamUnavailable: an upstream that fails delays the rotation,
// never issuance: the current intermediate signs on, a restart starts on
// it, and the rotation succeeds once the upstream is back.
func TestUpstreamUnavailable(t *testing.T) {
	env := newEnv(t)
	root := newTestCA(t, "operator root", nil)
	up := &flakyUpstream{Upstream: writeDisk(t, env, root.Key, root.Cert)}
	mod := func(c *Config) { scheduleConfig(c); c.Upstream = up }
	a := env.open(t, mod)
	cur := a.keys.inter
	up.down.Store(true)
	env.clock.Advance(cur.rotateAt().Sub(env.clock.Now()))
	if _, err := a.advanceKeys(context.Background(), "", 0); !errors.Is(err, ErrUpstream) {
		t.Fatalf("rotation with the upstream down: %v, want ErrUpstream", err)
	}
	if a.keys.inter != cur || a.Snapshot().signer != cur {
		t.Fatal("a failed rotation replaced the signing intermediate")
	}
	if err := verifySVID(t, a, env, derOf(issue(t, a))); err != nil {
		t.Fatalf("SVID issued while the upstream is down: %v", err)
	}
	a.Close()
	a = env.open(t, mod) // New does not fail: the recorded intermediate is valid
	if a.keys.inter.id != cur.id {
		t.Fatalf("restart with the upstream down signs with %s, want the recorded %s", a.keys.inter.id, cur.id)
	}
	if err := verifySVID(t, a, env, derOf(issue(t, a))); err != nil {
		t.Fatalf("SVID issued after a restart with the upstream down: %v", err)
	}
	up.down.Store(false)
	step(t, a, env, time.Second)
	if a.keys.inter.id == cur.id {
		t.Fatal("the intermediate did not rotate once the upstream was back")
	}
	if err := verifySVID(t, a, env, derOf(issue(t, a))); err != nil {
		t.Fatalf("SVID after the upstream came back: %v", err)
	}

	// A first start with the upstream down has nothing to sign with.
	env2 := newEnv(t)
	up.down.Store(true)
	if _, err := New(context.Background(), env2.config(mod)); !errors.Is(err, ErrUpstream) {
		t.Fatalf("first start with the upstream down: %v, want ErrUpstream", err)
	}
}

// TestUpstreamAnswerChecked: what the upstream returns is used only if it
// is a CA certificate for badge's key and trust domain chaining to the
// roots it names.
func TestUpstreamAnswerChecked(t *testing.T) {
	other := newTestCA(t, "another CA", nil)
	for _, tc := range []struct {
		name string
		bad  func(chain, roots []*x509.Certificate) ([]*x509.Certificate, []*x509.Certificate)
	}{
		{"no certificate", func(_, roots []*x509.Certificate) ([]*x509.Certificate, []*x509.Certificate) { return nil, roots }},
		{"no root", func(chain, _ []*x509.Certificate) ([]*x509.Certificate, []*x509.Certificate) { return chain, nil }},
		{"another key", func(_, roots []*x509.Certificate) ([]*x509.Certificate, []*x509.Certificate) {
			return []*x509.Certificate{other.Cert}, roots
		}},
		{"another root", func(chain, _ []*x509.Certificate) ([]*x509.Certificate, []*x509.Certificate) {
			return chain, []*x509.Certificate{other.Cert}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t)
			root := newTestCA(t, "operator root", nil)
			up := &flakyUpstream{Upstream: writeDisk(t, env, root.Key, root.Cert), bad: tc.bad}
			if _, err := New(context.Background(), env.config(func(c *Config) { c.Upstream = up })); !errors.Is(err, ErrUpstream) {
				t.Fatalf("New with an upstream answering %s: %v, want ErrUpstream", tc.name, err)
			}
		})
	}
}

// TestUpstreamReplacesOwnRoot: a data dir made with badge's own root,
// reopened under an upstream, rotates its intermediate under the
// upstream at once; the own root stays in the bundle until the last
// intermediate it signed has expired, so SVIDs issued before still
// verify.
func TestUpstreamReplacesOwnRoot(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, scheduleConfig)
	ownRoot, oldInter := a.keys.root, a.keys.inter
	old := derOf(issue(t, a))
	a.Close()
	root := newTestCA(t, "operator root", nil)
	up := &flakyUpstream{Upstream: writeDisk(t, env, root.Key, root.Cert)}
	a = env.open(t, func(c *Config) { scheduleConfig(c); c.Upstream = up })
	if a.keys.inter.id == oldInter.id || len(a.keys.inter.rec.UpstreamRoots) == 0 {
		t.Fatal("the intermediate of the own root still signs under an upstream")
	}
	if err := verifySVID(t, a, env, old); err != nil {
		t.Fatalf("an SVID of the own root no longer verifies: %v", err)
	}
	if rec, _ := recordOf(t, env.store, ownRoot.id); rec.State != storage.KeyRetired || !rec.RemoveAt.Equal(oldInter.cert.NotAfter) {
		t.Fatalf("own root record %s until %s, want retired until %s", rec.State, rec.RemoveAt, oldInter.cert.NotAfter)
	}
	step(t, a, env, oldInter.cert.NotAfter.Sub(env.clock.Now())+time.Second)
	got := a.Snapshot().Bundle().X509Authorities()
	for _, c := range got {
		if c.Equal(ownRoot.cert) {
			t.Fatal("the own root is still in the bundle after its last intermediate expired")
		}
	}
	if len(got) != 1 || !got[0].Equal(root.Cert) {
		t.Fatalf("bundle of %d certificates, want the operator's root alone", len(got))
	}
}

// TestBackoff: the delay between failed rotations doubles from
// IntermediateTTL/16 up to IntermediateTTL/8 (at most 15m).
func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		ttl  time.Duration
		want []time.Duration
	}{
		{24 * time.Hour, []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 15 * time.Minute, 15 * time.Minute}},
		{40 * time.Second, []time.Duration{2500 * time.Millisecond, 5 * time.Second, 5 * time.Second}},
		{4 * time.Second, []time.Duration{time.Second, time.Second}},
	} {
		b := newBackoff(tc.ttl)
		for i, w := range tc.want {
			if got := b.next(); got != w {
				t.Errorf("intermediate TTL %s: delay %d is %s, want %s", tc.ttl, i+1, got, w)
			}
		}
		b.reset()
		if got := b.next(); got != tc.want[0] {
			t.Errorf("intermediate TTL %s: after reset %s, want %s", tc.ttl, got, tc.want[0])
		}
	}
}

func derOf(chain []*x509.Certificate) []byte {
	var out []byte
	for _, c := range chain {
		out = append(out, c.Raw...)
	}
	return out
}

// backdatingUpstream signs intermediates under root with a NotBefore far
// in the past, as step-ca backdates by a minute.
type backdatingUpstream struct {
	root     *testpki.Cert
	now      func() time.Time
	backdate time.Duration
	calls    atomic.Int32
}

func (b *backdatingUpstream) SignIntermediate(_ context.Context, csr *x509.CertificateRequest, lifetime time.Duration) ([]*x509.Certificate, []*x509.Certificate, error) {
	b.calls.Add(1)
	now := b.now()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: csr.Subject, URIs: csr.URIs,
		NotBefore: now.Add(-b.backdate), NotAfter: now.Add(lifetime),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.root.Cert, csr.PublicKey, b.root.Key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return []*x509.Certificate{c}, []*x509.Certificate{b.root.Cert}, err
}

// TestUpstreamBackdatedRotation: an intermediate the upstream backdated
// by as much as its lifetime still rotates half-way through the life it
// has from its activation, once, not at once and again.
func TestUpstreamBackdatedRotation(t *testing.T) {
	env := newEnv(t)
	up := &backdatingUpstream{root: newTestCA(t, "operator root", nil), now: env.clock.Now, backdate: time.Hour}
	mod := func(c *Config) { scheduleConfig(c); c.Upstream = up }
	a := env.open(t, mod)
	start := env.clock.Now()
	if got, want := a.keys.inter.rotateAt(), start.Add(30*time.Minute); !got.Equal(want) {
		t.Fatalf("rotation due at %s, want %s (half the hour from activation)", got, want)
	}
	step(t, a, env, time.Second)
	if n := up.calls.Load(); n != 1 {
		t.Fatalf("the upstream was asked %d times a second after start, want 1", n)
	}
	a.Close()
	a = env.open(t, mod) // the schedule survives a restart
	if got, want := a.keys.inter.rotateAt(), start.Add(30*time.Minute); !got.Equal(want) {
		t.Fatalf("after a restart the rotation is due at %s, want %s", got, want)
	}
	step(t, a, env, 30*time.Minute)
	if n := up.calls.Load(); n != 2 {
		t.Fatalf("the upstream was asked %d times at the rotation, want 2", n)
	}
}

// hangingUpstream answers no request until release is closed.
type hangingUpstream struct {
	Upstream
	entered chan struct{}
	release chan struct{}
}

func (h *hangingUpstream) SignIntermediate(ctx context.Context, csr *x509.CertificateRequest, lifetime time.Duration) ([]*x509.Certificate, []*x509.Certificate, error) {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	select {
	case <-h.release:
		return h.Upstream.SignIntermediate(ctx, csr, lifetime)
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// TestUpstreamSlowHoldsNothing: while the upstream takes its time to
// answer a scheduled rotation, admin changes (a new entry) go through,
// and the JWT key rotates on schedule even when the upstream fails.
func TestUpstreamSlowHoldsNothing(t *testing.T) {
	env := newEnv(t)
	root := newTestCA(t, "operator root", nil)
	disk := writeDisk(t, env, root.Key, root.Cert)
	up := &hangingUpstream{Upstream: disk, entered: make(chan struct{}, 1), release: make(chan struct{})}
	close(up.release) // the first intermediate is signed at once
	a := env.open(t, func(c *Config) { scheduleConfig(c); c.Upstream = up })
	<-up.entered // the first intermediate's request
	up.release = make(chan struct{})
	env.clock.Advance(a.keys.inter.rotateAt().Sub(env.clock.Now()))
	done := make(chan error, 1)
	go func() { _, err := a.advanceKeys(context.Background(), "", 0); done <- err }()
	<-up.entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.CreateEntry(ctx, EntryRequest{SPIFFEID: "spiffe://example.org/while-waiting", Selectors: []string{"unix:uid:1"}}); err != nil {
		t.Fatalf("an entry could not be created while the upstream was answering: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("the rotation finished (%v) before the upstream answered", err)
	default:
	}
	close(up.release)
	if err := <-done; err != nil {
		t.Fatalf("rotation once the upstream answered: %v", err)
	}

	// The upstream fails: the JWT key rotates all the same.
	flaky := &flakyUpstream{Upstream: disk}
	a.cfg.Upstream = flaky
	flaky.down.Store(true)
	jwtBefore := a.keys.jwt.active.id
	env.clock.Advance(a.keys.inter.rotateAt().Sub(env.clock.Now()))
	env.clock.Advance(a.cfg.JWTKeyTTL)
	if _, err := a.advanceKeys(context.Background(), "", 0); !errors.Is(err, ErrUpstream) {
		t.Fatalf("rotation with the upstream down: %v, want ErrUpstream", err)
	}
	if a.keys.jwt.active.id == jwtBefore {
		t.Fatal("the JWT key did not rotate while the upstream was down")
	}
	if n := flaky.calls.Load(); n != 1 {
		t.Fatalf("the upstream was asked %d times in one step, want 1", n)
	}
}

// TestLeavingUpstreamKeepsItsRoots: a data dir made under an upstream,
// reopened with badge's own root, keeps the upstream's root in the bundle
// (also across a restart) until the last intermediate the upstream
// signed has expired, so that SVIDs issued before still verify; the
// schedule wakes for that expiry, and the root then leaves the bundle.
func TestLeavingUpstreamKeepsItsRoots(t *testing.T) {
	env := newEnv(t)
	root := newTestCA(t, "operator root", nil)
	up := &flakyUpstream{Upstream: writeDisk(t, env, root.Key, root.Cert)}
	// JWT keys live long here, so that only the intermediates schedule.
	own := func(c *Config) { scheduleConfig(c); c.JWTKeyTTL = 4 * time.Hour }
	a := env.open(t, func(c *Config) { own(c); c.Upstream = up })
	upInter := a.keys.inter
	env.clock.Advance(20 * time.Minute) // the intermediate rotates at 30m
	old := derOf(issue(t, a))
	a.Close()

	inBundle := func(a *Authority) bool {
		return slices.ContainsFunc(a.Snapshot().Bundle().X509Authorities(), root.Cert.Equal)
	}
	for _, when := range []string{"after leaving the upstream", "after a restart"} {
		a = env.open(t, own)
		if a.keys.root == nil || a.keys.inter.id == upInter.id || a.keys.inter.cert.CheckSignatureFrom(a.keys.root.cert) != nil {
			t.Fatalf("%s: the intermediate %s does not chain to an own root", when, a.keys.inter.id)
		}
		if !inBundle(a) {
			t.Fatalf("%s: the upstream's root left the bundle while its intermediate is valid until %s", when, upInter.cert.NotAfter)
		}
		if err := verifySVID(t, a, env, old); err != nil {
			t.Fatalf("%s: an SVID of the upstream's intermediate no longer verifies: %v", when, err)
		}
		if err := verifySVID(t, a, env, derOf(issue(t, a))); err != nil {
			t.Fatalf("%s: a new SVID does not verify: %v", when, err)
		}
		if rec, _ := recordOf(t, env.store, upInter.id); rec.State != storage.KeyRetired || !rec.RemoveAt.Equal(upInter.cert.NotAfter) {
			t.Errorf("%s: the upstream's intermediate is recorded %s until %s, want retired until %s", when, rec.State, rec.RemoveAt, upInter.cert.NotAfter)
		}
		a.Close()
	}
	a = env.open(t, own)
	// Past the own intermediate's rotation, the next step is the expiry of
	// the upstream's intermediate.
	step(t, a, env, a.keys.inter.rotateAt().Sub(env.clock.Now()))
	a.mu.Lock()
	next := a.nextKeyEventLocked()
	a.mu.Unlock()
	if !next.Equal(upInter.cert.NotAfter) {
		t.Errorf("next key event at %s, want the expiry of the upstream's intermediate %s", next, upInter.cert.NotAfter)
	}
	step(t, a, env, upInter.cert.NotAfter.Sub(env.clock.Now())-time.Second)
	if !inBundle(a) {
		t.Fatal("the upstream's root left the bundle a second before its intermediate expired")
	}
	events := step(t, a, env, time.Second)
	if inBundle(a) {
		t.Fatal("the upstream's root is still in the bundle after its last intermediate expired")
	}
	if !slices.ContainsFunc(events, func(ev keyEvent) bool { return ev.action == AuditKeyRemove && ev.id == upstreamRootID(root.Cert) }) {
		t.Errorf("events %+v: want the removal of the upstream root", events)
	}
	if got := a.Snapshot().Bundle().X509Authorities(); len(got) != 1 || !got[0].Equal(a.keys.root.cert) {
		t.Errorf("bundle of %d certificates, want the own root alone", len(got))
	}
	a.Close()
	a = env.open(t, own)
	if inBundle(a) {
		t.Error("the upstream's root is back in the bundle after a restart")
	}
}
