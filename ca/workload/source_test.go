package workload_test

// The handler against a fake Source: what crosses the seam is plain data,
// so a fake written here stands for any issuer (the server's authority, an
// agent's server). The real socket, attestor and gRPC client are used.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
	badgeworkload "github.com/badge-dev/badge/ca/workload"
)

// fakeSource answers from fields a test sets; push replaces the answer and
// closes the Done channel of the previous one, as an issuer does when
// anything changes.
type fakeSource struct {
	mu      sync.Mutex
	kinds   attest.Kind              // reported by Kinds
	hidden  attest.Kind              // not reported, but asked for by *KindsError (as blocked entries' kinds)
	update  badgeworkload.X509Update // SVIDs, Bundle, CRL, RefreshAt; Done is the source's
	err     error                    // returned by X509, Check and SignJWT while set
	done    chan struct{}
	held    [][]badgeworkload.X509SVID // req.Held of every X509 call
	callers []badgeworkload.Caller     // req.Caller of every X509 call
	signing func()                     // runs inside X509, as signing would
	budget  bool                       // charge req.Budget for every X509 call
	jwts    []badgeworkload.JWTSVID
	claims  badgeworkload.JWTClaims
	asked   chan struct{} // receives after every X509 call
}

func newFakeSource() *fakeSource {
	return &fakeSource{kinds: attest.KindUID, done: make(chan struct{}), asked: make(chan struct{}, 64)}
}

func fakeSVID(serial string) badgeworkload.X509SVID {
	return badgeworkload.X509SVID{
		ID: spiffeid.RequireFromString("spiffe://example.org/fake"), EntryID: "e1", Revision: 1,
		CertChainDER: []byte("chain-" + serial), KeyDER: []byte("key-" + serial), Serial: serial,
	}
}

// push sets what the source answers from now on and wakes every stream.
func (s *fakeSource) push(u badgeworkload.X509Update, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.update, s.err = u, err
	close(s.done)
	s.done = make(chan struct{})
}

func (s *fakeSource) Kinds() attest.Kind {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kinds
}

// need returns a *KindsError when c lacks kinds the source uses; s.mu is held.
func (s *fakeSource) need(c badgeworkload.Caller) error {
	if k := s.kinds | s.hidden; k&^c.Kinds != 0 {
		return &badgeworkload.KindsError{Kinds: k}
	}
	return nil
}

func (s *fakeSource) Check(_ context.Context, c badgeworkload.Caller) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.need(c); err != nil {
		return err
	}
	return s.err
}

func (s *fakeSource) X509(ctx context.Context, req badgeworkload.X509Request) (badgeworkload.X509Update, error) {
	defer func() { s.asked <- struct{}{} }()
	s.mu.Lock()
	s.held = append(s.held, req.Held)
	s.callers = append(s.callers, req.Caller)
	u, err, signing, budget := s.update, s.err, s.signing, s.budget
	u.Done = s.done
	if kerr := s.need(req.Caller); kerr != nil {
		err = kerr
	}
	s.mu.Unlock()
	if err != nil {
		return badgeworkload.X509Update{}, err
	}
	if budget {
		if err := req.Budget.SignX509(ctx); err != nil {
			return badgeworkload.X509Update{}, err
		}
	}
	if signing != nil {
		signing()
	}
	return u, nil
}

func (s *fakeSource) Bundles(context.Context) badgeworkload.Bundles {
	s.mu.Lock()
	defer s.mu.Unlock()
	return badgeworkload.Bundles{
		X509: map[string][]byte{"spiffe://example.org": s.update.Bundle},
		JWT:  map[string][]byte{"spiffe://example.org": []byte(`{"keys":[]}`)},
		CRL:  s.update.CRL, Done: s.done,
	}
}

func (s *fakeSource) SignJWT(_ context.Context, req badgeworkload.JWTRequest) ([]badgeworkload.JWTSVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.need(req.Caller); err != nil {
		return nil, err
	}
	return s.jwts, s.err
}

func (s *fakeSource) ValidateJWT(context.Context, string, string) (badgeworkload.JWTClaims, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims, s.err
}

type fullSource interface {
	badgeworkload.Source
	badgeworkload.JWTSource
}

