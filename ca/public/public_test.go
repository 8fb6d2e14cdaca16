package public

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/testclock"
	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/bbolt"
)

// fixture is a real authority on a real bbolt store, and the public
// listener serving HTTPS on 127.0.0.1.
type fixture struct {
	auth  *ca.Authority
	srv   *Server
	url   string
	roots *x509.CertPool
	clock *testclock.Clock
}

func start(t *testing.T, issuer string, mod func(*Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	store, err := bbolt.Open(filepath.Join(dir, "badge.db"), &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	auth, err := ca.New(context.Background(), ca.Config{Store: store, KeyDir: filepath.Join(dir, "keys"), JWTIssuer: issuer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auth.Close() })
	clk := testclock.New(time.Now())
	cfg := Config{Authority: auth, Clients: auth, Hosts: []string{"127.0.0.1", "localhost"}, Time: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Shutdown", err)
		}
	})
	roots := x509.NewCertPool()
	for _, c := range auth.Snapshot().Bundle().X509Authorities() {
		roots.AddCert(c)
	}
	return &fixture{auth: auth, srv: srv, url: "https://" + l.Addr().String(), roots: roots, clock: clk}
}

// client returns an HTTPS client that trusts the bundle and presents cert
// (nil: none).
func (f *fixture) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: f.roots, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

// clientFrom returns an HTTPS client, like client(nil), whose connections
// come from the loopback address ip (127.0.0.2, ...): a distinct source
// address for the listener's limits.
func (f *fixture) clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: f.roots, ServerName: "127.0.0.1"},
		DialContext:     d.DialContext,
	}, Timeout: 30 * time.Second}
}

