package main

// End-to-end tests of JWT-SVIDs: tokens fetched by real workloads running
// as other uids, validated by go-spiffe, by a generic JOSE library against
// the JWKS served over HTTPS, by the daemon (ValidateJWTSVID), by the SDK,
// and by introspection; the OAuth client credentials flow; and tokens
// across a restart.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/sdk"
)

func init() {
	workloadModes["jwt"] = jwtWorkloadMain
	workloadModes["jwt-sdk"] = jwtSDKWorkloadMain
}

// jwtRequest is what the runner asks a JWT workload for, on its stdin.
type jwtRequest struct {
	// Audience: fetch a JWT-SVID for it (none: fetch nothing).
	Audience []string `json:"audience,omitempty"`
	// Validate: tokens to validate, each for its audience.
	Validate []jwtCheck `json:"validate,omitempty"`
}

type jwtCheck struct {
	Token    string `json:"token"`
	Audience string `json:"audience"`
}

// jwtResult is what a JWT workload reports on its stdout.
type jwtResult struct {
	Error   string            `json:"error,omitempty"`
	Code    string            `json:"code,omitempty"`
	Token   string            `json:"token,omitempty"`
	ID      string            `json:"id,omitempty"`
	Bundles map[string][]byte `json:"bundles,omitempty"` // JWKS by trust domain
	Checks  []checkResult     `json:"checks,omitempty"`
}

type checkResult struct {
	ID     string `json:"id,omitempty"`
	Error  string `json:"error,omitempty"`
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"` // sdk.TokenReason, for jwt-sdk
}

func failed(err error) (string, string) {
	return err.Error(), status.Code(err).String()
}

// jwtWorkloadMain uses go-spiffe's Workload API client: FetchJWTSVID,
// FetchJWTBundles and ValidateJWTSVID.
func jwtWorkloadMain(ctx context.Context, addr string) int {
	return jwtWorkload(func(req jwtRequest, r *jwtResult) {
		c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
		if err != nil {
			r.Error, r.Code = failed(err)
			return
		}
		defer c.Close()
		if len(req.Audience) > 0 {
			svid, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: req.Audience[0], ExtraAudiences: req.Audience[1:]})
			if err != nil {
				r.Error, r.Code = failed(err)
				return
			}
			r.Token, r.ID = svid.Marshal(), svid.ID.String()
			set, err := c.FetchJWTBundles(ctx)
			if err != nil {
				r.Error, r.Code = failed(err)
				return
			}
			r.Bundles = map[string][]byte{}
			for _, b := range set.Bundles() {
				if r.Bundles[b.TrustDomain().IDString()], err = b.Marshal(); err != nil {
					r.Error = err.Error()
					return
				}
			}
		}
		for _, ch := range req.Validate {
			var res checkResult
			svid, err := c.ValidateJWTSVID(ctx, ch.Token, ch.Audience)
			if err != nil {
				res.Error, res.Code = failed(err)
			} else {
				res.ID = svid.ID.String()
			}
			r.Checks = append(r.Checks, res)
		}
	})
}

// jwtSDKWorkloadMain uses the badge SDK: JWTSource fetches and validates
// locally.
func jwtSDKWorkloadMain(ctx context.Context, addr string) int {
	return jwtWorkload(func(req jwtRequest, r *jwtResult) {
		src, err := sdk.NewJWTSource(ctx, sdk.WithAddress(addr))
		if err != nil {
			r.Error = err.Error()
			return
		}
		defer src.Close()
		if len(req.Audience) > 0 {
			svid, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: req.Audience[0], ExtraAudiences: req.Audience[1:]})
			if err != nil {
				r.Error = err.Error()
				return
			}
			again, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: req.Audience[0], ExtraAudiences: req.Audience[1:]})
			if err != nil || again.Marshal() != svid.Marshal() {
				r.Error = fmt.Sprintf("second fetch did not return the cached token (%v)", err)
				return
			}
			r.Token, r.ID = svid.Marshal(), svid.ID.String()
		}
		for _, ch := range req.Validate {
			var res checkResult
			svid, err := src.ValidateJWTSVID(ch.Token, ch.Audience)
			if err != nil {
				res.Error = err.Error()
				if te, ok := err.(*sdk.TokenError); ok {
					res.Reason = te.Reason.String()
				}
			} else {
				res.ID = svid.ID.String()
			}
			r.Checks = append(r.Checks, res)
		}
	})
}

