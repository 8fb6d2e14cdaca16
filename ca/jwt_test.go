package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"

	"github.com/badge-dev/badge/storage"
)

const testSel = "unix:uid:1001"

// jwtFixture is an authority with one entry for spiffe://example.org/web.
type jwtFixture struct {
	a   *Authority
	env *testEnv
	e   *Entry
}

func newJWTFixture(t *testing.T, mod func(*Config)) *jwtFixture {
	t.Helper()
	a, env := newTestAuthority(t, mod)
	id := mustCreate(t, a, "spiffe://example.org/web", testSel)
	return &jwtFixture{a: a, env: env, e: entryFor(t, a.Snapshot(), id)}
}

func (f *jwtFixture) sign(t *testing.T, aud ...string) *JWTSVID {
	t.Helper()
	tok, err := f.a.SignJWTSVID(context.Background(), f.a.Snapshot(), f.e, aud)
	if err != nil {
		t.Fatalf("SignJWTSVID(%q): %v", aud, err)
	}
	return tok
}

// decodeJWT splits a compact JWS into its header and claims, unverified.
func decodeJWT(t *testing.T, token string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
	}
	return header, claims
}

func TestJWTKeyCreatedAndPersisted(t *testing.T) {
	f := newJWTFixture(t, nil)
	snap := f.a.Snapshot()
	recs := keyRecords(t, f.env.store)[kindJWT]
	if len(recs) != 1 {
		t.Fatalf("%d JWT key records, want 1", len(recs))
	}
	rec := recs[0]
	pub, err := x509.ParsePKIXPublicKey(rec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := pub.(*ecdsa.PublicKey); !ok || p.Curve != elliptic.P256() {
		t.Fatalf("JWT key is %T, want ECDSA P-256", pub)
	}
	kid, err := (&gojose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.RawURLEncoding.EncodeToString(kid); rec.ID != want {
		t.Errorf("key id %q, want the RFC 7638 thumbprint %q", rec.ID, want)
	}
	if rec.State != storage.KeyActive || len(rec.Certificate) != 0 {
		t.Errorf("record %+v: want an active key without certificate", rec)
	}
	fi, err := os.Stat(filepath.Join(f.env.keyDir, rec.PrivateRef))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("JWT key file mode %#o, want 0600", fi.Mode().Perm())
	}

	// The JWKS parses as a go-spiffe JWT bundle holding that key.
	b, err := jwtbundle.Parse(snap.TrustDomain(), snap.JWKS())
	if err != nil {
		t.Fatalf("JWKS does not parse as a JWT bundle: %v\n%s", err, snap.JWKS())
	}
	if got, ok := b.FindJWTAuthority(rec.ID); !ok || !got.(*ecdsa.PublicKey).Equal(pub) {
		t.Errorf("JWKS lacks key %s", rec.ID)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(snap.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0]["alg"] != "ES256" || set.Keys[0]["use"] != "sig" || set.Keys[0]["d"] != nil {
		t.Errorf("JWKS keys = %v, want one public key with alg ES256 and use sig", set.Keys)
	}

	// A token signed now validates after the authority is reopened on the
	// same store and key directory: same key, same JWKS.
	tok := f.sign(t, "orders")
	f.a.Close()
	a2 := f.env.open(t, nil)
	if got := keyRecords(t, f.env.store)[kindJWT]; len(got) != 1 {
		t.Fatalf("%d JWT key records after reopening, want the same one", len(got))
	}
	if !bytes.Equal(a2.Snapshot().JWKS(), snap.JWKS()) {
		t.Errorf("JWKS changed across a reopen")
	}
	if _, err := a2.ValidateJWTSVID(a2.Snapshot(), tok.Token, "orders"); err != nil {
		t.Errorf("token signed before the reopen: %v", err)
	}
}

func TestJWTKeySetPublishesSeveralKeys(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, nil)
	active := a.Snapshot().jwt.active.id
	a.Close()

	// A prepared key (the next one, as rotation will create it) and an
	// expired one. The prepared key is published, the expired one is not,
	// and the active key keeps signing.
	now := env.clock.Now()
	addKey := func(state storage.KeyState, notAfter time.Time) string {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		kid, err := (&gojose.JSONWebKey{Key: priv.Public()}).Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		id := base64.RawURLEncoding.EncodeToString(kid)
		pub, _ := x509.MarshalPKIXPublicKey(priv.Public())
		if err := env.store.PutKey(context.Background(), storage.Key{
			ID: id, Kind: kindJWT, PublicKey: pub, PrivateRef: "jwt-" + id + ".key",
			CreatedAt: now, NotAfter: notAfter, State: state,
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	prepared := addKey(storage.KeyPrepared, now.Add(time.Hour))
	expired := addKey(storage.KeyRetired, now.Add(-time.Second))

	a = env.open(t, nil)
	snap := a.Snapshot()
	b, err := jwtbundle.Parse(snap.TrustDomain(), snap.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	for kid, want := range map[string]bool{active: true, prepared: true, expired: false} {
		if _, ok := b.FindJWTAuthority(kid); ok != want {
			t.Errorf("key %s in the JWKS: %v, want %v", kid, ok, want)
		}
	}
	if snap.jwt.active.id != active {
		t.Errorf("signing key %s, want the active %s", snap.jwt.active.id, active)
	}
}

func TestJWTKeyRecordMismatchIsAnError(t *testing.T) {
	env := newEnv(t)
	a := env.open(t, nil)
	rec := keyRecords(t, env.store)[kindJWT][0]
	a.Close()
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rec.PublicKey, _ = x509.MarshalPKIXPublicKey(other.Public())
	if err := env.store.PutKey(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if _, err := New(context.Background(), env.config(nil)); err == nil || !strings.Contains(err.Error(), rec.ID) {
		t.Fatalf("New with a JWT record whose key is not its id: %v, want an error naming the key", err)
	}
}

func TestSignJWTSVIDClaims(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mod    func(*Config)
		aud    []string
		ttl    time.Duration
		issuer string
	}{
		{name: "one audience", aud: []string{"orders"}, ttl: DefaultJWTTTL},
		{name: "several audiences", aud: []string{"orders", "spiffe://example.org/db"}, ttl: DefaultJWTTTL},
		{name: "short TTL and issuer", aud: []string{"gw"}, ttl: 30 * time.Second, issuer: "https://badge.example.org",
			mod: func(c *Config) { c.JWTTTL = 30 * time.Second; c.JWTIssuer = "https://badge.example.org" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newJWTFixture(t, tc.mod)
			f.env.clock.Advance(700 * time.Millisecond) // iat rounds down
			now := f.env.clock.Now()
			tok := f.sign(t, tc.aud...)
			h, c := decodeJWT(t, tok.Token)
			if h["alg"] != "ES256" || h["typ"] != "JWT" || h["kid"] != f.a.Snapshot().jwt.active.id {
				t.Errorf("header %v: want alg ES256, typ JWT and the signing key's kid", h)
			}
			if c["sub"] != "spiffe://example.org/web" {
				t.Errorf("sub = %v", c["sub"])
			}
			wantAud := any(tc.aud[0])
			if len(tc.aud) > 1 {
				var l []any
				for _, a := range tc.aud {
					l = append(l, a)
				}
				wantAud = l
			}
			if got, _ := json.Marshal(c["aud"]); string(got) != string(mustJSON(t, wantAud)) {
				t.Errorf("aud = %s, want %s", got, mustJSON(t, wantAud))
			}
			iat, exp := int64(c["iat"].(float64)), int64(c["exp"].(float64))
			if iat != now.Unix() {
				t.Errorf("iat = %d, want %d (now, whole seconds)", iat, now.Unix())
			}
			if time.Duration(exp-iat)*time.Second != tc.ttl {
				t.Errorf("exp - iat = %ds, want the TTL %s", exp-iat, tc.ttl)
			}
			if time.Unix(exp, 0).After(now.Add(tc.ttl)) {
				t.Errorf("exp %d is more than the TTL after issuance", exp)
			}
			if got, _ := c["iss"].(string); got != tc.issuer {
				t.Errorf("iss = %q, want %q", got, tc.issuer)
			}
			if !tok.IssuedAt.Equal(time.Unix(iat, 0)) || !tok.ExpiresAt.Equal(time.Unix(exp, 0)) || tok.ID.String() != c["sub"] {
				t.Errorf("JWTSVID %+v does not describe its token", tok)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignJWTSVIDRefusesBadAudience(t *testing.T) {
	f := newJWTFixture(t, nil)
	many := make([]string, MaxJWTAudiences+1)
	for i := range many {
		many[i] = "a"
	}
	for name, aud := range map[string][]string{
		"none":      nil,
		"empty":     {""},
		"too many":  many,
		"too long":  {strings.Repeat("x", MaxJWTAudienceLen+1)},
		"bad UTF-8": {"\xff"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.a.SignJWTSVID(context.Background(), f.a.Snapshot(), f.e, aud)
			var inv *InvalidError
			if !errors.As(err, &inv) || inv.Field != "audience" {
				t.Fatalf("SignJWTSVID(%q) = %v, want an InvalidError on audience", aud, err)
			}
		})
	}
}

func TestSignJWTSVIDCachesUntilHalfLife(t *testing.T) {
	f := newJWTFixture(t, nil)
	first := f.sign(t, "orders")
	if again := f.sign(t, "orders"); again.Token != first.Token {
		t.Errorf("a second request within the half-life got a new token")
	}
	if other := f.sign(t, "billing"); other.Token == first.Token {
		t.Errorf("another audience got the same token")
	}
	if other := f.sign(t, "orders", "billing"); other.Token == first.Token {
		t.Errorf("another audience list got the same token")
	}
	f.env.clock.Advance(DefaultJWTTTL/2 - time.Second)
	if again := f.sign(t, "orders"); again.Token != first.Token {
		t.Errorf("token replaced before its half-life")
	}
	f.env.clock.Advance(time.Second)
	renewed := f.sign(t, "orders")
	if renewed.Token == first.Token {
		t.Fatalf("token handed out past its half-life")
	}
	if left := renewed.ExpiresAt.Sub(f.env.clock.Now()); left < DefaultJWTTTL-time.Second {
		t.Errorf("renewed token has %s left, want about the TTL", left)
	}
}

// forge signs claims with key under the given header fields.
func forge(t *testing.T, key crypto.Signer, alg gojose.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	opts := new(gojose.SignerOptions).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := gojose.NewSigner(gojose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// unsigned returns a token with alg none.
func unsigned(claims map[string]any) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
}

func TestValidateJWTSVID(t *testing.T) {
	f := newJWTFixture(t, func(c *Config) { c.JWTIssuer = "https://badge.example.org" })
	good := f.sign(t, "orders", "billing")
	snap := f.a.Snapshot()
	key := snap.jwt.active
	priv, err := readKeyFile(f.env.keyDir, key.rec.ID, key.rec.PrivateRef, key.pub)
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := f.env.clock.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"sub": "spiffe://example.org/web", "aud": []string{"orders"}, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	parts := strings.Split(good.Token, ".")
	tamperedClaims, _ := json.Marshal(claims(func(c map[string]any) { c["sub"] = "spiffe://example.org/admin" }))
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(tamperedClaims) + "." + parts[2]
	hs, err := gojose.NewSigner(gojose.SigningKey{Algorithm: gojose.HS256, Key: bytes.Repeat([]byte{1}, 32)}, new(gojose.SignerOptions).WithHeader("kid", key.id))
	if err != nil {
		t.Fatal(err)
	}
	hs256, err := jwt.Signed(hs).Claims(claims(nil)).Serialize()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		token    string
		audience string
		want     TokenReason // "" accepts
	}{
		{"issued by the authority", good.Token, "orders", ""},
		{"second audience", good.Token, "billing", ""},
		{"no audience check (introspection)", good.Token, "", ""},
		{"forged with the real key", forge(t, priv, gojose.ES256, key.id, claims(nil)), "orders", ""},
		{"wrong audience", good.Token, "payments", TokenAudience},
		{"tampered claims", tampered, "orders", TokenSignature},
		{"signed by another key under the real kid", forge(t, stranger, gojose.ES256, key.id, claims(nil)), "orders", TokenSignature},
		{"unknown kid", forge(t, priv, gojose.ES256, "not-a-badge-key", claims(nil)), "orders", TokenUnknownKey},
		{"no kid", forge(t, priv, gojose.ES256, "", claims(nil)), "orders", TokenUnknownKey},
		{"alg none", unsigned(claims(nil)), "orders", TokenAlgorithm},
		{"alg HS256", hs256, "orders", TokenAlgorithm},
		{"other trust domain", forge(t, priv, gojose.ES256, key.id, claims(func(c map[string]any) { c["sub"] = "spiffe://other.org/web" })), "orders", TokenUntrusted},
		{"expired", forge(t, priv, gojose.ES256, key.id, claims(func(c map[string]any) { c["exp"] = now.Unix() })), "orders", TokenExpired},
		{"no exp", forge(t, priv, gojose.ES256, key.id, claims(func(c map[string]any) { delete(c, "exp") })), "orders", TokenMalformed},
		{"not yet valid", forge(t, priv, gojose.ES256, key.id, claims(func(c map[string]any) { c["nbf"] = now.Add(time.Second).Unix() })), "orders", TokenNotYetValid},
		{"iat in the future", forge(t, priv, gojose.ES256, key.id, claims(func(c map[string]any) { c["iat"] = now.Add(time.Minute).Unix() })), "orders", TokenNotYetValid},
		{"other issuer", forge(t, priv, gojose.ES256, key.id, claims(func(c map[string]any) { c["iss"] = "https://evil.example" })), "orders", TokenIssuer},
		{"sub not a SPIFFE ID", forge(t, priv, gojose.ES256, key.id, claims(func(c map[string]any) { c["sub"] = "web" })), "orders", TokenMalformed},
		{"no aud", forge(t, priv, gojose.ES256, key.id, claims(func(c map[string]any) { delete(c, "aud") })), "", TokenMalformed},
		{"garbage", "not.a.token", "orders", TokenMalformed},
		{"two parts", "abc.def", "orders", TokenMalformed},
		{"too long", strings.Repeat("a", MaxJWTLen+1), "orders", TokenMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.a.ValidateJWTSVID(snap, tc.token, tc.audience)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if got.ID.String() != "spiffe://example.org/web" || got.KeyID != key.id || got.Claims["sub"] != "spiffe://example.org/web" {
					t.Errorf("claims %+v", got)
				}
				return
			}
			var te *TokenError
			if !errors.As(err, &te) || te.Reason != tc.want || !errors.Is(err, ErrTokenRefused) {
				t.Fatalf("got %v, want a TokenError with reason %q", err, tc.want)
			}
			if strings.Contains(err.Error(), tc.token) && len(tc.token) > 20 {
				t.Errorf("the error repeats the token: %v", err)
			}
		})
	}
	t.Run("expires exactly at exp", func(t *testing.T) {
		f.env.clock.Advance(good.ExpiresAt.Sub(f.env.clock.Now()))
		_, err := f.a.ValidateJWTSVID(snap, good.Token, "orders")
		var te *TokenError
		if !errors.As(err, &te) || te.Reason != TokenExpired {
			t.Fatalf("at exp: %v, want expired", err)
		}
	})
}

func TestJWTRevocation(t *testing.T) {
	f := newJWTFixture(t, nil)
	ctx := context.Background()
	before := f.sign(t, "orders")
	f.env.clock.Advance(1500 * time.Millisecond)
	if _, err := f.a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Reason: "key leak"}); err != nil {
		t.Fatal(err)
	}
	snap := f.a.Snapshot()
	_, err := f.a.ValidateJWTSVID(snap, before.Token, "orders")
	var te *TokenError
	if !errors.As(err, &te) || te.Reason != TokenRevoked {
		t.Fatalf("token issued before the revocation: %v, want revoked", err)
	}

	// Within the same second as the revocation: the new token is not
	// the cached one and is dated after the revocation, so it validates.
	f.env.clock.Advance(100 * time.Millisecond)
	after := f.sign(t, "orders")
	if after.Token == before.Token {
		t.Fatalf("the cached token issued before the revocation was handed out again")
	}
	if _, err := f.a.ValidateJWTSVID(f.a.Snapshot(), after.Token, "orders"); err != nil {
		t.Fatalf("token issued after a (non-blocking) revocation: %v", err)
	}
	if after.ExpiresAt.After(f.env.clock.Now().Add(DefaultJWTTTL)) {
		t.Errorf("exp %s is more than the TTL after issuance", after.ExpiresAt)
	}

	// Blocked: no tokens at all, and none of the earlier ones validate.
	if _, err := f.a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/web", Block: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.SignJWTSVID(ctx, snap, f.e, []string{"orders"}); !errors.Is(err, ErrBlocked) {
		t.Fatalf("SignJWTSVID for a blocked ID: %v, want ErrBlocked", err)
	}
	if _, err := f.a.ValidateJWTSVID(f.a.Snapshot(), after.Token, "orders"); !errors.As(err, &te) || te.Reason != TokenRevoked {
		t.Fatalf("token of a blocked ID: %v, want revoked", err)
	}
}

func TestValidateJWTIssuer(t *testing.T) {
	for iss, ok := range map[string]bool{
		"":                                 true,
		"https://badge.example.org":        true,
		"https://badge.example.org:8443/x": true,
		"http://127.0.0.1:8080":            true,
		"http://badge.example.org":         false,
		"https://badge.example.org/":       false,
		"https://badge.example.org?a=b":    false,
		"https://user@badge.example.org":   false,
		"badge.example.org":                false,
		"https://":                         false,
	} {
		if err := ValidateJWTIssuer(iss); (err == nil) != ok {
			t.Errorf("ValidateJWTIssuer(%q) = %v, want ok %v", iss, err, ok)
		}
	}
	if _, err := New(context.Background(), newEnv(t).config(func(c *Config) { c.JWTIssuer = "http://evil" })); err == nil {
		t.Errorf("New accepted an http issuer")
	}
}

func TestJWTTTLBounds(t *testing.T) {
	for _, ttl := range []time.Duration{time.Second, DefaultJWTTTL + time.Second} {
		if _, err := New(context.Background(), newEnv(t).config(func(c *Config) { c.JWTTTL = ttl })); err == nil {
			t.Errorf("New accepted JWT TTL %s", ttl)
		}
	}
}
