package workload_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca"
	badgeworkload "github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/testclock"
	"github.com/badge-dev/badge/storage/bbolt"
)

// fixture is a Workload API server on a real Unix socket, backed by a real
// authority on a real bbolt store and the real attestor. The test process
// itself is the workload.
type fixture struct {
	att    *changingAttestor
	auth   *ca.Authority
	srv    *badgeworkload.Server
	sock   string
	api    workload.SpiffeWorkloadAPIClient
	served chan error
	once   sync.Once
}

func start(t testing.TB, mod func(*ca.Config), opts ...func(*badgeworkload.Config)) *fixture {
	t.Helper()
	// os.MkdirTemp keeps the socket path under the 108-byte limit
	// whatever the test's name.
	dir, err := os.MkdirTemp("", "badge-wl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	store, err := bbolt.Open(filepath.Join(dir, "badge.db"), &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := ca.Config{Store: store, KeyDir: filepath.Join(dir, "keys")}
	if mod != nil {
		mod(&cfg)
	}
	auth, err := ca.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auth.Close() })

	f := &fixture{auth: auth, sock: filepath.Join(dir, "workload.sock"), served: make(chan error, 1)}
	l, err := badgeworkload.Listen(f.sock)
	if err != nil {
		t.Fatal(err)
	}
	f.att = &changingAttestor{Attestor: attest.New(attest.Config{})}
	src := auth.WorkloadSource()
	wcfg := badgeworkload.Config{Source: src, Attestor: f.att, JWT: src}
	for _, o := range opts {
		o(&wcfg)
	}
	srv, err := badgeworkload.New(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	go func() { f.served <- f.srv.Serve(l) }()
	t.Cleanup(func() { f.shutdown(t) })

	conn, err := grpc.NewClient("unix://"+f.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f.api = workload.NewSpiffeWorkloadAPIClient(conn)
	return f
}

// changingAttestor is the real attestor, except that once changed is set,
// Verify (and so Attest) reports the peer changed, as after an exec(2) of
// the process that connected. The e2e tests in cmd/badge make real
// processes do it; this lets the unit tests reach every call path.
type changingAttestor struct {
	*attest.Attestor
	changed  atomic.Bool
	verifies atomic.Int64
}

func (a *changingAttestor) Verify(p *attest.Peer) error {
	a.verifies.Add(1)
	if a.changed.Load() {
		return fmt.Errorf("%w (pid %d)", attest.ErrPeerChanged, p.PID)
	}
	return a.Attestor.Verify(p)
}

func (a *changingAttestor) Attest(p *attest.Peer, k attest.Kind) (attest.Set, error) {
	if a.changed.Load() {
		return nil, fmt.Errorf("%w (pid %d)", attest.ErrPeerChanged, p.PID)
	}
	return a.Attestor.Attest(p, k)
}

// shutdown stops the server, once, and checks that Serve returned nil.
func (f *fixture) shutdown(t testing.TB) {
	t.Helper()
	f.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.srv.Shutdown(ctx)
		if err := <-f.served; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})
}

func (f *fixture) create(t testing.TB, id string, selectors ...string) string {
	t.Helper()
	e, err := f.auth.CreateEntry(context.Background(), ca.EntryRequest{SPIFFEID: id, Selectors: selectors})
	if err != nil {
		t.Fatal(err)
	}
	return e.ID
}

// withHeader adds the metadata every Workload API call must carry.
func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

// mySelector is a selector the test process (the workload) has.
func mySelector() string { return fmt.Sprintf("unix:uid:%d", os.Getuid()) }

// received is one message or the error that ended the stream.
type received[T any] struct {
	msg *T
	err error
	at  time.Time
}