// svid issues an X.509-SVID for id (registering an entry for it the first
// time) as a TLS certificate.
func (f *fixture) svid(t *testing.T, id string) *tls.Certificate {
	t.Helper()
	var e *ca.Entry
	for _, x := range f.auth.Snapshot().Entries() {
		if x.ID.String() == id {
			e = x
		}
	}
	if e == nil {
		rec, err := f.auth.CreateEntry(context.Background(), ca.EntryRequest{SPIFFEID: id, Selectors: []string{"unix:uid:4242"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range f.auth.Snapshot().Entries() {
			if x.Record.ID == rec.ID {
				e = x
			}
		}
	}
	snap := f.auth.Snapshot()
	s, err := f.auth.SignX509SVID(context.Background(), snap, e)
	if err != nil {
		t.Fatal(err)
	}
	return tlsCert(t, s.CertChainDER, s.KeyDER)
}

func tlsCert(t *testing.T, chainDER, keyDER []byte) *tls.Certificate {
	t.Helper()
	chain, err := x509.ParseCertificates(chainDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		t.Fatal(err)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func postForm(t *testing.T, c *http.Client, u string, form url.Values, basic [2]string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic[0] != "" {
		req.SetBasicAuth(url.QueryEscape(basic[0]), url.QueryEscape(basic[1]))
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("POST %s: %s: body %q is not JSON", u, resp.Status, body)
	}
	return resp, out
}

func TestHealthAndServerCertificate(t *testing.T) {
	f := start(t, "", nil)
	resp, body := get(t, f.client(nil), f.url+"/healthz")
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("/healthz: %s %q", resp.Status, body)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/badge/server" {
		t.Errorf("server certificate URIs %v, want the server's SPIFFE ID", leaf.URIs)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d > ca.DefaultSVIDTTL+ca.Backdate {
		t.Errorf("server certificate lives %s, longer than an SVID", d)
	}
	if resp, _ := get(t, f.client(nil), f.url+"/nothing"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/nothing: %s", resp.Status)
	}
	// Plain HTTP on the TLS port gets nowhere.
	plain, err := http.Get("http://" + strings.TrimPrefix(f.url, "https://") + "/healthz")
	if err == nil {
		if plain.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP answered 200")
		}
		plain.Body.Close()
	}
}

func TestDiscoveryAndJWKS(t *testing.T) {
	const iss = "https://badge.example.org"
	f := start(t, iss, nil)
	c := f.client(nil)
	resp, body := get(t, c, f.url+"/.well-known/openid-configuration")
	if resp.StatusCode != 200 {
		t.Fatalf("discovery: %s %s", resp.Status, body)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"issuer":                 iss,
		"jwks_uri":               iss + "/.well-known/jwks.json",
		"token_endpoint":         iss + "/oauth2/token",
		"introspection_endpoint": iss + "/introspect",
	} {
		if doc[k] != want {
			t.Errorf("%s = %v, want %v", k, doc[k], want)
		}
	}
	if algs, _ := doc["id_token_signing_alg_values_supported"].([]any); len(algs) != 1 || algs[0] != "ES256" {
		t.Errorf("signing algorithms %v", doc["id_token_signing_alg_values_supported"])
	}

	// A generic JOSE library verifies a badge token against the JWKS
	// served over HTTPS; the issuer matches the discovery document.
	resp, body = get(t, c, f.url+"/.well-known/jwks.json")
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age") {
		t.Fatalf("jwks: %s %v", resp.Status, resp.Header)
	}
	var set gojose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	tok := signFor(t, f, "spiffe://example.org/web", "gateway")
	parsed, err := jwt.ParseSigned(tok, []gojose.SignatureAlgorithm{gojose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(parsed.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("JWKS has %d keys with the token's kid %q", len(keys), parsed.Headers[0].KeyID)
	}
	var claims jwt.Claims
	if err := parsed.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("go-jose verification against the served JWKS: %v", err)
	}
	if err := claims.Validate(jwt.Expected{Issuer: iss, AnyAudience: jwt.Audience{"gateway"}, Time: time.Now()}); err != nil {
		t.Errorf("claims: %v", err)
	}
	b, err := jwtbundle.Parse(spiffeid.RequireTrustDomainFromString("example.org"), body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, b, []string{"gateway"}); err != nil {
		t.Errorf("go-spiffe against the served JWKS: %v", err)
	}

	t.Run("no issuer", func(t *testing.T) {
		f := start(t, "", nil)
		resp, body := get(t, f.client(nil), f.url+"/.well-known/openid-configuration")
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "--jwt-issuer") {
			t.Errorf("discovery without an issuer: %s %s", resp.Status, body)
		}
		if resp, _ := get(t, f.client(nil), f.url+"/.well-known/jwks.json"); resp.StatusCode != 200 {
			t.Errorf("the JWKS is served without an issuer too: %s", resp.Status)
		}
	})
}

// signFor registers id and returns a token of it for the audience.
func signFor(t *testing.T, f *fixture, id, aud string) string {
	t.Helper()
	rec, err := f.auth.CreateEntry(context.Background(), ca.EntryRequest{SPIFFEID: id, Selectors: []string{"unix:uid:4243"}})
	if err != nil && !strings.Contains(err.Error(), "already") {
		t.Fatal(err)
	}
	snap := f.auth.Snapshot()
	for _, e := range snap.Entries() {
		if e.Record.ID == rec.ID {
			tok, err := f.auth.SignJWTSVID(context.Background(), snap, e, []string{aud})
			if err != nil {
				t.Fatal(err)
			}
			return tok.Token
		}
	}
	t.Fatalf("entry %s not found", rec.ID)
	return ""
}

func TestIntrospection(t *testing.T) {
	f := start(t, "", nil)
	tok := signFor(t, f, "spiffe://example.org/web", "orders")
	caller := f.svid(t, "spiffe://example.org/gateway")
	form := url.Values{"token": {tok}}

	t.Run("no client certificate", func(t *testing.T) {
		resp, out := postForm(t, f.client(nil), f.url+"/introspect", form, [2]string{})
		if resp.StatusCode != http.StatusUnauthorized || out["error"] != "invalid_client" {
			t.Fatalf("got %s %v, want 401 invalid_client", resp.Status, out)
		}
		if _, leaked := out["active"]; leaked {
			t.Errorf("the refusal says whether the token is active")
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		_, err := f.client(selfSigned(t, "spiffe://example.org/gateway")).Get(f.url + "/healthz")
		if err == nil {
			t.Fatalf("handshake with a foreign certificate succeeded")
		}
	})
	c := f.client(caller)
	t.Run("active", func(t *testing.T) {
		resp, out := postForm(t, c, f.url+"/introspect", form, [2]string{})
		if resp.StatusCode != 200 || out["active"] != true || out["sub"] != "spiffe://example.org/web" || out["token_type"] != "Bearer" {
			t.Fatalf("got %s %v", resp.Status, out)
		}
		if aud, _ := out["aud"].([]any); len(aud) != 1 || aud[0] != "orders" {
			t.Errorf("aud = %v", out["aud"])
		}
		exp, _ := out["exp"].(float64)
		iat, _ := out["iat"].(float64)
		if time.Duration(exp-iat)*time.Second != ca.DefaultJWTTTL {
			t.Errorf("exp %v iat %v", exp, iat)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
		}
	})
	parts := strings.Split(tok, ".")
	for name, bad := range map[string]string{
		"tampered": parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"spiffe://example.org/admin","aud":"orders","exp":9999999999}`)) + "." + parts[2],
		"garbage":  "abc",
	} {
		t.Run(name, func(t *testing.T) {
			resp, out := postForm(t, c, f.url+"/introspect", url.Values{"token": {bad}}, [2]string{})
			if resp.StatusCode != 200 || out["active"] != false || len(out) != 1 {
				t.Fatalf("got %s %v, want exactly {active: false}", resp.Status, out)
			}
		})
	}
	t.Run("no token", func(t *testing.T) {
		resp, out := postForm(t, c, f.url+"/introspect", url.Values{}, [2]string{})
		if resp.StatusCode != http.StatusBadRequest || out["error"] != "invalid_request" {
			t.Fatalf("got %s %v", resp.Status, out)
		}
	})
	t.Run("revoked caller on an open connection", func(t *testing.T) {
		if _, err := f.auth.RevokeID(context.Background(), ca.RevokeRequest{SPIFFEID: "spiffe://example.org/gateway"}); err != nil {
			t.Fatal(err)
		}
		resp, out := postForm(t, c, f.url+"/introspect", form, [2]string{})
		if resp.StatusCode != http.StatusUnauthorized || out["error"] != "invalid_client" {
			t.Fatalf("got %s %v, want 401", resp.Status, out)
		}
	})
	t.Run("fresh certificate of the revoked caller", func(t *testing.T) {
		// Issued right after the revocation, its NotBefore is backdated
		// to before it: only its serial decides, and it is not revoked.
		fresh := f.svid(t, "spiffe://example.org/gateway")
		if !fresh.Leaf.NotBefore.Before(time.Now().Add(-10 * time.Second)) {
			t.Fatalf("setup: NotBefore %s is not backdated", fresh.Leaf.NotBefore)
		}
		resp, out := postForm(t, f.client(fresh), f.url+"/introspect", form, [2]string{})
		if resp.StatusCode != 200 || out["active"] != true {
			t.Fatalf("got %s %v, want the token introspected", resp.Status, out)
		}
	})
}

// selfSigned returns a certificate for id that no badge CA signed.
func selfSigned(t *testing.T, id string) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: crypto.Signer(key)}
}

func TestClientCredentials(t *testing.T) {
	f := start(t, "https://badge.example.org", nil)
	const id = "spiffe://example.org/batch"
	_, secret, err := f.auth.CreateClient(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	c := f.client(nil)
	u := f.url + "/oauth2/token"
	grant := func(aud ...string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "audience": aud}
	}

	check := func(t *testing.T, resp *http.Response, out map[string]any, aud string) {
		t.Helper()
		if resp.StatusCode != 200 || out["token_type"] != "Bearer" {
			t.Fatalf("got %s %v", resp.Status, out)
		}
		if in, _ := out["expires_in"].(float64); in <= 0 || in > ca.DefaultJWTTTL.Seconds() {
			t.Errorf("expires_in %v", out["expires_in"])
		}
		if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Pragma") != "no-cache" {
			t.Errorf("headers %v", resp.Header)
		}
		tok, _ := out["access_token"].(string)
		claims, err := f.auth.ValidateJWTSVID(f.auth.Snapshot(), tok, aud)
		if err != nil || claims.ID.String() != id || claims.Issuer != "https://badge.example.org" {
			t.Errorf("issued token: %+v, %v", claims, err)
		}
	}
	t.Run("client_secret_basic", func(t *testing.T) {
		resp, out := postForm(t, c, u, grant("queue"), [2]string{id, secret})
		check(t, resp, out, "queue")
	})
	t.Run("client_secret_post", func(t *testing.T) {
		form := grant("queue", "audit")
		form.Set("client_id", id)
		form.Set("client_secret", secret)
		resp, out := postForm(t, c, u, form, [2]string{})
		check(t, resp, out, "audit")
	})
	for name, tc := range map[string]struct {
		form  url.Values
		basic [2]string
		code  int
		err   string
	}{
		"no audience":      {grant(), [2]string{id, secret}, 400, "invalid_request"},
		"empty audience":   {grant(""), [2]string{id, secret}, 400, "invalid_target"},
		"other grant type": {url.Values{"grant_type": {"password"}, "audience": {"q"}}, [2]string{id, secret}, 400, "unsupported_grant_type"},
		"no grant type":    {url.Values{"audience": {"q"}}, [2]string{id, secret}, 400, "invalid_request"},
		"no credentials":   {grant("q"), [2]string{}, 401, "invalid_client"},
		"two methods":      {url.Values{"grant_type": {"client_credentials"}, "audience": {"q"}, "client_secret": {secret}}, [2]string{id, secret}, 400, "invalid_request"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, out := postForm(t, c, u, tc.form, tc.basic)
			if resp.StatusCode != tc.code || out["error"] != tc.err {
				t.Fatalf("got %s %v, want %d %s", resp.Status, out, tc.code, tc.err)
			}
			if tc.code == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("401 without WWW-Authenticate: %v", resp.Header)
			}
		})
	}

	t.Run("repeated failures are slowed", func(t *testing.T) {
		wrong := [2]string{id, "not-the-secret"}
		var delays []int
		for range 5 {
			resp, out := postForm(t, c, u, grant("queue"), wrong)
			if resp.StatusCode != http.StatusUnauthorized || out["error"] != "invalid_client" || resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("wrong secret: %s %v", resp.Status, out)
			}
			d, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil {
				t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
			}
			delays = append(delays, d)
			// Within the delay, even the right secret is not checked.
			resp, out = postForm(t, c, u, grant("queue"), [2]string{id, secret})
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != strconv.Itoa(d) {
				t.Fatalf("attempt during the delay: %s %v %v", resp.Status, out, resp.Header)
			}
			f.clock.Advance(time.Duration(d) * time.Second)
		}
		for i := 1; i < len(delays); i++ {
			if delays[i] != 2*delays[i-1] {
				t.Fatalf("delays %v: want each twice the previous", delays)
			}
		}
		if delays[0] != 1 {
			t.Errorf("first delay %ds, want 1s", delays[0])
		}
		// The right secret after the delay works, and resets the count.
		resp, out := postForm(t, c, u, grant("queue"), [2]string{id, secret})
		check(t, resp, out, "queue")
		resp, _ = postForm(t, c, u, grant("queue"), wrong)
		if resp.Header.Get("Retry-After") != "1" {
			t.Errorf("after a success the delay starts over: Retry-After %q", resp.Header.Get("Retry-After"))
		}
		f.clock.Advance(time.Second)
	})
	t.Run("unknown client", func(t *testing.T) {
		resp, out := postForm(t, c, u, grant("queue"), [2]string{"spiffe://example.org/nobody", secret})
		if resp.StatusCode != http.StatusUnauthorized || out["error"] != "invalid_client" || out["error_description"] != "unknown client or wrong secret" {
			t.Fatalf("got %s %v", resp.Status, out)
		}
		// This address has failed often enough to wait itself.
		d, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		f.clock.Advance(time.Duration(d) * time.Second)
	})
	t.Run("blocked identity", func(t *testing.T) {
		if _, err := f.auth.RevokeID(context.Background(), ca.RevokeRequest{SPIFFEID: id, Block: true}); err != nil {
			t.Fatal(err)
		}
		resp, out := postForm(t, c, u, grant("queue"), [2]string{id, secret})
		if resp.StatusCode != http.StatusBadRequest || out["error"] != "unauthorized_client" {
			t.Fatalf("got %s %v", resp.Status, out)
		}
	})
}

// TestSecretChecksAreCappedOverall: addresses that have failed share one
// budget of secret checks; an address without failures does not draw on
// it, so many guessing addresses cannot starve a client.
func TestSecretChecksAreCappedOverall(t *testing.T) {
	f := start(t, "", func(c *Config) { c.SecretChecksPerSecond, c.SecretCheckBurst = 1, 2 })
	const id = "spiffe://example.org/batch"
	_, secret, err := f.auth.CreateClient(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	u := f.url + "/oauth2/token"
	form := url.Values{"grant_type": {"client_credentials"}, "audience": {"q"}}
	guess := func(ip string, n int) int {
		resp, _ := postForm(t, f.clientFrom(ip), u, form, [2]string{"spiffe://example.org/guess" + strconv.Itoa(n), "x"})
		return resp.StatusCode
	}
	// A first failure from each of three addresses: free of the budget.
	for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		if code := guess(ip, i); code != 401 {
			t.Fatalf("first guess from %s: %d, want 401", ip, code)
		}
	}
	// Now suspect, they share a budget of two.
	var codes []int
	for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		codes = append(codes, guess(ip, 10+i))
	}
	if !slices.Equal(codes, []int{401, 401, http.StatusTooManyRequests}) {
		t.Fatalf("codes %v: want two checks, then 429", codes)
	}
	// A clean address is checked, and succeeds, with the budget spent.
	resp, out := postForm(t, f.clientFrom("127.0.0.5"), u, form, [2]string{id, secret})
	if resp.StatusCode != 200 {
		t.Fatalf("client from a clean address while the budget is spent: %s %v", resp.Status, out)
	}
	f.clock.Advance(time.Second)
	if code := guess("127.0.0.4", 20); code != 401 {
		t.Errorf("after a second: %d, want a check again", code)
	}
}

// countingClients counts the secret checks made through the real
// authority.
type countingClients struct {
	Clients
	mu     sync.Mutex
	checks int
}

func (c *countingClients) AuthenticateClient(ctx context.Context, id, secret string) (storage.Client, error) {
	c.mu.Lock()
	c.checks++
	c.mu.Unlock()
	return c.Clients.AuthenticateClient(ctx, id, secret)
}

func (c *countingClients) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks
}

// TestTokenEndpointGuessersCannotLockOut is the attack on the token
// endpoint: a guesser at one address, trying the real client's ID or
// random ones, neither locks out nor starves the client at another
// address; its own checks stay bounded; and the audit trail gets a count,
// not a line per attempt.
func TestTokenEndpointGuessersCannotLockOut(t *testing.T) {
	var logs syncBuffer
	var counted *countingClients
	f := start(t, "", func(c *Config) {
		counted = &countingClients{Clients: c.Clients}
		c.Clients = counted
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	const id = "spiffe://example.org/batch"
	_, secret, err := f.auth.CreateClient(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	u := f.url + "/oauth2/token"
	form := url.Values{"grant_type": {"client_credentials"}, "audience": {"q"}}
	attacker, legit := f.clientFrom("127.0.0.2"), f.clientFrom("127.0.0.3")
	ok := 0
	for round := range 15 {
		// Wrong secrets for the real client, and random client IDs.
		for i := range 4 {
			resp, _ := postForm(t, attacker, u, form, [2]string{id, "guess" + strconv.Itoa(i)})
			if resp.StatusCode == 200 {
				t.Fatal("a wrong secret was accepted")
			}
			resp, _ = postForm(t, attacker, u, form, [2]string{"spiffe://example.org/r" + strconv.Itoa(round*10+i), "x"})
			if resp.StatusCode == 200 {
				t.Fatal("a random client was accepted")
			}
		}
		resp, out := postForm(t, legit, u, form, [2]string{id, secret})
		if resp.StatusCode == 200 {
			ok++
		} else {
			t.Logf("round %d: the client got %s %v", round, resp.Status, out)
		}
		f.clock.Advance(5 * time.Second)
	}
	if ok != 15 {
		t.Errorf("the client succeeded %d/15 times under attack from another address", ok)
	}
	// The attacker made 120 attempts in 75 s; the address's doubling delay
	// leaves it its free failures and about log2(75 s / 1 s) more.
	if attacks := counted.count() - ok; attacks > addressFreeFailures+7 {
		t.Errorf("%d secret checks for the attacker, want at most %d", attacks, addressFreeFailures+7)
	}

	f.srv.audit.flush(f.clock.Now().Add(time.Hour))
	total, lines := 0, 0
	for _, l := range logs.lines(t) {
		if l["msg"] != "token request" || l["result"] == "issued" {
			continue
		}
		if l["remote"] != "127.0.0.2" || l["audit"] != true {
			t.Errorf("refusal line %v", l)
		}
		lines++
		n, _ := l["count"].(float64)
		total += int(n)
	}
	if total != 120 {
		t.Errorf("audit lines count %d refusals, want 120", total)
	}
	if lines > 12 {
		t.Errorf("%d audit lines for 120 refusals from one address in 75 s, want them aggregated", lines)
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines decodes the JSON log lines.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestTokenEndpointWithoutClients(t *testing.T) {
	f := start(t, "", func(c *Config) { c.Clients = nil })
	resp, err := f.client(nil).PostForm(f.url+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("got %s, want 404", resp.Status)
	}
}

func TestParseTokenRequest(t *testing.T) {
	basic := func(id, secret string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
	}
	const form = "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name, authz, ct, body string
		want                  tokenRequest
		err                   string
	}{
		{name: "basic", authz: basic("spiffe://e.org/a", "s:e/c+r"), ct: form, body: "grant_type=client_credentials&audience=x",
			want: tokenRequest{ClientID: "spiffe://e.org/a", ClientSecret: "s:e/c+r", Method: "client_secret_basic", Audience: []string{"x"}}},
		{name: "basic with client_id too", authz: basic("a", "s"), ct: form + "; charset=utf-8", body: "grant_type=client_credentials&audience=x&client_id=a&scope=read",
			want: tokenRequest{ClientID: "a", ClientSecret: "s", Method: "client_secret_basic", Audience: []string{"x"}}},
		{name: "post, two audiences", ct: form, body: "grant_type=client_credentials&client_id=a&client_secret=s&audience=x&audience=y",
			want: tokenRequest{ClientID: "a", ClientSecret: "s", Method: "client_secret_post", Audience: []string{"x", "y"}}},
		{name: "json body", ct: "application/json", body: `{"grant_type":"client_credentials"}`, err: "invalid_request"},
		{name: "bad escape", ct: form, body: "grant_type=%zz", err: "invalid_request"},
		{name: "repeated grant_type", authz: basic("a", "s"), ct: form, body: "grant_type=client_credentials&grant_type=client_credentials&audience=x", err: "invalid_request"},
		{name: "bearer", authz: "Bearer abc", ct: form, body: "grant_type=client_credentials&audience=x", err: "invalid_client"},
		{name: "basic not base64", authz: "Basic !!!", ct: form, body: "grant_type=client_credentials&audience=x", err: "invalid_client"},
		{name: "basic without colon", authz: "Basic " + base64.StdEncoding.EncodeToString([]byte("abc")), ct: form, body: "grant_type=client_credentials&audience=x", err: "invalid_client"},
		{name: "basic and other client_id", authz: basic("a", "s"), ct: form, body: "grant_type=client_credentials&audience=x&client_id=b", err: "invalid_request"},
		{name: "post without secret", ct: form, body: "grant_type=client_credentials&audience=x&client_id=a", err: "invalid_client"},
		{name: "empty client id", authz: basic("", "s"), ct: form, body: "grant_type=client_credentials&audience=x", err: "invalid_client"},
		{name: "client id too long", ct: form, body: "grant_type=client_credentials&audience=x&client_secret=s&client_id=" + strings.Repeat("a", 2049), err: "invalid_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, oerr := parseTokenRequest(tc.authz, tc.ct, []byte(tc.body))
			if tc.err != "" {
				if oerr == nil || oerr.Code != tc.err {
					t.Fatalf("got %+v, %v; want error %s", got, oerr, tc.err)
				}
				return
			}
			if oerr != nil {
				t.Fatalf("error %v", oerr)
			}
			if got.ClientID != tc.want.ClientID || got.ClientSecret != tc.want.ClientSecret || got.Method != tc.want.Method || strings.Join(got.Audience, ",") != strings.Join(tc.want.Audience, ",") {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseTokenRequest checks that request parsing never panics, that
// errors are well-formed OAuth errors, and that an accepted request
// survives a round trip through the encoding a client would send.
func FuzzParseTokenRequest(f *testing.F) {
	f.Add("", "application/x-www-form-urlencoded", "grant_type=client_credentials&client_id=a&client_secret=s&audience=x")
	f.Add("Basic YTpz", "application/x-www-form-urlencoded", "grant_type=client_credentials&audience=x&audience=y")
	f.Add("basic %%%", "application/x-www-form-urlencoded; charset=utf-8", "grant_type=client_credentials&audience=%41")
	f.Add("Basic Og==", "text/plain", "a=b;c=d")
	f.Fuzz(func(t *testing.T, authz, ct, body string) {
		req, oerr := parseTokenRequest(authz, ct, []byte(body))
		if oerr != nil {
			if req.ClientID != "" || req.ClientSecret != "" || oerr.Code == "" || (oerr.Status != 400 && oerr.Status != 401) {
				t.Fatalf("error %+v with request %+v", oerr, req)
			}
			return
		}
		if req.ClientID == "" || len(req.Audience) == 0 {
			t.Fatalf("accepted %+v", req)
		}
		form := url.Values{"grant_type": {"client_credentials"}, "audience": req.Audience}
		var again tokenRequest
		var aerr *oauthError
		switch req.Method {
		case "client_secret_post":
			form.Set("client_id", req.ClientID)
			form.Set("client_secret", req.ClientSecret)
			again, aerr = parseTokenRequest("", "application/x-www-form-urlencoded", []byte(form.Encode()))
		case "client_secret_basic":
			h := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(req.ClientID)+":"+url.QueryEscape(req.ClientSecret)))
			again, aerr = parseTokenRequest(h, "application/x-www-form-urlencoded", []byte(form.Encode()))
		default:
			t.Fatalf("method %q", req.Method)
		}
		if aerr != nil || again.ClientID != req.ClientID || again.ClientSecret != req.ClientSecret || strings.Join(again.Audience, "\x00") != strings.Join(req.Audience, "\x00") {
			t.Fatalf("round trip of %+v: %+v, %v", req, again, aerr)
		}
	})
}

func TestLimiter(t *testing.T) {
	clk := testclock.New(time.Unix(1e9, 0))
	l := newLimiter(clk.Now, 10, 20, 1000, 1000)
	for i, want := range []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300} {
		if got := l.fail("192.0.2.1", "a"); got != want*time.Second {
			t.Fatalf("failure %d: delay %s, want %s", i+1, got, want*time.Second)
		}
	}
	if w, why := l.admit("192.0.2.1", "a"); w != 300*time.Second || why != limitClient {
		t.Errorf("admit of the failing pair: %s %s", w, why)
	}
	// The same client from another address is checked.
	if w, why := l.admit("192.0.2.2", "a"); w != 0 {
		t.Errorf("admit of the client from another address: %s %s", w, why)
	}
	// The failing address waits for any client.
	if w, why := l.admit("192.0.2.1", "b"); w == 0 || why != limitAddress {
		t.Errorf("admit of another client from the failing address: %s %s", w, why)
	}
	clk.Advance(forgetAfter + time.Second)
	if got := l.fail("192.0.2.1", "a"); got != time.Second {
		t.Errorf("after %s without failures: delay %s, want 1s", forgetAfter, got)
	}
	l.succeed("192.0.2.1", "a")
	if w, _ := l.admit("192.0.2.1", "a"); w != 0 {
		t.Errorf("blocked after success: %s", w)
	}
	for i := range maxTracked + 10 {
		l.fail("198.51.100."+strconv.Itoa(i%250), strconv.Itoa(i))
		l.admit("2001:db8:"+strconv.FormatInt(int64(i), 16)+"::1", "x")
	}
	if len(l.pairs) > maxTracked || len(l.addrs) > maxTracked {
		t.Errorf("%d pairs, %d addresses tracked, bound %d", len(l.pairs), len(l.addrs), maxTracked)
	}
}

func TestAddressKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:443":                  "192.0.2.1",
		"[::ffff:192.0.2.1]:80":          "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:443":     "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1%eth0]:44": "2001:db8:1:2::/64",
		"not an address":                 "not an address",
	} {
		if got := addressKey(in); got != want {
			t.Errorf("addressKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzAddressKey checks that the source key never panics and that a
// peer address always maps to one IP address or one IPv6 /64.
func FuzzAddressKey(f *testing.F) {
	for _, s := range []string{"192.0.2.1:443", "[::ffff:192.0.2.1]:80", "[2001:db8::1%eth0]:1", "[::1]:0", ":80", "", "[", "1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, remote string) {
		key := addressKey(remote)
		host, _, err := net.SplitHostPort(remote)
		if err != nil {
			return
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return
		}
		if ip.Unmap().Is4() {
			if a, err := netip.ParseAddr(key); err != nil || a != ip.Unmap() {
				t.Fatalf("addressKey(%q) = %q, want %s", remote, key, ip.Unmap())
			}
			return
		}
		p, err := netip.ParsePrefix(key)
		if err != nil || p.Bits() != 64 || !p.Contains(ip.WithZone("")) {
			t.Fatalf("addressKey(%q) = %q, want the /64 of %s", remote, key, ip)
		}
	})
}

// TestJWKSMaxAge: the JWKS may be cached as long as Config.JWKSMaxAge
// says (the server sets it below the JWT prepare lead), a minute by
// default, and at least a second.
func TestJWKSMaxAge(t *testing.T) {
	for _, tc := range []struct {
		set  time.Duration
		want string
	}{
		{0, "max-age=60"},
		{5 * time.Second, "max-age=5"},
		{1500 * time.Millisecond, "max-age=1"},
		{100 * time.Millisecond, "max-age=1"},
	} {
		f := start(t, "", func(c *Config) { c.JWKSMaxAge = tc.set })
		resp, _ := get(t, f.client(nil), f.url+"/.well-known/jwks.json")
		if got := resp.Header.Get("Cache-Control"); got != "public, "+tc.want {
			t.Errorf("JWKSMaxAge %s: Cache-Control %q, want public, %s", tc.set, got, tc.want)
		}
	}
}
