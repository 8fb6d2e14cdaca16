package sdk

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// jwtKey is a JWT signing key of a test trust domain.
type jwtKey struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newJWTKey(t testing.TB, kid string) *jwtKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &jwtKey{kid: kid, priv: k}
}

// jwks returns the JWK Set of keys.
func jwks(t testing.TB, keys ...*jwtKey) []byte {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: "ES256", Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mint signs claims with k (ES256, kid and typ JWT in the header).
func (k *jwtKey) mint(t testing.TB, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, new(jose.SignerOptions).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claimsFor(id spiffeid.ID, aud []string, iat, exp time.Time) map[string]any {
	return map[string]any{"sub": id.String(), "aud": aud, "iat": iat.Unix(), "exp": exp.Unix()}
}

// fakeJWTAPI is the JWT half of a Workload API on a real Unix socket: it
// mints tokens for one SPIFFE ID with its key and streams the bundles the
// test pushes. A hand-made fake of the consumer-side interface; the real
// server lives elsewhere (and is tested with this SDK in cmd/badge).
type fakeJWTAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	path string
	srv  *grpc.Server
	id   spiffeid.ID
	ttl  time.Duration
	now  func() time.Time

	mu      sync.Mutex
	key     *jwtKey
	bundles map[string][]byte
	fail    error
	fetches int
	changed chan struct{}
}

func startFakeJWTAPI(t testing.TB, id spiffeid.ID, key *jwtKey, now func() time.Time) *fakeJWTAPI {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "w.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeJWTAPI{path: path, srv: grpc.NewServer(), id: id, ttl: 5 * time.Minute, now: now, key: key,
		bundles: map[string][]byte{id.TrustDomain().IDString(): jwks(t, key)}, changed: make(chan struct{})}
	workload.RegisterSpiffeWorkloadAPIServer(f.srv, f)
	done := make(chan struct{})
	go func() { defer close(done); f.srv.Serve(l) }()
	t.Cleanup(func() { f.srv.Stop(); <-done })
	return f
}

