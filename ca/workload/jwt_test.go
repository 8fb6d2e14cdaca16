package workload_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca"
	badgeworkload "github.com/badge-dev/badge/ca/workload"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// client returns go-spiffe's Workload API client on the fixture's socket.
func (f *fixture) client(t *testing.T) *workloadapi.Client {
	t.Helper()
	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr("unix://"+f.sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFetchJWTSVIDValidatesWithGoSpiffe(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/web", mySelector())
	c := f.client(t)
	ctx := timeout(t)

	svid, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "orders", ExtraAudiences: []string{"billing"}})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	bundles, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatalf("FetchJWTBundles: %v", err)
	}
	if bundles.Len() != 1 || !bundles.Has(td) {
		t.Fatalf("JWT bundles for %v, want only %s", bundles.Bundles(), td)
	}
	for _, aud := range []string{"orders", "billing"} {
		got, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{aud})
		if err != nil {
			t.Fatalf("jwtsvid.ParseAndValidate for %s: %v", aud, err)
		}
		if got.ID.String() != "spiffe://example.org/web" || !slices.Equal(got.Audience, []string{"orders", "billing"}) {
			t.Errorf("validated SVID %s for %v", got.ID, got.Audience)
		}
		if left := time.Until(got.Expiry); left > ca.DefaultJWTTTL || left < ca.DefaultJWTTTL-10*time.Second {
			t.Errorf("expires in %s, want about the JWT TTL %s", left, ca.DefaultJWTTTL)
		}
		if _, ok := got.Claims["iat"]; !ok {
			t.Errorf("no iat claim: %v", got.Claims)
		}
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{"payments"}); err == nil {
		t.Errorf("ParseAndValidate accepted an audience not in the token")
	}

	// The daemon validates it too, for the right audience only.
	v, err := c.ValidateJWTSVID(ctx, svid.Marshal(), "orders")
	if err != nil {
		t.Fatalf("ValidateJWTSVID(orders): %v", err)
	}
	if v.ID != svid.ID {
		t.Errorf("ValidateJWTSVID returned %s, want %s", v.ID, svid.ID)
	}
	resp, err := f.api.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Svid: svid.Marshal(), Audience: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SpiffeId != "spiffe://example.org/web" || resp.Claims.Fields["sub"].GetStringValue() != resp.SpiffeId || resp.Claims.Fields["exp"].GetNumberValue() == 0 {
		t.Errorf("ValidateJWTSVID response %v", resp)
	}
	_, err = c.ValidateJWTSVID(ctx, svid.Marshal(), "payments")
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ValidateJWTSVID(payments) = %v, want InvalidArgument", err)
	}
	t.Logf("refusal: %v", err)
}

func TestFetchJWTSVIDRequests(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/first", mySelector())
	f.create(t, "spiffe://example.org/second", mySelector())
	ctx := withHeader(timeout(t))

	t.Run("every identity, the default first", func(t *testing.T) {
		resp, err := f.api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"orders"}})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range resp.Svids {
			ids = append(ids, s.SpiffeId)
			parsed, err := jwtsvid.ParseInsecure(s.Svid, []string{"orders"})
			if err != nil || parsed.ID.String() != s.SpiffeId {
				t.Errorf("token of %s: %v (sub %v)", s.SpiffeId, err, parsed)
			}
		}
		if !slices.Equal(ids, []string{"spiffe://example.org/first", "spiffe://example.org/second"}) {
			t.Errorf("got %v", ids)
		}
	})
	t.Run("one requested identity", func(t *testing.T) {
		resp, err := f.api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"orders"}, SpiffeId: "spiffe://example.org/second"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Svids) != 1 || resp.Svids[0].SpiffeId != "spiffe://example.org/second" {
			t.Errorf("got %v", resp.Svids)
		}
	})
	for _, tc := range []struct {
		name string
		req  *workload.JWTSVIDRequest
		want codes.Code
	}{
		{"no audience", &workload.JWTSVIDRequest{}, codes.InvalidArgument},
		{"empty audience", &workload.JWTSVIDRequest{Audience: []string{""}}, codes.InvalidArgument},
		{"bad spiffe_id", &workload.JWTSVIDRequest{Audience: []string{"a"}, SpiffeId: "web"}, codes.InvalidArgument},
		{"identity not entitled to", &workload.JWTSVIDRequest{Audience: []string{"a"}, SpiffeId: "spiffe://example.org/admin"}, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.api.FetchJWTSVID(ctx, tc.req); status.Code(err) != tc.want {
				t.Errorf("FetchJWTSVID(%v) = %v, want %s", tc.req, err, tc.want)
			}
		})
	}
	t.Run("no header", func(t *testing.T) {
		_, err := f.api.FetchJWTSVID(timeout(t), &workload.JWTSVIDRequest{Audience: []string{"a"}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("got %v, want InvalidArgument", err)
		}
		_, err = f.api.ValidateJWTSVID(timeout(t), &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "x.y.z"})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("ValidateJWTSVID got %v, want InvalidArgument", err)
		}
	})
	t.Run("validate without svid or audience", func(t *testing.T) {
		for _, req := range []*workload.ValidateJWTSVIDRequest{{Audience: "a"}, {Svid: "x.y.z"}} {
			if _, err := f.api.ValidateJWTSVID(ctx, req); status.Code(err) != codes.InvalidArgument {
				t.Errorf("ValidateJWTSVID(%v) = %v, want InvalidArgument", req, err)
			}
		}
	})
}