// startFake serves the Workload API from src on a real socket.
func startFake(t *testing.T, src fullSource, lim badgeworkload.Limits) (workload.SpiffeWorkloadAPIClient, *changingAttestor) {
	t.Helper()
	dir, err := os.MkdirTemp("", "badge-wl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "workload.sock")
	l, err := badgeworkload.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	att := &changingAttestor{Attestor: attest.New(attest.Config{})}
	srv, err := badgeworkload.New(badgeworkload.Config{Source: src, JWT: src, Attestor: att, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn), att
}

// openX509 opens a FetchX509SVID stream and reads it in the background.
func openX509(t *testing.T, api workload.SpiffeWorkloadAPIClient) <-chan received[workload.X509SVIDResponse] {
	t.Helper()
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 30*time.Second)
	t.Cleanup(cancel)
	stream, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return recvLoop(stream)
}

// waitAsked waits until the source was asked n more times.
func waitAsked(t *testing.T, src *fakeSource, n int) {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for range n {
		select {
		case <-src.asked:
		case <-timer.C:
			t.Fatal("the handler did not ask the source again")
		}
	}
}

// TestFakeSourcePushesUpdates: the handler sends what the source says the
// caller holds, asks again when Done closes, passes what the caller holds
// back to the source, and sends only when something changed.
func TestFakeSourcePushesUpdates(t *testing.T) {
	src := newFakeSource()
	src.update = badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("1")}, Bundle: []byte("bundle-1"), CRL: []byte("crl-1")}
	api, _ := startFake(t, src, badgeworkload.Limits{})
	msgs := openX509(t, api)

	r := next(t, msgs, 5*time.Second)
	if r.err != nil || len(r.msg.Svids) != 1 || string(r.msg.Svids[0].X509Svid) != "chain-1" || string(r.msg.Svids[0].Bundle) != "bundle-1" ||
		len(r.msg.Crl) != 1 || string(r.msg.Crl[0]) != "crl-1" {
		t.Fatalf("first message: %v, %v", r.msg, r.err)
	}
	waitAsked(t, src, 1)

	// The same answer again: nothing is sent.
	src.push(src.update, nil)
	waitAsked(t, src, 1)
	// A new SVID: sent at once, with what the caller held passed back.
	src.push(badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("2")}, Bundle: []byte("bundle-1"), CRL: []byte("crl-1")}, nil)
	r = next(t, msgs, 5*time.Second)
	if r.err != nil || string(r.msg.Svids[0].X509SvidKey) != "key-2" {
		t.Fatalf("after a new SVID: %v, %v; want key-2 (an unchanged answer must not be sent)", r.msg, r.err)
	}
	waitAsked(t, src, 1)
	// Only the CRL changes: sent.
	src.push(badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("2")}, Bundle: []byte("bundle-1"), CRL: []byte("crl-2")}, nil)
	r = next(t, msgs, 5*time.Second)
	if r.err != nil || string(r.msg.Crl[0]) != "crl-2" || string(r.msg.Svids[0].X509SvidKey) != "key-2" {
		t.Fatalf("after a new CRL: %v, %v", r.msg, r.err)
	}
	waitAsked(t, src, 1)
	// Only the bundle changes: sent.
	src.push(badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("2")}, Bundle: []byte("bundle-2"), CRL: []byte("crl-2")}, nil)
	r = next(t, msgs, 5*time.Second)
	if r.err != nil || string(r.msg.Svids[0].Bundle) != "bundle-2" {
		t.Fatalf("after a new bundle: %v, %v", r.msg, r.err)
	}
	waitAsked(t, src, 1)

	src.mu.Lock()
	defer src.mu.Unlock()
	var serials []string
	for _, h := range src.held {
		if len(h) == 0 {
			serials = append(serials, "-")
			continue
		}
		serials = append(serials, h[0].Serial)
	}
	if got, want := strings.Join(serials, ","), "-,1,1,2,2"; got != want {
		t.Errorf("the source was told the caller held %s, want %s", got, want)
	}
	for _, c := range src.callers {
		if c.UID != uint32(os.Getuid()) || c.PID != int32(os.Getpid()) || c.Kinds&attest.KindUID == 0 || len(c.Selectors) == 0 {
			t.Errorf("the source was asked for caller %+v, want this process attested for unix:uid", c)
		}
	}
}

// TestFakeSourceRefreshAt: the handler asks again at RefreshAt, read on
// Config.Time, with no change signalled.
func TestFakeSourceRefreshAt(t *testing.T) {
	src := newFakeSource()
	src.update = badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("1")}, RefreshAt: time.Now().Add(50 * time.Millisecond)}
	api, _ := startFake(t, src, badgeworkload.Limits{})
	msgs := openX509(t, api)
	if r := next(t, msgs, 5*time.Second); r.err != nil {
		t.Fatal(r.err)
	}
	waitAsked(t, src, 2) // the first answer, then the one at RefreshAt
}