func header(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

func (f *fakeJWTAPI) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if err := header(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if f.fail != nil {
		return nil, f.fail
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience is required")
	}
	if req.SpiffeId != "" && req.SpiffeId != f.id.String() {
		return nil, status.Error(codes.PermissionDenied, "not entitled")
	}
	now := f.now()
	tok := f.key.mint(testingTB{}, claimsFor(f.id, req.Audience, now, now.Add(f.ttl)))
	return &workload.JWTSVIDResponse{Svids: []*workload.JWTSVID{{SpiffeId: f.id.String(), Svid: tok}}}, nil
}

// testingTB lets mint be called from the server goroutine, where failing
// the test is not possible; minting with a valid key does not fail.
type testingTB struct{ testing.TB }

func (testingTB) Helper()           {}
func (testingTB) Fatal(args ...any) { panic(args) }

func (f *fakeJWTAPI) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	if err := header(stream.Context()); err != nil {
		return err
	}
	var sent map[string][]byte
	for {
		f.mu.Lock()
		b, ch := f.bundles, f.changed
		f.mu.Unlock()
		if b != nil && !sameMap(b, sent) {
			if err := stream.Send(&workload.JWTBundlesResponse{Bundles: b}); err != nil {
				return err
			}
			sent = b
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func sameMap(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if string(b[k]) != string(v) {
			return false
		}
	}
	return true
}

// push makes bundles current and key the signing key.
func (f *fakeJWTAPI) push(key *jwtKey, bundles map[string][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.key, f.bundles = key, bundles
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeJWTAPI) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeJWTAPI) fetchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches
}

// fakeClock is an injected time that starts at the real now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newJWTSource(t testing.TB, f *fakeJWTAPI, opts ...SourceOption) *JWTSource {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := NewJWTSource(ctx, append([]SourceOption{WithAddress("unix://" + f.path)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestJWTSourceFetchCachesUntilHalfLife(t *testing.T) {
	// The fake mints with the real time (go-spiffe checks iat against
	// it); only the source's clock moves.
	clk := newFakeClock()
	f := startFakeJWTAPI(t, paymentID, newJWTKey(t, "k1"), time.Now)
	ctx := context.Background()

	t.Run("refresh at half life", func(t *testing.T) {
		src := newJWTSource(t, f, WithClock(clk.Now))
		first, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "orders"})
		if err != nil {
			t.Fatal(err)
		}
		if first.ID != paymentID || len(first.Audience) != 1 || first.Audience[0] != "orders" {
			t.Fatalf("got %s for %v", first.ID, first.Audience)
		}
		calls := f.fetchCount()
		again, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "orders"})
		if err != nil || again.Marshal() != first.Marshal() || f.fetchCount() != calls {
			t.Fatalf("second fetch: %v, %d calls to the API; want the cached token", err, f.fetchCount()-calls)
		}
		if other, _ := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "orders", ExtraAudiences: []string{"audit"}}); other.Marshal() == first.Marshal() {
			t.Errorf("another audience list got the cached token")
		}
		calls = f.fetchCount()
		half := refreshAt(first, first.Expiry.Add(-5*time.Minute))
		clk.Advance(half.Sub(clk.Now()) - time.Second)
		if t2, _ := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "orders"}); t2.Marshal() != first.Marshal() || f.fetchCount() != calls {
			t.Errorf("refetched before half the lifetime")
		}
		clk.Advance(2 * time.Second)
		renewed, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "orders"})
		if err != nil || renewed.Marshal() == first.Marshal() || f.fetchCount() != calls+1 {
			t.Fatalf("past half the lifetime: %v; want a fresh token", err)
		}
	})

	t.Run("the cached token outlives an unreachable API, not its expiry", func(t *testing.T) {
		clk := newFakeClock()
		src := newJWTSource(t, f, WithClock(clk.Now))
		cached, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "audit"})
		if err != nil {
			t.Fatal(err)
		}
		f.setFail(status.Error(codes.Unavailable, "down"))
		defer f.setFail(nil)
		clk.Advance(3 * time.Minute) // past half-life, before expiry
		got, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "audit"})
		if err != nil || got.Marshal() != cached.Marshal() {
			t.Fatalf("got %v; want the cached token", err)
		}
		clk.Advance(2*time.Minute + time.Second) // past expiry
		if _, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "audit"}); status.Code(errors.Unwrap(err)) != codes.Unavailable {
			t.Fatalf("after expiry: %v, want the API's error", err)
		}
	})
	t.Run("an audience is required", func(t *testing.T) {
		src := newJWTSource(t, f)
		if _, err := src.FetchJWTSVID(ctx, jwtsvid.Params{}); err == nil {
			t.Errorf("FetchJWTSVID without audience succeeded")
		}
	})
}