func TestJWTWithoutEntry(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/other", "unix:uid:4242424")
	ctx := withHeader(timeout(t))
	if _, err := f.api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVID = %v, want PermissionDenied", err)
	}
	// Validation needs no identity of the caller's own (as in SPIRE): the
	// malformed token is refused for what it is.
	if _, err := f.api.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "x.y.z"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID = %v, want InvalidArgument", err)
	}
	stream, err := f.api.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTBundles = %v, want PermissionDenied", err)
	}
}

func TestJWTRevokedID(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/web", mySelector())
	f.create(t, "spiffe://example.org/validator", mySelector())
	c := f.client(t)
	ctx := timeout(t)
	old, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "orders", Subject: spiffeid.RequireFromString("spiffe://example.org/web")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.auth.RevokeID(ctx, ca.RevokeRequest{SPIFFEID: "spiffe://example.org/web", Block: true}); err != nil {
		t.Fatal(err)
	}
	_, err = c.ValidateJWTSVID(ctx, old.Marshal(), "orders")
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("token of a revoked ID: %v, want InvalidArgument (revoked)", err)
	}
	t.Logf("refusal: %v", err)
	// The blocked identity gets no token; the caller's other one does.
	resp, err := f.api.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{"orders"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Svids) != 1 || resp.Svids[0].SpiffeId != "spiffe://example.org/validator" {
		t.Errorf("after the block got %v, want only the validator's token", resp.Svids)
	}
	_, err = f.api.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{"orders"}, SpiffeId: "spiffe://example.org/web"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("asking for the blocked ID: %v, want PermissionDenied", err)
	}
}

func TestFetchJWTBundlesStream(t *testing.T) {
	f := start(t, nil)
	id := f.create(t, "spiffe://example.org/web", mySelector())
	stream, err := f.api.FetchJWTBundles(withHeader(timeout(t)), &workload.JWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ch := recvLoop[workload.JWTBundlesResponse](stream)
	first := next(t, ch, 10*time.Second)
	if first.err != nil {
		t.Fatal(first.err)
	}
	raw, ok := first.msg.Bundles[td.IDString()]
	if !ok || len(first.msg.Bundles) != 1 {
		t.Fatalf("bundles keyed %v, want %q", first.msg.Bundles, td.IDString())
	}
	b, err := jwtbundle.Parse(td, raw)
	if err != nil || len(b.JWTAuthorities()) != 1 {
		t.Fatalf("JWKS %s: %v", raw, err)
	}
	// Another entry changes the snapshot but not the keys: nothing is
	// sent. Deleting the caller's entry ends the stream.
	f.create(t, "spiffe://example.org/other", "unix:uid:4242424")
	if err := f.auth.DeleteEntry(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	r := next(t, ch, 10*time.Second)
	if status.Code(r.err) != codes.PermissionDenied {
		t.Fatalf("after the entry was deleted: %v %v, want the stream to end with PermissionDenied", r.msg, r.err)
	}
}

func TestJWTUnimplementedWithoutIssuer(t *testing.T) {
	f := start(t, nil)
	f.create(t, "spiffe://example.org/web", mySelector())
	dir, err := os.MkdirTemp("", "badge-wl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := badgeworkload.Listen(filepath.Join(dir, "w.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := badgeworkload.New(badgeworkload.Config{Source: f.auth.WorkloadSource(), Attestor: attest.New(attest.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	c, err := workloadapi.New(context.Background(), workloadapi.WithAddr("unix://"+filepath.Join(dir, "w.sock")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.FetchJWTSVID(timeout(t), jwtsvid.Params{Audience: "a"}); status.Code(err) != codes.Unimplemented {
		t.Errorf("FetchJWTSVID without a JWT issuer: %v, want Unimplemented", err)
	}
}

// BenchmarkFetchJWTSVID is one FetchJWTSVID call on an open connection:
// attestation, matching and (cached) signing, with client and server in
// this process. cached=false signs every token (a new audience per call).
func BenchmarkFetchJWTSVID(b *testing.B) {
	for _, cached := range []bool{true, false} {
		name := "cached=true"
		if !cached {
			name = "cached=false"
		}
		b.Run(name, func(b *testing.B) {
			f := start(b, nil)
			f.create(b, "spiffe://example.org/bench", mySelector())
			ctx := withHeader(context.Background())
			aud := []string{"orders"}
			b.ReportAllocs()
			defer measureCPU(b)()
			i := 0
			for b.Loop() {
				if !cached {
					i++
					aud = []string{"orders", string(rune('a' + i%20000))}
				}
				resp, err := f.api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: aud})
				if err != nil || len(resp.Svids) != 1 {
					b.Fatalf("FetchJWTSVID: %v", err)
				}
			}
		})
	}
}
