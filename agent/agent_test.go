package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/nodeproto"
	"github.com/badge-dev/badge/internal/testclock"
)

// syncBuffer is a log destination safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testAgent is an agent under test with its log.
type testAgent struct {
	*Agent
	log *syncBuffer
}

func newTestAgent(t *testing.T, dir string, clock *testclock.Clock, f *fakeServer, mod func(*Config)) (*testAgent, error) {
	t.Helper()
	log := &syncBuffer{}
	cfg := Config{Servers: []string{f.addr}, TrustBundle: f.bundle(), DataDir: dir, Time: clock.Now,
		Logger:     slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, DialTimeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", log.String())
		}
	})
	return &testAgent{Agent: a, log: log}, nil
}

// run runs the agent until the test ends (or stop is called) and returns
// stop, which returns Run's error.
func (a *testAgent) run(t *testing.T) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-errc })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// waitState waits for a state for which ok holds.
func (a *testAgent) waitState(t *testing.T, what string, ok func(*State) bool) *State {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		s := a.State()
		if ok(s) {
			return s
		}
		select {
		case <-s.Done():
		case <-deadline.C:
			t.Fatalf("no state with %s within 5s", what)
		}
	}
}

// waitConn waits until the agent's channel is live (to addr, if set) or,
// with down, until it is not: there is no event for that, so it polls.
func (a *testAgent) waitConn(t *testing.T, addr string, down bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		l := a.conn.Load()
		if down && l == nil || !down && l != nil && (addr == "" || l.addr == addr) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel not %v (addr %q) within 5s", map[bool]string{true: "down", false: "up"}[down], addr)
		}
		<-tick.C
	}
}

func synced(s *State) bool { return s.Synced() }

func dataDir(t *testing.T) string { return filepath.Join(t.TempDir(), "data") }