// recvLoop reads a stream until it ends, handing each message over a channel.
func recvLoop[T any](stream interface{ Recv() (*T, error) }) <-chan received[T] {
	ch := make(chan received[T], 16)
	go func() {
		defer close(ch)
		for {
			m, err := stream.Recv()
			ch <- received[T]{msg: m, err: err, at: time.Now()}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// next waits for the next message or the end of the stream, failing the
// test if neither comes within d.
func next[T any](t *testing.T, ch <-chan received[T], d time.Duration) received[T] {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("stream reader stopped")
		}
		return r
	case <-timer.C:
		t.Fatalf("nothing received within %s", d)
		return received[T]{}
	}
}

func TestSecurityHeaderRequired(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/me", mySelector())

	headers := []struct {
		name string
		md   metadata.MD
	}{
		{"missing", nil},
		{"false", metadata.Pairs("workload.spiffe.io", "false")},
		{"empty", metadata.Pairs("workload.spiffe.io", "")},
		{"twice", metadata.Pairs("workload.spiffe.io", "true", "workload.spiffe.io", "true")},
	}
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"FetchX509SVID", func(ctx context.Context) error {
			s, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"FetchX509Bundles", func(ctx context.Context) error {
			s, err := f.api.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
	}
	for _, h := range headers {
		for _, c := range calls {
			t.Run(h.name+"/"+c.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if h.md != nil {
					ctx = metadata.NewOutgoingContext(ctx, h.md)
				}
				if err := c.call(ctx); status.Code(err) != codes.InvalidArgument {
					t.Errorf("%s with header %s = %v, want InvalidArgument", c.name, h.name, err)
				}
			})
		}
	}
}

func TestNoMatchingEntry(t *testing.T) {
	tests := []struct {
		name    string
		entries [][]string // selectors of each entry
	}{
		{"no entries", nil},
		{"entry for another uid", [][]string{{"unix:uid:4242"}}},
		{"entry needing a selector the caller lacks", [][]string{{mySelector(), "unix:uid:4242"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := start(t, nil)
			for i, sels := range tt.entries {
				f.create(t, fmt.Sprintf("spiffe://example.org/other/%d", i), sels...)
			}
			ctx, cancel := context.WithTimeout(withHeader(context.Background()), 10*time.Second)
			defer cancel()
			s, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("FetchX509SVID = %v, want PermissionDenied", err)
			}
			b, err := f.api.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
			if err == nil {
				_, err = b.Recv()
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("FetchX509Bundles = %v, want PermissionDenied", err)
			}
		})
	}
}

func TestFetchWithGoSPIFFEClient(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/me", mySelector())
	f.create(t, "spiffe://example.org/me-too", fmt.Sprintf("unix:gid:%d", os.Getgid()))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+f.sock))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	svid, err := client.FetchX509SVID(ctx)
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	want := spiffeid.RequireFromString("spiffe://example.org/me")
	if svid.ID != want {
		t.Errorf("default SVID is %s, want the oldest entry's %s", svid.ID, want)
	}
	bundles, err := client.FetchX509Bundles(ctx)
	if err != nil {
		t.Fatalf("FetchX509Bundles: %v", err)
	}
	b, err := bundles.GetX509BundleForTrustDomain(want.TrustDomain())
	if err != nil || !b.Equal(f.auth.Snapshot().Bundle()) {
		t.Fatalf("bundle for %s: %v; want the authority's bundle", want.TrustDomain(), err)
	}
	if id, _, err := x509svid.Verify(svid.Certificates, bundles); err != nil || id != want {
		t.Errorf("x509svid.Verify = %s, %v; want %s", id, err, want)
	}

	all, err := client.FetchX509SVIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != want || all[1].ID.String() != "spiffe://example.org/me-too" {
		t.Errorf("FetchX509SVIDs gave %d SVIDs, want me then me-too", len(all))
	}
	xctx, err := client.FetchX509Context(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(xctx.SVIDs) != 2 || xctx.Bundles.Len() != 1 {
		t.Errorf("X509Context: %d SVIDs, %d bundles; want 2, 1", len(xctx.SVIDs), xctx.Bundles.Len())
	}
}

func svidIDs(resp *workload.X509SVIDResponse) []string {
	var out []string
	for _, s := range resp.GetSvids() {
		out = append(out, s.GetSpiffeId())
	}
	return out
}

func leafOf(t *testing.T, s *workload.X509SVID) *x509.Certificate {
	t.Helper()
	certs, err := x509.ParseCertificates(s.GetX509Svid())
	if err != nil || len(certs) == 0 {
		t.Fatalf("parsing SVID: %v", err)
	}
	return certs[0]
}