// TestFakeSourceAttestsKindsAsked: the handler attests the caller for new
// kinds, whether Kinds reports them or the source asks with a *KindsError,
// and asks again.
func TestFakeSourceAttestsKindsAsked(t *testing.T) {
	for _, reported := range []bool{true, false} {
		t.Run(fmt.Sprintf("reported=%v", reported), func(t *testing.T) {
			src := newFakeSource()
			src.update = badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("1")}}
			api, _ := startFake(t, src, badgeworkload.Limits{})
			msgs := openX509(t, api)
			if r := next(t, msgs, 5*time.Second); r.err != nil {
				t.Fatal(r.err)
			}
			waitAsked(t, src, 1)
			src.mu.Lock()
			if reported {
				src.kinds |= attest.KindGID // an entry with a new kind of selector
			} else {
				src.hidden |= attest.KindGID
			}
			src.mu.Unlock()
			src.push(badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("2")}}, nil)
			if r := next(t, msgs, 5*time.Second); r.err != nil || string(r.msg.Svids[0].X509SvidKey) != "key-2" {
				t.Fatalf("after new kinds: %v, %v", r.msg, r.err)
			}
			src.mu.Lock()
			defer src.mu.Unlock()
			last := src.callers[len(src.callers)-1]
			if last.Kinds&attest.KindGID == 0 {
				t.Errorf("the caller was not attested for unix:gid: kinds %v", last.Kinds)
			}
			gid := false
			for sel := range last.Selectors {
				gid = gid || sel.Type == "unix" && sel.Key == "gid"
			}
			if !gid {
				t.Errorf("no unix:gid selector after attesting for it: %v", last.Selectors)
			}
		})
	}
}

// TestFakeSourceRefusals: each refusal of the source reaches the caller as
// the right code and message, on every method.
func TestFakeSourceRefusals(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"not registered", badgeworkload.ErrNotRegistered, codes.PermissionDenied, "no registration entry matches the caller"},
		{"blocked", &badgeworkload.BlockedError{IDs: []string{"spiffe://example.org/a", "spiffe://example.org/b"}},
			codes.PermissionDenied, "matches only blocked IDs: spiffe://example.org/a, spiffe://example.org/b"},
		{"invalid", &badgeworkload.InvalidError{Reason: "audience", Err: errors.New("audience \"x\" is not acceptable")},
			codes.InvalidArgument, `audience "x" is not acceptable`},
		{"failure", errors.New("store is down"), codes.Unavailable, "store is down"},
		// An agent's call to its server cancelled with the caller's:
		// not a failure to log as one.
		{"cancelled", fmt.Errorf("signing: %w", status.Error(codes.Canceled, "badge server 127.0.0.1:8443: context canceled")),
			codes.Canceled, "context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource()
			src.err = tt.err
			api, _ := startFake(t, src, badgeworkload.Limits{})
			check := func(method string, err error) {
				t.Helper()
				if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.msg) {
					t.Errorf("%s: %v; want %s naming %q", method, err, tt.code, tt.msg)
				}
			}
			r := next(t, openX509(t, api), 5*time.Second)
			check("FetchX509SVID", r.err)
			_, err := api.FetchJWTSVID(withHeader(context.Background()), &workload.JWTSVIDRequest{Audience: []string{"a"}})
			check("FetchJWTSVID", err)
			if tt.code == codes.PermissionDenied {
				bs, err := api.FetchX509Bundles(withHeader(context.Background()), &workload.X509BundlesRequest{})
				if err == nil {
					_, err = bs.Recv()
				}
				check("FetchX509Bundles", err)
			}
		})
	}
}

// TestFakeSourceHeldBlocked: a stream whose source says it holds a blocked
// ID ends with PermissionDenied naming it.
func TestFakeSourceHeldBlocked(t *testing.T) {
	src := newFakeSource()
	src.update = badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("1")}}
	api, _ := startFake(t, src, badgeworkload.Limits{})
	msgs := openX509(t, api)
	if r := next(t, msgs, 5*time.Second); r.err != nil {
		t.Fatal(r.err)
	}
	src.push(badgeworkload.X509Update{}, &badgeworkload.BlockedError{IDs: []string{"spiffe://example.org/fake"}, Held: true})
	r := next(t, msgs, 5*time.Second)
	if status.Code(r.err) != codes.PermissionDenied || !strings.Contains(status.Convert(r.err).Message(), "spiffe://example.org/fake is blocked") {
		t.Fatalf("stream holding a blocked ID: %v, %v; want PermissionDenied", r.msg, r.err)
	}
}