func TestAttestWithJoinTokenAndRestart(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	dir := dataDir(t)
	tok := f.token("web-1")
	a, err := newTestAgent(t, dir, clock, f, func(c *Config) { c.JoinToken = tok })
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.Node() != "web-1" || f.count("Attest") != 1 {
		t.Fatalf("node %q after %d Attest calls; want web-1 after 1", a.Node(), f.count("Attest"))
	}
	stop := a.run(t)
	a.waitState(t, "a sync", synced)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The data dir is private, the identity file 0600, and neither it nor
	// the log holds the token.
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, IdentityFile): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(tok)) || strings.Contains(a.log.String(), tok) {
		t.Error("the join token is in the data dir or the log")
	}

	for _, tc := range []struct {
		name    string
		advance time.Duration
		token   func() string
		attests int // Attest calls the restart makes
		err     error
	}{
		{"unexpired, no proof", 0, func() string { return "" }, 0, nil},
		{"unexpired, used token kept unsent", 0, func() string { return tok }, 0, nil},
		{"expired, used token not sent again", 2 * time.Hour, func() string { return tok }, 0, ErrNeedJoinToken},
		{"expired, no proof", 0, func() string { return "" }, 0, ErrNeedJoinToken},
		{"expired, unknown token", 0, func() string { return "not-a-token" }, 1, ErrAttestationRefused},
		{"expired, new token", 0, func() string { return f.token("web-1") }, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.Advance(tc.advance)
			before := f.count("Attest")
			b, err := newTestAgent(t, dir, clock, f, func(c *Config) { c.JoinToken = tc.token() })
			if err != nil {
				t.Fatal(err)
			}
			err = b.Attest(context.Background())
			if !errors.Is(err, tc.err) {
				t.Fatalf("Attest = %v, want %v", err, tc.err)
			}
			if n := f.count("Attest") - before; n != tc.attests {
				t.Errorf("%d Attest calls, want %d", n, tc.attests)
			}
			if errors.Is(err, ErrNeedJoinToken) && (!strings.Contains(err.Error(), "badge token create --node web-1") || strings.Contains(err.Error(), "\n")) {
				t.Errorf("error %q: want one line naming the command that makes a token", err)
			}
			if err != nil {
				return
			}
			stop := b.run(t)
			b.waitState(t, "a sync", synced)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAttestRefusesUntrustedServer(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	other := newFakeServer(t, clock.Now)
	a, err := newTestAgent(t, dataDir(t), clock, f, func(c *Config) { c.JoinToken = f.token("web-1"); c.TrustBundle = other.bundle() })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := a.Attest(ctx); err == nil || f.count("Attest") != 0 {
		t.Fatalf("Attest to a server of another CA = %v after %d calls; want an error and no call", err, f.count("Attest"))
	}
	if !strings.Contains(a.log.String(), "certificate signed by unknown authority") {
		t.Errorf("log does not say why the server was refused:\n%s", a.log.String())
	}
}

func TestX509PoPReattestsWhenExpired(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	dir := dataDir(t)
	host := f.hostCert(t, "db-1")
	a, err := newTestAgent(t, dir, clock, f, func(c *Config) { c.NodeCert = host })
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.Node() != "db-1" {
		t.Fatalf("node %q, want db-1", a.Node())
	}
	first := a.NodeSVID()
	// Down for two hours: the node SVID expired meanwhile.
	clock.Advance(2 * time.Hour)
	b, err := newTestAgent(t, dir, clock, f, func(c *Config) { c.NodeCert = host })
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.count("Attest") != 2 || b.NodeSVID().Equal(first) || !clock.Now().Before(b.NodeSVID().NotAfter) {
		t.Fatalf("after a restart with an expired node SVID: %d Attest calls; want 2 and a new, valid node SVID", f.count("Attest"))
	}
	b.run(t)
	b.waitState(t, "a sync", synced)

	// A certificate of another PKI is refused, naming the cause.
	other := newFakeServer(t, clock.Now)
	c, err := newTestAgent(t, dataDir(t), clock, f, func(c *Config) { c.NodeCert = other.hostCert(t, "db-2") })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Attest(context.Background()); !errors.Is(err, ErrAttestationRefused) || !strings.Contains(err.Error(), "host certificate") {
		t.Errorf("Attest with a host certificate of another CA = %v", err)
	}
}

func TestRenewalBeforeHalfLife(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	dir := dataDir(t)
	a := connectedIn(t, dir, clock, f)
	old := a.NodeSVID()

	// Short of half its life (30m of 1h): no renewal, even when woken.
	clock.Advance(29 * time.Minute)
	rev := a.State().Revision()
	f.update(func() {})
	a.waitState(t, "the next revision", func(s *State) bool { return s.Revision() > rev })
	if n := f.count("RenewNode"); n != 0 {
		t.Fatalf("%d renewals before half-life", n)
	}
	// Past it: the next wake-up renews, with a new key.
	clock.Advance(2 * time.Minute)
	f.update(func() {})
	select {
	case <-f.renewed:
	case <-time.After(5 * time.Second):
		t.Fatal("no renewal past half-life")
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.NodeSVID().Equal(old) {
		if time.Now().After(deadline) {
			t.Fatal("the renewed node SVID did not replace the old one")
		}
		time.Sleep(5 * time.Millisecond) // the renewal was answered; its application has no event
	}
	nw := a.NodeSVID()
	if publicKeyEqual(nw.PublicKey, old.PublicKey) {
		t.Error("the renewed node SVID has the old key")
	}
	saved, err := loadIdentity(dir)
	if err != nil || !saved.chain[0].Equal(nw) {
		t.Fatalf("the data dir does not hold the renewed node SVID (%v)", err)
	}
	// New connections present the renewed SVID.
	f.restart()
	rev = a.State().Revision()
	f.update(func() {})
	a.waitConn(t, f.addr, false)
	a.waitState(t, "a sync after the restart", func(s *State) bool { return s.Revision() > rev })
	f.mu.Lock()
	got := f.lastSerial
	f.mu.Unlock()
	if got != nw.SerialNumber.Text(16) {
		t.Errorf("after reconnecting the agent presents serial %s, want the renewed %s", got, nw.SerialNumber.Text(16))
	}
}

func TestFailover(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	g := f.sibling(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	a, err := newTestAgent(t, dataDir(t), clock, f, func(c *Config) {
		c.Servers = []string{dead, f.addr, g.addr}
		c.JoinToken = f.token("web-1")
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.run(t)
	a.waitConn(t, f.addr, false)
	// The second goes down: the agent fails over to the third.
	f.stop()
	a.waitConn(t, g.addr, false)
	for _, want := range []string{"server unreachable; failing over", "lost the channel to the server", "connected to server"} {
		if !strings.Contains(a.log.String(), want) {
			t.Errorf("log has no %q", want)
		}
	}
}

// caller returns a caller of the Workload API with uid's selector.
func caller(uid string) workload.Caller {
	sel, _ := attest.ParseSelector("unix:uid:" + uid)
	return workload.Caller{Selectors: attest.Set{sel: {}}, Kinds: attest.KindUID}
}

// connected returns an agent of node web-1 connected to f.
func connected(t *testing.T, clock *testclock.Clock, f *fakeServer) *testAgent {
	t.Helper()
	return connectedIn(t, dataDir(t), clock, f)
}

// connectedIn is connected with the data dir dir.
func connectedIn(t *testing.T, dir string, clock *testclock.Clock, f *fakeServer) *testAgent {
	t.Helper()
	a, err := newTestAgent(t, dir, clock, f, func(c *Config) { c.JoinToken = f.token("web-1") })
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.run(t)
	a.waitState(t, "a sync", synced)
	a.waitConn(t, "", false)
	return a
}

func serials(svids []workload.X509SVID) []string {
	var out []string
	for _, s := range svids {
		out = append(out, s.Serial)
	}
	return out
}

func TestSourcePolicy(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	f.addEntry("e1", "spiffe://example.org/web", "unix:uid:1001")
	f.addEntry("e2", "spiffe://example.org/web-admin", "unix:uid:1001")
	f.addEntry("e4", "spiffe://example.org/batch", "unix:uid:1002")
	a := connected(t, clock, f)
	src := a.Source()
	ctx := context.Background()

	if k := src.Kinds(); k != attest.KindUID {
		t.Errorf("Kinds = %v, want unix:uid", k)
	}
	if err := src.Check(ctx, workload.Caller{}); !errors.As(err, new(*workload.KindsError)) {
		t.Errorf("Check of a caller not attested for unix:uid = %v, want a KindsError", err)
	}
	if err := src.Check(ctx, caller("1003")); !errors.Is(err, workload.ErrNotRegistered) {
		t.Errorf("Check of an unregistered caller = %v", err)
	}

	// Default first, one SVID per entry, each signed once.
	u, err := src.X509(ctx, workload.X509Request{Caller: caller("1001")})
	if err != nil {
		t.Fatal(err)
	}
	if len(u.SVIDs) != 2 || u.SVIDs[0].ID.String() != "spiffe://example.org/web" || u.SVIDs[1].ID.String() != "spiffe://example.org/web-admin" {
		t.Fatalf("SVIDs %v, want web then web-admin", u.SVIDs)
	}
	if f.count("SignX509") != 2 || len(u.Bundle) == 0 || len(u.CRL) == 0 || u.Done == nil {
		t.Fatalf("after the first X509: %d signatures, bundle %d bytes, CRL %d bytes", f.count("SignX509"), len(u.Bundle), len(u.CRL))
	}
	if want := refreshOf(u.SVIDs[0].NotBefore, u.SVIDs[0].NotAfter); !u.RefreshAt.Equal(want) {
		t.Errorf("RefreshAt %v, want half the SVID's life %v", u.RefreshAt, want)
	}

	// Held SVIDs are handed out again.
	again, err := src.X509(ctx, workload.X509Request{Caller: caller("1001"), Held: u.SVIDs})
	if err != nil {
		t.Fatal(err)
	}
	if !slicesEqual(serials(again.SVIDs), serials(u.SVIDs)) || f.count("SignX509") != 2 {
		t.Errorf("held SVIDs not reused: %v then %v, %d signatures", serials(u.SVIDs), serials(again.SVIDs), f.count("SignX509"))
	}

	// Past half-life, they are replaced.
	clock.Advance(3 * time.Minute)
	due, err := src.X509(ctx, workload.X509Request{Caller: caller("1001"), Held: u.SVIDs})
	if err != nil {
		t.Fatal(err)
	}
	if due.SVIDs[0].Serial == u.SVIDs[0].Serial || f.count("SignX509") != 4 {
		t.Errorf("SVIDs past half-life not replaced: %v then %v", serials(u.SVIDs), serials(due.SVIDs))
	}
	u = due

	// A revoked held SVID is replaced at once; the other is kept.
	f.revoke(u.SVIDs[0].Serial)
	a.waitState(t, "the revocation", func(s *State) bool { return s.Revoked(u.SVIDs[0].Serial) })
	r, err := src.X509(ctx, workload.X509Request{Caller: caller("1001"), Held: u.SVIDs})
	if err != nil {
		t.Fatal(err)
	}
	if r.SVIDs[0].Serial == u.SVIDs[0].Serial || r.SVIDs[1].Serial != u.SVIDs[1].Serial {
		t.Errorf("after revoking %s: %v, want it alone replaced", u.SVIDs[0].Serial, serials(r.SVIDs))
	}
	u = r

	// A new entry closes Done of the update a stream waits on.
	f.addEntry("e3", "spiffe://example.org/web-metrics", "unix:uid:1001")
	select {
	case <-u.Done:
	case <-time.After(2 * time.Second):
		t.Fatal("a new entry did not close Done")
	}
	n, err := src.X509(ctx, workload.X509Request{Caller: caller("1001"), Held: u.SVIDs})
	if err != nil {
		t.Fatal(err)
	}
	if len(n.SVIDs) != 3 || n.SVIDs[0].Serial != u.SVIDs[0].Serial {
		t.Errorf("after a new entry: %v, want the two held and a new one", serials(n.SVIDs))
	}

	// A stale revision: the server has a newer one than the agent's state;
	// the agent waits for the update and asks again.
	f.mu.Lock()
	for i, e := range f.entries {
		if e.Id == "e4" {
			c := proto.Clone(e).(*nodeproto.Entry)
			c.Revision = 2
			f.entries[i] = c
		}
	}
	f.mu.Unlock()
	type result struct {
		u   workload.X509Update
		err error
	}
	res := make(chan result, 1)
	go func() {
		u, err := src.X509(ctx, workload.X509Request{Caller: caller("1002")})
		res <- result{u, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(a.log.String(), "SVID refused as stale") {
		if time.Now().After(deadline) {
			t.Fatal("the stale revision was not refused")
		}
		time.Sleep(5 * time.Millisecond) // a log line is the only sign
	}
	f.update(func() {})
	select {
	case r := <-res:
		if r.err != nil || r.u.SVIDs[0].Revision != 2 {
			t.Fatalf("X509 after a stale revision = %v, %v; want revision 2", r.u.SVIDs, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("X509 did not retry after the next sync update")
	}

	// Blocked: a caller matching only blocked IDs is refused as blocked; a
	// stream holding an SVID of a blocked ID ends.
	f.update(func() {
		for i, e := range f.entries {
			if e.Id == "e1" || e.Id == "e4" {
				c := proto.Clone(e).(*nodeproto.Entry)
				c.Blocked = true
				f.entries[i] = c
			}
		}
	})
	a.waitState(t, "the block", func(s *State) bool { return len(s.blocked) > 0 })
	var be *workload.BlockedError
	if _, err := src.X509(ctx, workload.X509Request{Caller: caller("1001"), Held: n.SVIDs}); !errors.As(err, &be) || !be.Held {
		t.Errorf("X509 holding a blocked ID = %v, want a held BlockedError", err)
	}
	if err := src.Check(ctx, caller("1002")); !errors.As(err, &be) || be.Held || be.IDs[0] != "spiffe://example.org/batch" {
		t.Errorf("Check of a caller of a blocked ID only = %v", err)
	}
	b, err := src.X509(ctx, workload.X509Request{Caller: caller("1001")})
	if err != nil || len(b.SVIDs) != 2 || b.SVIDs[0].ID.String() != "spiffe://example.org/web-admin" {
		t.Errorf("a new stream of a caller with one blocked entry of three = %v, %v", b.SVIDs, err)
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func TestSourceOffline(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	f.addEntry("e1", "spiffe://example.org/web", "unix:uid:1001")
	a := connected(t, clock, f)
	src := a.Source()
	ctx := context.Background()
	u, err := src.X509(ctx, workload.X509Request{Caller: caller("1001")})
	if err != nil {
		t.Fatal(err)
	}
	held := u.SVIDs

	f.stop()
	a.waitConn(t, "", true)
	// Past half-life with no server: the held SVID is kept until it expires.
	clock.Advance(3 * time.Minute)
	k, err := src.X509(ctx, workload.X509Request{Caller: caller("1001"), Held: held})
	if err != nil || k.SVIDs[0].Serial != held[0].Serial || !k.RefreshAt.Equal(held[0].NotAfter) {
		t.Fatalf("offline X509 with a held SVID = %v, %v; want it kept until it expires", k, err)
	}
	// A new caller is told no server answers.
	if _, err := src.X509(ctx, workload.X509Request{Caller: caller("1001")}); status.Code(err) != codes.Unavailable ||
		!strings.Contains(err.Error(), "not connected to any badge server") {
		t.Errorf("offline X509 without a held SVID = %v, want Unavailable saying why", err)
	}
	if _, err := src.SignJWT(ctx, workload.JWTRequest{Caller: caller("1001"), Audience: []string{"x"}}); status.Code(err) != codes.Unavailable {
		t.Errorf("offline SignJWT = %v, want Unavailable", err)
	}
	if err := src.Check(ctx, caller("1001")); status.Code(err) != codes.Unavailable {
		t.Errorf("offline Check = %v, want Unavailable", err)
	}

	// The server is back: the agent reconnects and the stream gets a fresh SVID.
	f.restart()
	a.waitConn(t, "", false)
	select {
	case <-k.Done:
	case <-time.After(5 * time.Second):
		t.Fatal("reconnecting did not close Done")
	}
	fresh, err := src.X509(ctx, workload.X509Request{Caller: caller("1001"), Held: k.SVIDs})
	if err != nil || fresh.SVIDs[0].Serial == held[0].Serial {
		t.Fatalf("after reconnecting: %v, %v; want a fresh SVID", fresh.SVIDs, err)
	}

	// Expired while offline: the stream ends.
	f.stop()
	a.waitConn(t, "", true)
	clock.Advance(10 * time.Minute)
	if _, err := src.X509(ctx, workload.X509Request{Caller: caller("1001"), Held: fresh.SVIDs}); status.Code(err) != codes.Unavailable {
		t.Errorf("offline X509 with an expired held SVID = %v, want Unavailable", err)
	}
}

func TestSourceJWT(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	f.addEntry("e1", "spiffe://example.org/web", "unix:uid:1001")
	a := connected(t, clock, f)
	src := a.Source()
	ctx := context.Background()
	toks, err := src.SignJWT(ctx, workload.JWTRequest{Caller: caller("1001"), Audience: []string{"db"}})
	if err != nil || len(toks) != 1 || toks[0].ID.String() != "spiffe://example.org/web" {
		t.Fatalf("SignJWT = %v, %v", toks, err)
	}
	if got := issuedAt(toks[0].Token, time.Time{}); got.Unix() != clock.Now().Unix() {
		t.Errorf("issuedAt = %v, want %v", got, clock.Now())
	}
	var inv *workload.InvalidError
	if _, err := src.SignJWT(ctx, workload.JWTRequest{Caller: caller("1001"), Audience: []string{"bad"}}); !errors.As(err, &inv) {
		t.Errorf("SignJWT with a refused audience = %v, want an InvalidError", err)
	}
	if _, err := src.SignJWT(ctx, workload.JWTRequest{Caller: caller("1003"), Audience: []string{"db"}}); !errors.Is(err, workload.ErrNotRegistered) {
		t.Errorf("SignJWT of an unregistered caller = %v", err)
	}
	c, err := src.ValidateJWT(ctx, "token", "db")
	if err != nil || c.ID.String() != "spiffe://example.org/web" || c.Claims["sub"] != "spiffe://example.org/web" {
		t.Errorf("ValidateJWT = %v, %v", c, err)
	}
	if _, err := src.ValidateJWT(ctx, "expired", "db"); !errors.As(err, &inv) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("ValidateJWT of a refused token = %v, want an InvalidError saying why", err)
	}
	b := src.Bundles(ctx)
	if len(b.X509["spiffe://example.org"]) == 0 || len(b.JWT["spiffe://example.org"]) == 0 || len(b.CRL) == 0 {
		t.Errorf("Bundles = %+v", b)
	}
}

func TestEvictedNode(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	f.addEntry("e1", "spiffe://example.org/web", "unix:uid:1001")
	a, err := newTestAgent(t, dataDir(t), clock, f, func(c *Config) { c.JoinToken = f.token("web-1") })
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	a.waitState(t, "a sync", synced)
	a.waitConn(t, "", false)
	u, err := a.Source().X509(ctx, workload.X509Request{Caller: caller("1001")})
	if err != nil {
		t.Fatal(err)
	}
	f.update(func() { f.evicted["web-1"] = true })
	select {
	case err := <-errc:
		if !errors.Is(err, ErrNeedJoinToken) || !strings.Contains(err.Error(), "the server refused it") {
			t.Errorf("Run of an evicted node = %v, want ErrNeedJoinToken saying the server refused it", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run went on after the node was evicted")
	}
	// Its workloads get no new SVID.
	clock.Advance(3 * time.Minute)
	if n, err := a.Source().X509(ctx, workload.X509Request{Caller: caller("1001"), Held: u.SVIDs}); err == nil && n.SVIDs[0].Serial != u.SVIDs[0].Serial {
		t.Errorf("an evicted node's workload got a new SVID")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	// A data dir another user can write.
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	corrupt := dataDir(t)
	if err := os.MkdirAll(corrupt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(corrupt, IdentityFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"group-writable data dir", func(c *Config) { c.DataDir = open }, "not writable by group or others"},
		{"corrupt identity", func(c *Config) { c.DataDir = corrupt }, "corrupt node identity file"},
		{"token and certificate", func(c *Config) { c.JoinToken = "t"; c.NodeCert = f.hostCert(t, "x") }, "exclude each other"},
		{"no servers", func(c *Config) { c.Servers = nil }, "Servers is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newTestAgent(t, dataDir(t), clock, f, tc.mod)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestParseServers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // joined by ","; "" for an error
	}{
		{"a:1", "a:1"},
		{"a:1, 10.0.0.2:8443", "a:1,10.0.0.2:8443"},
		{"[::1]:9", "[::1]:9"},
		{"", ""},
		{"a", ""},
		{"a:1,,b:2", ""},
		{":1", ""},
		{"a:1/x", ""},
	} {
		got, err := ParseServers(tc.in)
		if (err != nil) != (tc.want == "") || strings.Join(got, ",") != tc.want {
			t.Errorf("ParseServers(%q) = %v, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestRefusedInHandshake(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: remote error: tls: bad certificate"`), codes.PermissionDenied},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: remote error: tls: internal error"`), codes.Unavailable},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), codes.Unavailable},
		{errors.New("no answer within 10s"), codes.Unknown},
	} {
		if got := status.Code(refusedInHandshake(tc.err)); got != tc.want {
			t.Errorf("refusedInHandshake(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestSourceReplacesSVIDOfAnotherCA: a held SVID whose CA did not sign the
// CRL (the server's intermediate rotated since it was issued) is replaced
// at once, so that its holder can verify the CRLs to come; the
// replacement, of the CA that signs the CRL, is then reused.
func TestSourceReplacesSVIDOfAnotherCA(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	f.addEntry("e1", "spiffe://example.org/web", "unix:uid:1001")
	a := connected(t, clock, f)
	src := a.Source()
	ctx := context.Background()
	u, err := src.X509(ctx, workload.X509Request{Caller: caller("1001")})
	if err != nil {
		t.Fatal(err)
	}

	// The same SVID, as the previous intermediate under the same root
	// (same name, another key) issued it.
	key, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	cur := f.ca.Intermediate
	prevDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: cur.Subject,
		NotBefore: cur.NotBefore, NotAfter: cur.NotAfter, IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, f.ca.Root, key.Public(), f.ca.RootSigner)
	if err != nil {
		t.Fatal(err)
	}
	prev, err := x509.ParseCertificate(prevDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(u.SVIDs[0].CertChainDER[:len(u.SVIDs[0].CertChainDER)-len(cur.Raw)])
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, prev, leaf.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	old := u.SVIDs[0]
	old.CertChainDER = append(leafDER, prevDER...)

	for _, tc := range []struct {
		name   string
		held   workload.X509SVID
		reused bool
	}{
		{"of the CA that signs the CRL", u.SVIDs[0], true},
		{"of the previous intermediate", old, false},
	} {
		signed := f.count("SignX509")
		r, err := src.X509(ctx, workload.X509Request{Caller: caller("1001"), Held: []workload.X509SVID{tc.held}})
		if err != nil {
			t.Fatal(err)
		}
		if reused := r.SVIDs[0].Serial == tc.held.Serial && f.count("SignX509") == signed; reused != tc.reused {
			t.Errorf("held SVID %s: serial %s then %s, %d signatures; want reused=%v", tc.name, tc.held.Serial, r.SVIDs[0].Serial, f.count("SignX509")-signed, tc.reused)
		}
		if !a.State().CRLVerifies(r.SVIDs[0].CertChainDER) {
			t.Errorf("held SVID %s: the CRL does not verify against the CA of the SVID handed out", tc.name)
		}
	}
}