func jwtWorkload(fn func(jwtRequest, *jwtResult)) int {
	var req jwtRequest
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "reading the request:", err)
		return 2
	}
	var r jwtResult
	fn(req, &r)
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

// runJWT runs a JWT workload as uid/gid (gid = uid) and returns its result.
func (d *daemon) runJWT(uid uint32, mode string, req jwtRequest) jwtResult {
	d.t.Helper()
	cmd := d.workloadCmd(uid, uid, mode)
	in, err := json.Marshal(req)
	if err != nil {
		d.t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &out, &errOut
	if err := cmd.Run(); err != nil {
		d.t.Fatalf("%s workload uid %d: %v: %s", mode, uid, err, errOut.String())
	}
	var r jwtResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		d.t.Fatalf("%s workload uid %d printed %q: %v (stderr %s)", mode, uid, out.String(), err, errOut.String())
	}
	return r
}

// fetchJWT has uid fetch a token for audience, failing the test on error.
func (d *daemon) fetchJWT(uid uint32, audience ...string) jwtResult {
	d.t.Helper()
	r := d.runJWT(uid, "jwt", jwtRequest{Audience: audience})
	if r.Error != "" {
		d.t.Fatalf("uid %d FetchJWTSVID(%v): %s: %s", uid, audience, r.Code, r.Error)
	}
	return r
}

var listenAddr = regexp.MustCompile(`msg="public listener ready" address=https://(\S+)`)

// publicURL is the base URL of the daemon's public listener, as its
// latest start logged it.
func (d *daemon) publicURL() string {
	d.t.Helper()
	m := listenAddr.FindAllStringSubmatch(d.logs(), -1)
	if len(m) == 0 {
		d.t.Fatalf("the daemon did not log its public listener:\n%s", d.logs())
	}
	return "https://" + m[len(m)-1][1]
}

// httpsClient trusts the daemon's bundle and presents cert, if any.
func (d *daemon) httpsClient(cert *tls.Certificate) *http.Client {
	d.t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(d.mustBadge("bundle", "show"))) {
		d.t.Fatal("badge bundle show printed no certificate")
	}
	cfg := &tls.Config{RootCAs: roots}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

// jwtKey reads the daemon's JWT signing key from its data directory, to
// forge tokens signed by the real key.
func (d *daemon) jwtKey() (crypto.Signer, string) {
	d.t.Helper()
	files, err := filepath.Glob(filepath.Join(d.dataDir, "keys", "jwt-*.key"))
	if err != nil || len(files) != 1 {
		d.t.Fatalf("JWT key files %v (%v), want one", files, err)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		d.t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		d.t.Fatalf("%s is not PEM", files[0])
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		d.t.Fatal(err)
	}
	return k.(crypto.Signer), strings.TrimSuffix(strings.TrimPrefix(filepath.Base(files[0]), "jwt-"), ".key")
}