// TestFakeSourceValidateWithoutEntry: ValidateJWTSVID serves a caller the
// source does not register, but not one that matches only blocked IDs.
func TestFakeSourceValidateWithoutEntry(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{nil, codes.OK},
		{badgeworkload.ErrNotRegistered, codes.OK},
		{&badgeworkload.BlockedError{IDs: []string{"spiffe://example.org/x"}}, codes.PermissionDenied},
	} {
		src := newFakeSource()
		src.claims = badgeworkload.JWTClaims{ID: spiffeid.RequireFromString("spiffe://example.org/peer"), Claims: map[string]any{"sub": "spiffe://example.org/peer"}}
		src.err = tc.err // Check refuses; ValidateJWT itself accepts
		api, _ := startFake(t, &checkOnly{src}, badgeworkload.Limits{})
		resp, err := api.ValidateJWTSVID(withHeader(context.Background()), &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "t"})
		if status.Code(err) != tc.code {
			t.Errorf("Check says %v: ValidateJWTSVID = %v, want %s", tc.err, err, tc.code)
		}
		if tc.code == codes.OK && (resp == nil || resp.SpiffeId != "spiffe://example.org/peer") {
			t.Errorf("Check says %v: ValidateJWTSVID = %v", tc.err, resp)
		}
	}
}

// checkOnly is a fakeSource whose error only Check returns.
type checkOnly struct{ *fakeSource }

func (c *checkOnly) ValidateJWT(context.Context, string, string) (badgeworkload.JWTClaims, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.claims, nil
}

// TestFakeSourceNothingAfterPeerChanged: a peer that changed while the
// source signed gets nothing, and one that changed while the stream waited
// gets nothing more; both end PermissionDenied.
func TestFakeSourceNothingAfterPeerChanged(t *testing.T) {
	t.Run("during signing", func(t *testing.T) {
		src := newFakeSource()
		src.update = badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("1")}}
		var att *changingAttestor
		src.signing = func() { att.changed.Store(true) }
		api, a := startFake(t, src, badgeworkload.Limits{})
		att = a
		r := next(t, openX509(t, api), 5*time.Second)
		if r.msg != nil || status.Code(r.err) != codes.PermissionDenied {
			t.Fatalf("peer changed while signing: %v, %v; want no message and PermissionDenied", r.msg, r.err)
		}
		_, err := api.FetchJWTSVID(withHeader(context.Background()), &workload.JWTSVIDRequest{Audience: []string{"a"}})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("FetchJWTSVID of a changed peer: %v, want PermissionDenied", err)
		}
	})
	t.Run("while waiting", func(t *testing.T) {
		src := newFakeSource()
		src.update = badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("1")}}
		api, att := startFake(t, src, badgeworkload.Limits{})
		msgs := openX509(t, api)
		if r := next(t, msgs, 5*time.Second); r.err != nil {
			t.Fatal(r.err)
		}
		waitAsked(t, src, 1)
		att.changed.Store(true)
		src.push(badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("2")}}, nil)
		r := next(t, msgs, 5*time.Second)
		if r.msg != nil || status.Code(r.err) != codes.PermissionDenied {
			t.Fatalf("peer changed while waiting: %v, %v; want no message and PermissionDenied", r.msg, r.err)
		}
		select {
		case <-src.asked:
			t.Error("the source was asked for a peer that changed")
		default:
		}
	})
}

// TestFakeSourceBudget: the handler's limits reach the source as its
// Budget, and a refusal by the budget is ResourceExhausted.
func TestFakeSourceBudget(t *testing.T) {
	src := newFakeSource()
	src.update = badgeworkload.X509Update{SVIDs: []badgeworkload.X509SVID{fakeSVID("1")}}
	src.budget = true
	api, _ := startFake(t, src, badgeworkload.Limits{SignRate: 0.001, SignBurst: 1, LimitRoot: true})
	if r := next(t, openX509(t, api), 5*time.Second); r.err != nil {
		t.Fatalf("within the burst: %v", r.err)
	}
	r := next(t, openX509(t, api), 5*time.Second)
	wantExhausted(t, r.err, "signing rate limit")
}