func TestStreamPushesEntryChanges(t *testing.T) {
	f := start(t, nil)
	first := f.create(t, "spiffe://example.org/first", mySelector())

	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 30*time.Second)
	defer cancel()
	stream, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msgs := recvLoop(stream)
	r := next(t, msgs, 10*time.Second)
	if r.err != nil || !equal(svidIDs(r.msg), "spiffe://example.org/first") {
		t.Fatalf("first message: %v, %v; want one SVID for first", svidIDs(r.msg), r.err)
	}
	firstCert := r.msg.Svids[0].X509Svid

	// A new matching entry, with a kind of selector the stream was not
	// attested for, reaches the open stream at once.
	created := time.Now()
	second := f.create(t, "spiffe://example.org/second", fmt.Sprintf("unix:gid:%d", os.Getgid()))
	r = next(t, msgs, 5*time.Second)
	t.Logf("new entry reached the stream after %s", r.at.Sub(created))
	if r.err != nil || !equal(svidIDs(r.msg), "spiffe://example.org/first", "spiffe://example.org/second") {
		t.Fatalf("after CreateEntry: %v, %v; want first then second", svidIDs(r.msg), r.err)
	}
	if !bytes.Equal(r.msg.Svids[0].X509Svid, firstCert) {
		t.Error("the unchanged entry's SVID was re-signed; it should be reused until half its life")
	}
	for _, s := range r.msg.Svids {
		if !bytes.Equal(s.Bundle, f.auth.Snapshot().BundleDER()) {
			t.Errorf("SVID %s carries a bundle other than the authority's", s.SpiffeId)
		}
	}

	// An entry that does not match the caller sends nothing; the next
	// message is the one for the delete below.
	f.create(t, "spiffe://example.org/stranger", "unix:uid:4242")
	deleted := time.Now()
	if err := f.auth.DeleteEntry(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	r = next(t, msgs, 5*time.Second)
	t.Logf("deleted entry reached the stream after %s", r.at.Sub(deleted))
	if r.err != nil || !equal(svidIDs(r.msg), "spiffe://example.org/first") {
		t.Fatalf("after DeleteEntry: %v, %v; want first only", svidIDs(r.msg), r.err)
	}

	// The last matching entry gone, the stream ends.
	if err := f.auth.DeleteEntry(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	r = next(t, msgs, 5*time.Second)
	if status.Code(r.err) != codes.PermissionDenied {
		t.Fatalf("after deleting every matching entry: message %v, error %v; want PermissionDenied", svidIDs(r.msg), r.err)
	}
}

func equal(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestHalfLifeRefresh: a stream replaces an SVID half-way through its life
// as read on the server's clock (Config.Time, the authority's clock), not
// the wall clock; an injected clock makes the test wait no real time.
func TestHalfLifeRefresh(t *testing.T) {
	// Far from the wall clock, so that a stream reading the wall clock
	// never refreshes; certificate times have whole seconds, so does it.
	clk := testclock.New(time.Date(2041, time.March, 4, 5, 6, 7, 0, time.UTC))
	f := start(t, func(c *ca.Config) {
		c.SVIDTTL, c.MaxSVIDTTL, c.IntermediateTTL = ca.MinSVIDTTL, ca.MinSVIDTTL, time.Hour
		c.Time = clk.Now
	}, func(c *badgeworkload.Config) { c.Time = clk.Now })
	f.create(t, "spiffe://example.org/short", mySelector())

	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 30*time.Second)
	defer cancel()
	stream, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msgs := recvLoop(stream)
	r := next(t, msgs, 5*time.Second)
	if r.err != nil || len(r.msg.Svids) != 1 {
		t.Fatalf("first message: %v, %v", svidIDs(r.msg), r.err)
	}
	first := leafOf(t, r.msg.Svids[0])
	if life := first.NotAfter.Sub(first.NotBefore); life > ca.MinSVIDTTL+ca.Backdate {
		t.Fatalf("SVID valid for %s, want at most %s", life, ca.MinSVIDTTL+ca.Backdate)
	}
	issued := func(c *x509.Certificate) time.Time { return c.NotBefore.Add(ca.Backdate) }
	refreshAt := issued(first).Add(first.NotAfter.Sub(issued(first)) / 2)

	// The stream's timer runs on real time; a new snapshot (an entry the
	// caller does not match) wakes it to read the clock again. Just before
	// half-life it must keep the SVID, just after replace it.
	wake := func(name string) {
		f.create(t, "spiffe://example.org/"+name, fmt.Sprintf("unix:uid:%d", os.Getuid()+4242))
	}
	clk.Advance(refreshAt.Sub(clk.Now()) - time.Second)
	wake("early")
	clk.Advance(2 * time.Second)
	wake("due")
	r = next(t, msgs, 10*time.Second)
	if r.err != nil || len(r.msg.Svids) != 1 {
		t.Fatalf("second message: %v, %v", svidIDs(r.msg), r.err)
	}
	second := leafOf(t, r.msg.Svids[0])
	elapsed := issued(second).Sub(issued(first))
	t.Logf("refreshed SVID issued %s after the first, on the server's clock", elapsed)
	if elapsed < ca.MinSVIDTTL/2 {
		t.Errorf("refresh came after %s, before half the SVID's life (%s)", elapsed, ca.MinSVIDTTL/2)
	}
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("the refreshed SVID has the same serial")
	}
	if !second.NotAfter.After(first.NotAfter) {
		t.Errorf("refreshed SVID expires at %v, not after the first's %v", second.NotAfter, first.NotAfter)
	}
}