func forgeJWT(t *testing.T, key crypto.Signer, kid string, claims map[string]any) string {
	t.Helper()
	opts := new(gojose.SignerOptions).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := gojose.NewSigner(gojose.SigningKey{Algorithm: gojose.ES256, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

const testIssuer = "https://badge.test"

func startJWTDaemon(t *testing.T) *daemon {
	d := startDaemon(t, "--listen", "127.0.0.1:0", "--listen-dns", "127.0.0.1", "--jwt-issuer", testIssuer)
	d.createEntry("spiffe://example.org/payments", "unix:uid:1001")
	d.createEntry("spiffe://example.org/orders", "unix:uid:1002")
	return d
}

func TestE2EJWTSVID(t *testing.T) {
	d := startJWTDaemon(t)
	const orders = "spiffe://example.org/orders"
	before := time.Now()
	pay := d.fetchJWT(1001, orders)
	if pay.ID != "spiffe://example.org/payments" {
		t.Fatalf("uid 1001 got a token for %s", pay.ID)
	}

	t.Run("go-spiffe validates with the streamed bundle", func(t *testing.T) {
		b, err := jwtbundle.Parse(td, pay.Bundles[td.IDString()])
		if err != nil {
			t.Fatalf("JWT bundle from FetchJWTBundles: %v", err)
		}
		svid, err := jwtsvid.ParseAndValidate(pay.Token, b, []string{orders})
		if err != nil {
			t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
		}
		if svid.Expiry.After(time.Now().Add(5*time.Minute)) || svid.Expiry.Before(before.Add(5*time.Minute-2*time.Second)) {
			t.Errorf("exp %s: want the 5m JWT TTL after issuance (%s)", svid.Expiry, before)
		}
		if _, err := jwtsvid.ParseAndValidate(pay.Token, b, []string{"spiffe://example.org/billing"}); err == nil {
			t.Errorf("ParseAndValidate accepted another audience")
		}
	})

	t.Run("go-jose validates against the JWKS over HTTPS", func(t *testing.T) {
		c := d.httpsClient(nil)
		base := d.publicURL()
		resp, err := c.Get(base + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if doc.Issuer != testIssuer || doc.JWKSURI != testIssuer+"/.well-known/jwks.json" {
			t.Fatalf("discovery %+v", doc)
		}
		// The issuer names the public URL (behind a proxy); here the
		// listener itself serves the path.
		resp, err = c.Get(base + strings.TrimPrefix(doc.JWKSURI, testIssuer))
		if err != nil {
			t.Fatal(err)
		}
		var set gojose.JSONWebKeySet
		err = json.NewDecoder(resp.Body).Decode(&set)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.ParseSigned(pay.Token, []gojose.SignatureAlgorithm{gojose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		keys := set.Key(tok.Headers[0].KeyID)
		if len(keys) != 1 {
			t.Fatalf("no key %q in the served JWKS", tok.Headers[0].KeyID)
		}
		var claims jwt.Claims
		if err := tok.Claims(keys[0].Key, &claims); err != nil {
			t.Fatalf("signature: %v", err)
		}
		if err := claims.Validate(jwt.Expected{Issuer: testIssuer, Subject: "spiffe://example.org/payments", AnyAudience: jwt.Audience{orders}, Time: time.Now()}); err != nil {
			t.Errorf("claims: %v", err)
		}
	})

	t.Run("the SDK fetches, caches and validates", func(t *testing.T) {
		mine := d.runJWT(1001, "jwt-sdk", jwtRequest{Audience: []string{orders}})
		if mine.Error != "" || mine.ID != "spiffe://example.org/payments" {
			t.Fatalf("SDK fetch as uid 1001: %+v", mine)
		}
		r := d.runJWT(1002, "jwt-sdk", jwtRequest{Validate: []jwtCheck{
			{pay.Token, orders}, {mine.Token, orders}, {pay.Token, "spiffe://example.org/billing"},
		}})
		if r.Error != "" || len(r.Checks) != 3 {
			t.Fatalf("SDK validation as uid 1002: %+v", r)
		}
		for i, want := range []string{"spiffe://example.org/payments", "spiffe://example.org/payments", ""} {
			if r.Checks[i].ID != want {
				t.Errorf("check %d: %+v, want %q", i, r.Checks[i], want)
			}
		}
		if r.Checks[2].Reason != "wrong audience" {
			t.Errorf("other audience: %+v", r.Checks[2])
		}
	})

	t.Run("ValidateJWTSVID accepts the right audience and refuses others", func(t *testing.T) {
		r := d.runJWT(1002, "jwt", jwtRequest{Validate: []jwtCheck{{pay.Token, orders}, {pay.Token, "spiffe://example.org/billing"}}})
		if r.Error != "" || len(r.Checks) != 2 {
			t.Fatalf("%+v", r)
		}
		if r.Checks[0].ID != "spiffe://example.org/payments" {
			t.Errorf("right audience: %+v", r.Checks[0])
		}
		if r.Checks[1].Code != "InvalidArgument" || !strings.Contains(r.Checks[1].Error, "wrong audience") {
			t.Errorf("other audience: %+v", r.Checks[1])
		}
	})

	t.Run("refused tokens", func(t *testing.T) {
		key, kid := d.jwtKey()
		stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		now := time.Now()
		claims := func(sub string, exp time.Time) map[string]any {
			return map[string]any{"sub": sub, "aud": orders, "iat": exp.Add(-time.Minute).Unix(), "exp": exp.Unix()}
		}
		parts := strings.Split(pay.Token, ".")
		raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
		tamperedClaims := bytes.Replace(raw, []byte("payments"), []byte("paymentz"), 1)
		none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		cases := []struct {
			name, token, reason string
		}{
			{"forged with the real key (control)", forgeJWT(t, key, kid, claims("spiffe://example.org/payments", now.Add(time.Minute))), ""},
			{"expired", forgeJWT(t, key, kid, claims("spiffe://example.org/payments", now.Add(-time.Second))), "expired"},
			{"tampered", parts[0] + "." + base64.RawURLEncoding.EncodeToString(tamperedClaims) + "." + parts[2], "bad signature"},
			{"alg none", none + "." + parts[1] + ".", "unsupported algorithm"},
			{"wrong kid", forgeJWT(t, key, "not-"+kid, claims("spiffe://example.org/payments", now.Add(time.Minute))), "unknown signing key"},
			{"another key under the real kid", forgeJWT(t, stranger, kid, claims("spiffe://example.org/payments", now.Add(time.Minute))), "bad signature"},
			{"wrong issuer trust domain", forgeJWT(t, key, kid, claims("spiffe://other.org/payments", now.Add(time.Minute))), "untrusted trust domain"},
		}
		req := jwtRequest{}
		for _, c := range cases {
			req.Validate = append(req.Validate, jwtCheck{c.token, orders})
		}
		for _, mode := range []string{"jwt", "jwt-sdk"} {
			r := d.runJWT(1002, mode, req)
			if r.Error != "" || len(r.Checks) != len(cases) {
				t.Fatalf("%s: %+v", mode, r)
			}
			for i, c := range cases {
				got := r.Checks[i]
				switch {
				case c.reason == "" && got.ID != "spiffe://example.org/payments":
					t.Errorf("%s, %s: refused: %+v", mode, c.name, got)
				case c.reason != "" && (got.ID != "" || !strings.Contains(got.Error, c.reason)):
					t.Errorf("%s, %s: %+v, want refused: %s", mode, c.name, got, c.reason)
				case c.reason != "" && mode == "jwt" && got.Code != "InvalidArgument":
					t.Errorf("%s, %s: code %s, want InvalidArgument", mode, c.name, got.Code)
				}
			}
		}
	})

	t.Run("revoked ID", func(t *testing.T) {
		d.mustBadge("revoke", "--id", "spiffe://example.org/payments", "--reason", "e2e")
		after := d.fetchJWT(1001, orders)
		r := d.runJWT(1002, "jwt", jwtRequest{Validate: []jwtCheck{{pay.Token, orders}, {after.Token, orders}}})
		if len(r.Checks) != 2 || r.Checks[0].Code != "InvalidArgument" || !strings.Contains(r.Checks[0].Error, "revoked") {
			t.Fatalf("token issued before the revocation: %+v", r)
		}
		if r.Checks[1].ID != "spiffe://example.org/payments" {
			t.Errorf("token issued after a non-blocking revocation: %+v", r.Checks[1])
		}
		d.mustBadge("revoke", "--id", "spiffe://example.org/payments", "--block")
		blocked := d.runJWT(1001, "jwt", jwtRequest{Audience: []string{orders}})
		if blocked.Code != "PermissionDenied" {
			t.Errorf("blocked ID asking for a token: %+v, want PermissionDenied", blocked)
		}
		d.mustBadge("unblock", "--id", "spiffe://example.org/payments")
	})
}

func TestE2EIntrospection(t *testing.T) {
	d := startJWTDaemon(t)
	pay := d.fetchJWT(1001, "spiffe://example.org/orders")
	u := d.publicURL() + "/introspect"
	form := url.Values{"token": {pay.Token}}

	resp, err := d.httpsClient(nil).PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "invalid_client") {
		t.Fatalf("introspection without an SVID: %s %s", resp.Status, body)
	}

	// uid 1002's X.509-SVID, as it fetched it.
	x := d.runWorkload(1002, 1002, "fetch")
	if x.Error != "" {
		t.Fatal(x.Error)
	}
	cert := &tls.Certificate{Certificate: x.SVIDs[0].Chain}
	key, err := x509.ParsePKCS8PrivateKey(x.SVIDs[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	cert.PrivateKey = key
	resp, err = d.httpsClient(cert).PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != 200 || out["active"] != true || out["sub"] != "spiffe://example.org/payments" || out["iss"] != testIssuer {
		t.Fatalf("introspection with an SVID: %s %v", resp.Status, out)
	}
}

func TestE2EClientCredentials(t *testing.T) {
	d := startJWTDaemon(t)
	const id = "spiffe://example.org/batch"
	secret := strings.TrimSpace(d.mustBadge("client", "create", "--id", id))
	if len(secret) != 43 {
		t.Fatalf("client create printed %q, want the secret", secret)
	}
	list := d.mustBadge("client", "list", "--json")
	if !strings.Contains(list, id) || strings.Contains(list, secret) {
		t.Errorf("client list: %s", list)
	}
	u := d.publicURL() + "/oauth2/token"
	c := d.httpsClient(nil)
	post := func(secret string) (*http.Response, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "audience": {"spiffe://example.org/queue"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp, out
	}

	resp, out := post(secret)
	if resp.StatusCode != 200 || out["token_type"] != "Bearer" {
		t.Fatalf("good secret: %s %v", resp.Status, out)
	}
	tok, _ := out["access_token"].(string)
	r := d.runJWT(1002, "jwt", jwtRequest{Validate: []jwtCheck{{tok, "spiffe://example.org/queue"}}})
	if len(r.Checks) != 1 || r.Checks[0].ID != id {
		t.Fatalf("the client's token, validated by a workload: %+v", r)
	}

	resp, out = post("wrong")
	if resp.StatusCode != http.StatusUnauthorized || out["error"] != "invalid_client" || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("bad secret: %s %v %v", resp.Status, out, resp.Header)
	}
	// Repeated failures are slowed: within the delay even the right
	// secret is not checked.
	resp, out = post(secret)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("right secret within the delay: %s %v", resp.Status, out)
	}
	if !strings.Contains(d.logs(), `msg="token request"`) || !strings.Contains(d.logs(), "result=invalid_client") {
		t.Errorf("no audit record of the failed attempt")
	}
	d.mustBadge("client", "delete", id)
	if strings.Contains(d.mustBadge("client", "list", "--json"), id) {
		t.Errorf("client still listed after delete")
	}
}

func TestE2EJWTAfterRestart(t *testing.T) {
	d := startJWTDaemon(t)
	pay := d.fetchJWT(1001, "spiffe://example.org/orders")
	jwks := pay.Bundles[td.IDString()]
	d.restart()
	again := d.fetchJWT(1001, "spiffe://example.org/orders")
	if !bytes.Equal(again.Bundles[td.IDString()], jwks) {
		t.Errorf("the JWT bundle changed across a restart:\n%s\n%s", jwks, again.Bundles[td.IDString()])
	}
	r := d.runJWT(1002, "jwt", jwtRequest{Validate: []jwtCheck{{pay.Token, "spiffe://example.org/orders"}}})
	if len(r.Checks) != 1 || r.Checks[0].ID != "spiffe://example.org/payments" {
		t.Fatalf("token from before the restart: %+v", r)
	}
	b, err := jwtbundle.Parse(spiffeid.RequireTrustDomainFromString("example.org"), again.Bundles[td.IDString()])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(pay.Token, b, []string{"spiffe://example.org/orders"}); err != nil {
		t.Errorf("go-spiffe, with the bundle after the restart: %v", err)
	}
}