func TestJWTSourceValidate(t *testing.T) {
	key := newJWTKey(t, "k1")
	f := startFakeJWTAPI(t, paymentID, key, time.Now)
	src := newJWTSource(t, f)
	now := time.Now()
	aud := []string{"orders"}
	good := key.mint(t, claimsFor(paymentID, aud, now, now.Add(time.Minute)))
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"spiffe://example.org/admin","aud":["orders"],"exp":`+jsonInt(now.Add(time.Minute).Unix())+`}`)) + "." + parts[2]
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: make([]byte, 32)}, new(jose.SignerOptions).WithHeader("kid", "k1"))
	hs256, _ := jwt.Signed(hs).Claims(claimsFor(paymentID, aud, now, now.Add(time.Minute))).Serialize()

	for _, tc := range []struct {
		name     string
		token    string
		audience string
		want     TokenReason
	}{
		{"valid", good, "orders", 0},
		{"wrong audience", good, "billing", TokenAudience},
		{"expired", key.mint(t, claimsFor(paymentID, aud, now.Add(-10*time.Minute), now.Add(-5*time.Minute))), "orders", TokenExpired},
		{"tampered", tampered, "orders", TokenSignature},
		{"another key under the same kid", newJWTKey(t, "k1").mint(t, claimsFor(paymentID, aud, now, now.Add(time.Minute))), "orders", TokenSignature},
		{"unknown kid", newJWTKey(t, "k2").mint(t, claimsFor(paymentID, aud, now, now.Add(time.Minute))), "orders", TokenUnknownKey},
		{"alg none", noneHeader + "." + parts[1] + ".", "orders", TokenAlgorithm},
		{"alg HS256", hs256, "orders", TokenAlgorithm},
		{"other trust domain", key.mint(t, claimsFor(spiffeid.RequireFromString("spiffe://another.org/x"), aud, now, now.Add(time.Minute))), "orders", TokenUntrusted},
		{"not a JWT", "a.b", "orders", TokenMalformed},
		{"no sub", key.mint(t, map[string]any{"aud": aud, "exp": now.Add(time.Minute).Unix()}), "orders", TokenMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// go-spiffe's own verdict, on the same bundle, is the same.
			_, gsErr := jwtsvid.ParseAndValidate(tc.token, src, []string{tc.audience})
			for range 2 { // uncached, then cached
				got, err := src.ValidateJWTSVID(tc.token, tc.audience)
				if tc.want == 0 {
					if err != nil || got.ID != paymentID {
						t.Fatalf("refused: %v", err)
					}
					if gsErr != nil {
						t.Errorf("go-spiffe refuses what the SDK accepts: %v", gsErr)
					}
					continue
				}
				var te *TokenError
				if !errors.As(err, &te) || te.Reason != tc.want {
					t.Fatalf("got %v, want a TokenError %s", err, tc.want)
				}
				if gsErr == nil {
					t.Errorf("go-spiffe accepts what the SDK refuses (%s)", tc.want)
				}
			}
		})
	}

	t.Run("cache", func(t *testing.T) {
		clk := newFakeClock()
		src := newJWTSource(t, f, WithClock(clk.Now))
		tok := key.mint(t, claimsFor(paymentID, []string{"orders", "billing"}, clk.Now(), clk.Now().Add(time.Minute)))
		first, err := src.ValidateJWTSVID(tok, "orders")
		if err != nil {
			t.Fatal(err)
		}
		second, err := src.ValidateJWTSVID(tok, "billing")
		if err != nil || second != first {
			t.Fatalf("second validation: %v; want the cached result", err)
		}
		if _, err := src.ValidateJWTSVID(tok, "payments"); !isReason(err, TokenAudience) {
			t.Errorf("cached token, other audience: %v", err)
		}
		// go-spiffe allows a minute after exp; the SDK does not, cached or not.
		clk.Advance(time.Minute)
		if _, err := src.ValidateJWTSVID(tok, "orders"); !isReason(err, TokenExpired) {
			t.Errorf("cached token at exp: %v, want expired", err)
		}
	})

	t.Run("new keys drop cached validations", func(t *testing.T) {
		src := newJWTSource(t, f)
		if _, err := src.ValidateJWTSVID(good, "orders"); err != nil {
			t.Fatal(err)
		}
		next := newJWTKey(t, "k2")
		ch := src.Changed()
		f.push(next, map[string][]byte{td.IDString(): jwks(t, next)})
		waitFor(t, src.Changed, "the new bundle", func() bool {
			select {
			case <-ch:
				return true
			default:
				return false
			}
		})
		if _, err := src.ValidateJWTSVID(good, "orders"); !isReason(err, TokenUnknownKey) {
			t.Fatalf("token of a key no longer in the bundle: %v, want unknown key", err)
		}
		if _, err := src.ValidateJWTSVID(next.mint(t, claimsFor(paymentID, aud, now, now.Add(time.Minute))), "orders"); err != nil {
			t.Errorf("token of the new key: %v", err)
		}
	})
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

func isReason(err error, r TokenReason) bool {
	var te *TokenError
	return errors.As(err, &te) && te.Reason == r
}

func TestJWTSourceClose(t *testing.T) {
	f := startFakeJWTAPI(t, paymentID, newJWTKey(t, "k1"), time.Now)
	src := newJWTSource(t, f)
	src.Close()
	src.Close()
	if _, err := src.FetchJWTSVID(context.Background(), jwtsvid.Params{Audience: "a"}); !errors.Is(err, ErrClosed) {
		t.Errorf("FetchJWTSVID after Close: %v", err)
	}
	if _, err := src.GetJWTBundleForTrustDomain(td); !errors.Is(err, ErrClosed) {
		t.Errorf("GetJWTBundleForTrustDomain after Close: %v", err)
	}
}

func TestNewJWTSourceWaitsForBundles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := NewJWTSource(ctx, WithAddress("unix://"+filepath.Join(shortTempDir(t), "none.sock")))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no server: %v, want the context's error", err)
	}
}

func TestRequireJWTAndTransport(t *testing.T) {
	key := newJWTKey(t, "k1")
	f := startFakeJWTAPI(t, paymentID, key, time.Now)
	src := newJWTSource(t, f)
	var refusals []TokenReason
	var mu sync.Mutex
	h := RequireJWT(src, "orders", AuthorizeOneOf(paymentID), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		svid, ok := JWTSVIDFromRequest(r)
		if !ok {
			t.Errorf("handler: no JWT-SVID in the request")
		}
		w.Write([]byte(svid.ID.String()))
	}), OnJWTRefused(func(_ *http.Request, te *TokenError) {
		mu.Lock()
		refusals = append(refusals, te.Reason)
		mu.Unlock()
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()

	client := &http.Client{Transport: NewJWTTransport(src, "orders", nil)}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 128)
	n, _ := resp.Body.Read(body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body[:n]) != paymentID.String() {
		t.Fatalf("with a token: %s %q", resp.Status, body[:n])
	}

	now := time.Now()
	for _, tc := range []struct {
		name      string
		authz     string
		code      int
		challenge string
	}{
		{"no token", "", 401, `Bearer realm="badge"`},
		{"basic", "Basic YTpi", 401, `Bearer realm="badge"`},
		{"invalid token", "Bearer x.y.z", 401, `Bearer realm="badge", error="invalid_token"`},
		{"wrong audience", "Bearer " + key.mint(t, claimsFor(paymentID, []string{"billing"}, now, now.Add(time.Minute))), 401, `Bearer realm="badge", error="invalid_token"`},
		{"not authorized", "Bearer " + key.mint(t, claimsFor(ordersID, []string{"orders"}, now, now.Add(time.Minute))), 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			if tc.authz != "" {
				req.Header.Set("Authorization", tc.authz)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code || resp.Header.Get("WWW-Authenticate") != tc.challenge {
				t.Errorf("got %s, WWW-Authenticate %q; want %d, %q", resp.Status, resp.Header.Get("WWW-Authenticate"), tc.code, tc.challenge)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	want := []TokenReason{TokenMissing, TokenMissing, TokenMalformed, TokenAudience, TokenNotAuthorized}
	if len(refusals) != len(want) {
		t.Fatalf("refusals %v, want %v", refusals, want)
	}
	for i := range want {
		if refusals[i] != want[i] {
			t.Errorf("refusal %d: %s, want %s", i, refusals[i], want[i])
		}
	}
}

func TestJWTTransportFetchError(t *testing.T) {
	f := startFakeJWTAPI(t, paymentID, newJWTKey(t, "k1"), time.Now)
	src := newJWTSource(t, f)
	f.setFail(status.Error(codes.PermissionDenied, "no"))
	client := &http.Client{Transport: NewJWTTransport(src, "orders", nil)}
	if _, err := client.Get("http://127.0.0.1:1/"); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("got %v, want the Workload API's error", err)
	}
}

var _ crypto.Signer = (*ecdsa.PrivateKey)(nil)