func TestShutdownEndsStreams(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/me", mySelector())

	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 30*time.Second)
	defer cancel()
	svids, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := f.api.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	svidMsgs, bundleMsgs := recvLoop(svids), recvLoop(bundles)
	if r := next(t, svidMsgs, 10*time.Second); r.err != nil {
		t.Fatalf("FetchX509SVID: %v", r.err)
	}
	if r := next(t, bundleMsgs, 10*time.Second); r.err != nil || !bytes.Equal(r.msg.Bundles["spiffe://example.org"], f.auth.Snapshot().BundleDER()) {
		t.Fatalf("FetchX509Bundles: %v, %v; want the authority's bundle", r.msg, r.err)
	}

	stopped := make(chan struct{})
	go func() { f.shutdown(t); close(stopped) }()
	for name, r := range map[string]error{
		"FetchX509SVID":    next(t, svidMsgs, 10*time.Second).err,
		"FetchX509Bundles": next(t, bundleMsgs, 10*time.Second).err,
	} {
		if status.Code(r) != codes.Unavailable {
			t.Errorf("%s after Shutdown: %v, want Unavailable", name, r)
		}
		if errors.Is(r, io.EOF) {
			t.Errorf("%s ended cleanly; a client would not know to reconnect", name)
		}
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// TestBundleStreamReattests: a bundle stream whose caller is entitled only
// through an entry with a kind of selector that did not exist when the
// stream was opened must stay open, as FetchX509SVID's does.
func TestBundleStreamReattests(t *testing.T) {
	f := start(t, nil)
	uidEntry := f.create(t, "spiffe://example.org/by-uid", mySelector())

	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 30*time.Second)
	defer cancel()
	bundles, err := f.api.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msgs := recvLoop(bundles)
	if r := next(t, msgs, 10*time.Second); r.err != nil {
		t.Fatal(r.err)
	}
	f.create(t, "spiffe://example.org/by-gid", fmt.Sprintf("unix:gid:%d", os.Getgid()))
	if err := f.auth.DeleteEntry(context.Background(), uidEntry); err != nil {
		t.Fatal(err)
	}
	// The bundle does not change, so a correct server sends nothing: wait
	// a bounded time for the wrong outcome, the stream ending.
	select {
	case r := <-msgs:
		t.Fatalf("bundle stream got %v, %v; want it to stay open for a caller that still has an entry", r.msg, r.err)
	case <-time.After(time.Second):
	}
	// FetchX509SVID re-attests, and serves the same caller.
	svids, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := svids.Recv(); err != nil || !equal(svidIDs(resp), "spiffe://example.org/by-gid") {
		t.Fatalf("FetchX509SVID: %v, %v; want the by-gid SVID", svidIDs(resp), err)
	}
}

// TestBlockEndsStreamWithOtherEntries: a stream that carries SVIDs of two
// entries ends with PermissionDenied when one of the IDs is blocked, as
// the README promises for blocked IDs' streams; it does not go on with the
// other entry's SVID alone. A new call gets the other entry only.
func TestBlockEndsStreamWithOtherEntries(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/kept", mySelector())
	f.create(t, "spiffe://example.org/blocked", mySelector(), fmt.Sprintf("unix:gid:%d", os.Getgid()))

	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 30*time.Second)
	defer cancel()
	stream, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msgs := recvLoop(stream)
	r := next(t, msgs, 10*time.Second)
	if r.err != nil || !equal(svidIDs(r.msg), "spiffe://example.org/kept", "spiffe://example.org/blocked") {
		t.Fatalf("first message: %v, %v; want kept and blocked", svidIDs(r.msg), r.err)
	}
	if _, err := f.auth.RevokeID(context.Background(), ca.RevokeRequest{SPIFFEID: "spiffe://example.org/blocked", Block: true}); err != nil {
		t.Fatal(err)
	}
	r = next(t, msgs, 5*time.Second)
	if status.Code(r.err) != codes.PermissionDenied {
		t.Fatalf("after blocking one of its IDs the stream got %v, %v; want PermissionDenied", svidIDs(r.msg), r.err)
	}

	again, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := again.Recv()
	if err != nil || !equal(svidIDs(resp), "spiffe://example.org/kept") {
		t.Fatalf("new stream after the block: %v, %v; want kept only", svidIDs(resp), err)
	}
}

// TestChangedPeerGetsNothingMore: once the peer is no longer the process
// that connected (exited, or exec'd), a stream sends nothing more and ends
// with PermissionDenied at its next wake-up, and no call issues anything.
func TestChangedPeerGetsNothingMore(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/me", mySelector())
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 30*time.Second)
	defer cancel()

	x509s, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	xmsgs := recvLoop(x509s)
	if r := next(t, xmsgs, 10*time.Second); r.err != nil {
		t.Fatal(r.err)
	}
	bundles, err := f.api.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bmsgs := recvLoop(bundles)
	if r := next(t, bmsgs, 10*time.Second); r.err != nil {
		t.Fatal(r.err)
	}
	jwts, err := f.api.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jmsgs := recvLoop(jwts)
	if r := next(t, jmsgs, 10*time.Second); r.err != nil {
		t.Fatal(r.err)
	}

	f.att.changed.Store(true)
	// A re-issuance: the entry changes (a new revision of the same ID).
	f.create(t, "spiffe://example.org/me-too", mySelector())
	if r := next(t, xmsgs, 5*time.Second); status.Code(r.err) != codes.PermissionDenied {
		t.Errorf("X.509 stream after the peer changed: %v, %v; want PermissionDenied and nothing else", svidIDs(r.msg), r.err)
	}
	if r := next(t, bmsgs, 5*time.Second); status.Code(r.err) != codes.PermissionDenied {
		t.Errorf("bundle stream after the peer changed: %v; want PermissionDenied", r.err)
	}
	if r := next(t, jmsgs, 5*time.Second); status.Code(r.err) != codes.PermissionDenied {
		t.Errorf("JWT bundle stream after the peer changed: %v; want PermissionDenied", r.err)
	}
	if _, err := f.api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVID after the peer changed: %v, want PermissionDenied", err)
	}
}

// TestVerifiedBeforeSend: a fresh fetch verifies the peer after signing,
// right before the keys go out (the attestation before signing verifies
// too).
func TestVerifiedBeforeSend(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/me", mySelector())
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 30*time.Second)
	defer cancel()
	s, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if n := f.att.verifies.Load(); n != 1 {
		t.Errorf("Verify called %d times by the stream before its first message, want 1 (before Send)", n)
	}
	before := f.att.verifies.Load()
	if _, err := f.api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if n := f.att.verifies.Load() - before; n != 1 {
		t.Errorf("FetchJWTSVID called Verify %d times, want 1 (after signing)", n)
	}
}

// TestNewRequiresDependencies: a Config without its required Authority or
// Attestor is refused by New, rather than panicking at the first call.
func TestNewRequiresDependencies(t *testing.T) {
	f := start(t, nil)
	att := attest.New(attest.Config{})
	for _, tc := range []struct {
		name string
		cfg  badgeworkload.Config
	}{
		{"no source", badgeworkload.Config{Attestor: att}},
		{"no attestor", badgeworkload.Config{Source: f.auth.WorkloadSource()}},
		{"nothing", badgeworkload.Config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := badgeworkload.New(tc.cfg)
			if err == nil || srv != nil {
				t.Fatalf("New = %v, %v; want an error", srv, err)
			}
			t.Logf("New: %v", err)
		})
	}
}
