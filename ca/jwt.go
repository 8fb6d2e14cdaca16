package ca

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/jose"

	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/untrusted"
	"github.com/badge-dev/badge/storage"
)

// Limits of JWT-SVID requests.
const (
	// MaxJWTAudiences is the most audiences one JWT-SVID may carry.
	MaxJWTAudiences = 16
	// MaxJWTAudienceLen is the longest audience value, in bytes.
	MaxJWTAudienceLen = 512
	// MaxJWTLen is the longest token ValidateJWTSVID parses, in bytes.
	MaxJWTLen = 16 << 10

	kindJWT = "jwt"
	// jwtAlg is the one signature algorithm badge signs JWT-SVIDs with and
	// accepts: ECDSA P-256 with SHA-256.
	jwtAlg = jose.ES256
	// jwtCacheMax bounds the tokens cached per signing key.
	jwtCacheMax = 16384
	// jwtIATFuture is how far in the future an iat may lie (clock skew).
	jwtIATFuture = Backdate
)

// JWTSVID is a signed JWT-SVID.
type JWTSVID struct {
	// ID is the SPIFFE ID in the sub claim.
	ID spiffeid.ID
	// EntryID is the registration entry it was issued for, or
	// "client:" and the client ID for a token of an OAuth client.
	EntryID string
	// Token is the JWT in JWS compact serialization.
	Token string
	// KeyID is the kid of the key that signed it.
	KeyID string
	// IssuedAt and ExpiresAt are the iat and exp claims.
	IssuedAt, ExpiresAt time.Time
}

// RefreshAt is half-way through the token's life: until then a cached
// token is handed out again, so every token handed out has at least half
// of its lifetime left.
func (t *JWTSVID) RefreshAt() time.Time {
	return t.IssuedAt.Add(t.ExpiresAt.Sub(t.IssuedAt) / 2)
}

// JWTClaims is what ValidateJWTSVID learnt from a valid token.
type JWTClaims struct {
	// ID is the SPIFFE ID in the sub claim.
	ID spiffeid.ID
	// Audience is the aud claim.
	Audience []string
	// Issuer is the iss claim; empty when the token has none.
	Issuer string
	// IssuedAt is the iat claim; zero when the token has none.
	IssuedAt time.Time
	// ExpiresAt is the exp claim.
	ExpiresAt time.Time
	// KeyID is the kid of the key that signed the token.
	KeyID string
	// Claims holds every claim of the payload, as decoded from JSON.
	Claims map[string]any
}

// TokenReason says why a JWT-SVID was refused.
type TokenReason string

// The reasons a JWT-SVID can be refused, in the order they are checked.
const (
	TokenMalformed   TokenReason = "malformed"
	TokenAlgorithm   TokenReason = "unsupported algorithm"
	TokenUntrusted   TokenReason = "untrusted trust domain"
	TokenUnknownKey  TokenReason = "unknown signing key"
	TokenSignature   TokenReason = "bad signature"
	TokenExpired     TokenReason = "expired"
	TokenNotYetValid TokenReason = "not yet valid"
	TokenIssuer      TokenReason = "wrong issuer"
	TokenAudience    TokenReason = "wrong audience"
	TokenRevoked     TokenReason = "revoked"
)

// ErrTokenRefused is matched (with errors.Is) by every *TokenError.
var ErrTokenRefused = errors.New("ca: JWT-SVID refused")

// TokenError is the refusal of a JWT-SVID, with the reason.
type TokenError struct {
	Reason TokenReason
	// Detail explains the refusal in words; it never contains the token.
	Detail string
}

func (e *TokenError) Error() string {
	if e.Detail == "" {
		return "JWT-SVID refused: " + string(e.Reason)
	}
	return "JWT-SVID refused: " + string(e.Reason) + ": " + e.Detail
}

// Is makes errors.Is(err, ErrTokenRefused) true.
func (e *TokenError) Is(target error) bool { return target == ErrTokenRefused }

func refuse(r TokenReason, format string, args ...any) error {
	return &TokenError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// jwtKey is a JWT signing key. Every key of a set is published in the
// JWKS; signer is set on the key that signs, and on a prepared key this
// process created (one loaded from the store reads its file when it
// becomes active). A jwtKey is never changed once built.
type jwtKey struct {
	id     string // kid: the RFC 7638 thumbprint (SHA-256) of the public key
	pub    crypto.PublicKey
	rec    storage.Key
	signer jose.Signer
}

// with returns a copy of k with the record rec.
func (k *jwtKey) with(rec storage.Key) *jwtKey {
	c := *k
	c.rec = rec
	return &c
}

// jwtKeySet holds the JWT keys of the trust domain: the one that signs,
// the next one once prepared, and every one that is published (those two
// and the retired ones whose tokens may still be valid). Snapshots share
// it until a key changes. It is immutable: the token cache belongs to the
// Authority.
type jwtKeySet struct {
	active *jwtKey
	next   *jwtKey            // prepared: published, not signing yet; nil if none
	keys   map[string]*jwtKey // by kid, every published key
	jwks   []byte             // RFC 7517 JWK Set of keys, in (CreatedAt, kid) order
	bundle *jwtbundle.Bundle
}

// loadJWTKeys loads the JWT keys from recs (oldest first) and the key
// directory: the newest active key signs, the newest prepared one is next,
// and every one of them and every retired key short of its RemoveAt is
// published. It creates nothing: with no active key, advanceKeysLocked
// activates the prepared one or creates one. Superseded records (an older
// active or prepared key, left by a crash between two writes) are
// returned retired, to be written back.
func loadJWTKeys(cfg *Config, recs []storage.Key) (*jwtKeySet, keyFixes, error) {
	now := cfg.Time()
	var keys []*jwtKey
	var active, next *jwtKey
	var fixes keyFixes
	for _, rec := range recs {
		if rec.Kind != kindJWT {
			continue
		}
		if rec.State == storage.KeyRetired && !now.Before(removeAt(rec)) {
			continue
		}
		if !cfg.owns(rec) {
			// Another server's key: published until its tokens have
			// expired, never signing here.
			if !now.Before(rec.NotAfter) {
				continue
			}
			k, err := parseJWTKey(rec)
			if err != nil {
				cfg.Logger.Warn("another server's JWT key is unreadable; it is not published", slog.String(logkey.KeyID, rec.ID), slog.Any(logkey.Error, err))
				continue
			}
			keys = append(keys, k)
			continue
		}
		if rec.State != storage.KeyRetired && !now.Before(rec.NotAfter) {
			// Expired before it was retired (the server was down): it signs
			// no more, and its tokens have expired with it.
			fixes = append(fixes, retire(rec, now, rec.NotAfter))
			continue
		}
		k, err := parseJWTKey(rec)
		if err != nil {
			return nil, nil, err
		}
		switch rec.State {
		case storage.KeyActive:
			if active != nil {
				r := retire(active.rec, now, earlierOf(active.rec.NotAfter, now.Add(DefaultJWTTTL+Backdate+time.Second)))
				fixes = append(fixes, r)
				keys[slices.Index(keys, active)] = active.with(r)
			}
			active = k
		case storage.KeyPrepared:
			if next != nil {
				fixes = append(fixes, retire(next.rec, now, now))
				keys = slices.DeleteFunc(keys, func(x *jwtKey) bool { return x == next })
			}
			next = k
		}
		keys = append(keys, k)
	}
	if next != nil && next.rec.ActivatesAt.IsZero() {
		// Prepared with no schedule: it signs a full lead after it was
		// published, and not before the active key is due to retire.
		rec := next.rec
		rec.ActivatesAt = rec.CreatedAt.Add(cfg.JWTPrepareLead)
		if active != nil {
			rec.ActivatesAt = laterOf(rec.ActivatesAt, cfg.jwtRetiresAt(active))
		}
		fixes = append(fixes, rec)
		i := slices.Index(keys, next)
		next = next.with(rec)
		keys[i] = next
	}
	if active != nil {
		signer, err := loadJWTSigner(cfg.keys, active)
		if err != nil {
			return nil, nil, err
		}
		active.signer = signer
	}
	set, err := newJWTKeySet(cfg.TrustDomain, active, next, keys)
	return set, fixes, err
}

func newJWTKeySet(td spiffeid.TrustDomain, active, next *jwtKey, keys []*jwtKey) (*jwtKeySet, error) {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(a, b *jwtKey) int {
		return cmp.Or(a.rec.CreatedAt.Compare(b.rec.CreatedAt), strings.Compare(a.id, b.id))
	})
	ks := &jwtKeySet{active: active, next: next, keys: make(map[string]*jwtKey, len(keys))}
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(keys))}
	auths := make(map[string]crypto.PublicKey, len(keys))
	for _, k := range keys {
		ks.keys[k.id] = k
		auths[k.id] = k.pub
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.pub, KeyID: k.id, Algorithm: string(jwtAlg), Use: "sig"})
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("ca: encoding the JWT key set: %w", err)
	}
	ks.jwks = jwks
	ks.bundle = jwtbundle.FromJWTAuthorities(td, auths)
	return ks, nil
}

// list returns the published keys in (CreatedAt, kid) order.
func (ks *jwtKeySet) list() []*jwtKey {
	out := make([]*jwtKey, 0, len(ks.keys))
	for _, k := range ks.keys {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b *jwtKey) int { return keyCompare(a.rec, b.rec) })
	return out
}

// parseJWTKey reads the public half of a JWT key record and checks that
// its id is the key's thumbprint.
func parseJWTKey(rec storage.Key) (*jwtKey, error) {
	pub, err := x509.ParsePKIXPublicKey(rec.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca: JWT key %s: parsing public key: %w", rec.ID, err)
	}
	if p, ok := pub.(*ecdsa.PublicKey); !ok || p.Curve != elliptic.P256() {
		return nil, fmt.Errorf("ca: JWT key %s: %T is not an ECDSA P-256 key", rec.ID, pub)
	}
	kid, err := jose.Thumbprint(&jose.JSONWebKey{Key: pub})
	if err != nil {
		return nil, fmt.Errorf("ca: JWT key %s: %w", rec.ID, err)
	}
	if kid != rec.ID {
		return nil, fmt.Errorf("ca: JWT key %s: the record's id is not the thumbprint %s of its public key", rec.ID, kid)
	}
	return &jwtKey{id: kid, pub: pub, rec: rec}, nil
}

// createJWTKey generates a JWT signing key, writes its file and records
// it (file first, as saveKey does) in state, due to sign from activates
// for JWTKeyTTL. Its NotAfter, which bounds the exp of its tokens, leaves
// room for a rotation that comes late.
func createJWTKey(ctx context.Context, cfg *Config, activates time.Time, state storage.KeyState) (*jwtKey, error) {
	priv, ref, err := cfg.keys.create(ctx, kindJWT, func(pkix []byte) (string, error) {
		pub, err := x509.ParsePKIXPublicKey(pkix)
		if err != nil {
			return "", err
		}
		kid, err := jose.Thumbprint(&jose.JSONWebKey{Key: pub})
		return kindJWT + "-" + kid + ".key", err
	})
	if err != nil {
		return nil, fmt.Errorf("ca: JWT key: %w", err)
	}
	kid, err := jose.Thumbprint(&jose.JSONWebKey{Key: priv.Public()})
	if err != nil {
		return nil, fmt.Errorf("ca: JWT key thumbprint: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	retires := activates.Add(cfg.JWTKeyTTL).UTC()
	rec := storage.Key{
		ID: kid, Kind: kindJWT, PublicKey: pub, PrivateRef: ref, Owner: cfg.ReplicaID,
		CreatedAt: cfg.Time().UTC(), NotAfter: retires.Add(cfg.JWTPrepareLead + DefaultJWTTTL + Backdate), State: state,
		ActivatesAt: activates.UTC(), RetiresAt: retires,
	}
	if err := saveKey(ctx, cfg, rec); err != nil {
		return nil, err
	}
	signer, err := newJWTSigner(kid, priv)
	if err != nil {
		return nil, err
	}
	return &jwtKey{id: kid, pub: priv.Public(), rec: rec, signer: signer}, nil
}

// loadJWTSigner reads the private key of k from the key directory.
func loadJWTSigner(ks keyStore, k *jwtKey) (jose.Signer, error) {
	s, err := ks.open(keyRef{k.rec.ID, k.rec.PrivateRef}, k.pub)
	if err != nil {
		return nil, err
	}
	return newJWTSigner(k.id, s)
}

// jwtRetiresAt is when the active JWT key k is due to be replaced.
func (c *Config) jwtRetiresAt(k *jwtKey) time.Time {
	if !k.rec.RetiresAt.IsZero() {
		return k.rec.RetiresAt
	}
	return cmp.Or(k.rec.ActivatesAt, k.rec.CreatedAt).Add(c.JWTKeyTTL)
}

// newJWTSigner prepares the JWS signer of a key: ES256, with the kid and
// typ JWT in the protected header.
func newJWTSigner(kid string, s crypto.Signer) (jose.Signer, error) {
	opts := new(jose.SignerOptions).WithType("JWT")
	var key any = jose.JSONWebKey{Key: s, KeyID: kid}
	if _, ok := s.(*ecdsa.PrivateKey); !ok {
		// A key held elsewhere (a KMS): go-jose signs through the
		// crypto.Signer and takes the kid from the header option.
		key = jose.NewOpaqueSigner(s)
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jwtAlg, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("ca: JWT signer for key %s: %w", kid, err)
	}
	return signer, nil
}

// JWKS returns the JWT bundle of the trust domain as an RFC 7517 JWK Set
// document: every published JWT key with its kid, use "sig" and alg ES256.
// It is built once per key change and must not be modified.
func (s *Snapshot) JWKS() []byte { return s.jwt.jwks }

// JWTBundle returns the JWT bundle of the trust domain.
func (s *Snapshot) JWTBundle() *jwtbundle.Bundle { return s.jwt.bundle }

// JWTIssuer returns the iss claim of the tokens the authority signs; empty
// when none is configured.
func (a *Authority) JWTIssuer() string { return a.cfg.JWTIssuer }

// ValidateJWTIssuer checks a Config.JWTIssuer: an https URL (http only for
// a loopback host) with a host, no query, no fragment and no user info, as
// OpenID Connect Discovery requires of an issuer.
func ValidateJWTIssuer(iss string) error {
	if iss == "" {
		return nil
	}
	u, err := url.Parse(iss)
	switch {
	case err != nil:
		return fmt.Errorf("ca: JWT issuer %q: %w", iss, err)
	case u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())):
		return fmt.Errorf("ca: JWT issuer %q must be an https URL", iss)
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(iss, "/"):
		return fmt.Errorf("ca: JWT issuer %q must be a URL with a host and no user info, query, fragment or trailing slash", iss)
	}
	return nil
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// checkAudience validates the audience of a JWT-SVID request.
func checkAudience(audience []string) error {
	if len(audience) == 0 {
		return invalid("audience", "", "at least one audience is required")
	}
	if len(audience) > MaxJWTAudiences {
		return invalid("audience", strings.Join(audience[:3], ",")+",...", "more than %d audiences", MaxJWTAudiences)
	}
	for _, a := range audience {
		switch {
		case a == "":
			return invalid("audience", a, "must not be empty")
		case len(a) > MaxJWTAudienceLen:
			return invalid("audience", a[:32]+"...", "longer than %d bytes", MaxJWTAudienceLen)
		case !utf8.ValidString(a):
			return invalid("audience", a, "is not valid UTF-8")
		}
	}
	return nil
}

// jwtPayload is the claim set badge signs, in the order it is encoded.
type jwtPayload struct {
	Aud any    `json:"aud"` // a string for one audience, else a list
	Exp int64  `json:"exp"`
	Iat int64  `json:"iat"`
	Iss string `json:"iss,omitempty"`
	Sub string `json:"sub"`
}

// SignJWTSVID returns a JWT-SVID for entry e of snapshot s with the given
// audience, signed by the snapshot's JWT key: sub is the entry's SPIFFE ID,
// exp at most the JWT TTL after issuance.
//
// Tokens are cached per (entry revision, audience list, key) and handed out
// again until half their life: the same workload asking again gets the same
// bearer token it already holds, and the signing cost is paid once per
// half-TTL instead of once per call. A token is never handed out when its
// ID has been revoked since it was issued; a blocked ID gets ErrBlocked.
func (a *Authority) SignJWTSVID(ctx context.Context, s *Snapshot, e *Entry, audience []string) (*JWTSVID, error) {
	return a.signJWT(s, e.ID, jwtCacheKey{entry: e.Record.ID, revision: e.Record.Revision}, audience)
}

// signJWT signs (or takes from the cache) a token for id with the audience;
// ck names the registration (entry revision or client) it is issued for.
func (a *Authority) signJWT(s *Snapshot, id spiffeid.ID, ck jwtCacheKey, audience []string) (*JWTSVID, error) {
	if err := checkAudience(audience); err != nil {
		return nil, err
	}
	now := a.cfg.Time()
	key := s.jwt.active
	ck.aud = strings.Join(audience, "\x00")
	ck.kid = key.id
	// The cached token is handed out only while revocation would accept it.
	if t := a.jwtCache.get(ck); t != nil && now.Before(t.RefreshAt()) && a.Snapshot().CheckRevocation(JWTCredential(id, t.IssuedAt)) == nil {
		return t, nil
	}

	// As for X.509-SVIDs, revocation holds issuance: checked against the
	// newest snapshot under the lock, no token of a blocked ID is signed
	// after its revocation was recorded.
	a.issueMu.RLock()
	defer a.issueMu.RUnlock()
	cur := a.Snapshot()
	now = a.cfg.Time()
	iat := time.Unix(now.Unix(), 0) // NumericDate: whole seconds
	exp := iat.Add(time.Duration(a.jwtTTL.Load()))
	if rev, ok := cur.Revoked(id); ok && !rev.Blocked && !iat.After(rev.RevokedAt) {
		// Revoked in this second: an iat rounded down would date the
		// token at or before the revocation, which refuses it. Date it at
		// the next second; exp stays within the TTL of the real issuance.
		iat = rev.RevokedAt.Truncate(time.Second).Add(time.Second)
	}
	if err := cur.CheckRevocation(JWTCredential(id, iat)); err != nil {
		return nil, fmt.Errorf("ca: JWT-SVID for %s: %w", id, err)
	}
	if exp.After(key.rec.NotAfter) {
		exp = key.rec.NotAfter
	}
	if !exp.After(iat) {
		return nil, fmt.Errorf("ca: JWT signing key %s expires at %s, too soon to sign", key.id, key.rec.NotAfter.UTC().Format(time.RFC3339))
	}
	p := jwtPayload{Exp: exp.Unix(), Iat: iat.Unix(), Iss: a.cfg.JWTIssuer, Sub: id.String()}
	if len(audience) == 1 {
		p.Aud = audience[0]
	} else {
		p.Aud = audience
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("ca: encoding JWT-SVID claims: %w", err)
	}
	obj, err := key.signer.Sign(payload)
	if err != nil {
		return nil, fmt.Errorf("ca: signing JWT-SVID for %s: %w", id, err)
	}
	token, err := obj.CompactSerialize()
	if err != nil {
		return nil, fmt.Errorf("ca: encoding JWT-SVID for %s: %w", id, err)
	}
	t := &JWTSVID{ID: id, EntryID: ck.entry, Token: token, KeyID: key.id, IssuedAt: iat, ExpiresAt: exp}
	a.jwtCache.put(ck, t, now)
	return t, nil
}

// jwtHeader is the part of the JOSE header that is checked before parsing.
type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// ValidateJWTSVID checks a JWT-SVID as the SPIFFE JWT-SVID specification
// says, against the JWT bundle of snapshot s: JWS compact serialization,
// alg ES256, a kid of the bundle, a valid signature, sub a SPIFFE ID of
// this trust domain, exp in the future, nbf and iat not in the future, iss
// (when present) the configured issuer, and audience among aud (audience
// "" skips that check, for RFC 7662 introspection, where the caller checks
// aud). On top of the specification, a token of a revoked ID issued before
// the revocation, or of a blocked ID, is refused: revocation is visible
// here, not to validators that only hold the bundle.
//
// A refusal is a *TokenError with the reason.
func (a *Authority) ValidateJWTSVID(s *Snapshot, token, audience string) (*JWTClaims, error) {
	if len(token) > MaxJWTLen {
		return nil, refuse(TokenMalformed, "longer than %d bytes", MaxJWTLen)
	}
	h, err := peekHeader(token)
	if err != nil {
		return nil, err
	}
	if h.Alg != string(jwtAlg) {
		return nil, refuse(TokenAlgorithm, "alg %q; badge signs and accepts only %s", h.Alg, jwtAlg)
	}
	if h.Typ != "" && h.Typ != "JWT" && h.Typ != "JOSE" {
		return nil, refuse(TokenMalformed, "typ %q is neither JWT nor JOSE", h.Typ)
	}
	tok, err := jwt.ParseSigned(token, []gojose.SignatureAlgorithm{gojose.ES256})
	if err != nil {
		return nil, refuse(TokenMalformed, "not a JWS in compact serialization")
	}
	var unsafe jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unsafe); err != nil {
		return nil, refuse(TokenMalformed, "claims do not decode")
	}
	id, err := spiffeid.FromString(unsafe.Subject)
	if err != nil {
		return nil, refuse(TokenMalformed, "sub %q is not a SPIFFE ID: %v", untrusted.Clip(unsafe.Subject), err)
	}
	if !id.MemberOf(s.td) {
		return nil, refuse(TokenUntrusted, "sub %s is not in trust domain %s, the only one whose JWT bundle this server holds", id, s.td.Name())
	}
	if h.Kid == "" {
		return nil, refuse(TokenUnknownKey, "the header has no kid")
	}
	key, ok := s.jwt.keys[h.Kid]
	if !ok {
		return nil, refuse(TokenUnknownKey, "kid %q is not in the JWT bundle of %s", untrusted.Clip(h.Kid), s.td.Name())
	}
	var c jwt.Claims
	all := make(map[string]any)
	if err := tok.Claims(key.pub, &c, &all); err != nil {
		return nil, refuse(TokenSignature, "the signature does not verify with key %s", key.id)
	}
	now := a.cfg.Time()
	switch {
	case c.Expiry == nil:
		return nil, refuse(TokenMalformed, "no exp claim")
	case !now.Before(c.Expiry.Time()):
		return nil, refuse(TokenExpired, "exp %s is not after now (%s)", utc(c.Expiry.Time()), utc(now))
	case c.NotBefore != nil && now.Before(c.NotBefore.Time()):
		return nil, refuse(TokenNotYetValid, "nbf %s is after now (%s)", utc(c.NotBefore.Time()), utc(now))
	case c.IssuedAt != nil && c.IssuedAt.Time().After(now.Add(jwtIATFuture)):
		return nil, refuse(TokenNotYetValid, "iat %s is in the future (now %s)", utc(c.IssuedAt.Time()), utc(now))
	case c.Issuer != "" && c.Issuer != a.cfg.JWTIssuer:
		return nil, refuse(TokenIssuer, "iss %q is not this server's issuer %q", untrusted.Clip(c.Issuer), a.cfg.JWTIssuer)
	case len(c.Audience) == 0:
		return nil, refuse(TokenMalformed, "no aud claim")
	case audience != "" && !slices.Contains(c.Audience, audience):
		return nil, refuse(TokenAudience, "%q is not among aud %q", untrusted.Clip(audience), c.Audience)
	}
	var iat time.Time
	if c.IssuedAt != nil {
		iat = c.IssuedAt.Time()
	}
	if err := s.CheckRevocation(JWTCredential(id, iat)); err != nil {
		return nil, refuse(TokenRevoked, "%v", err)
	}
	return &JWTClaims{
		ID: id, Audience: c.Audience, Issuer: c.Issuer, IssuedAt: iat,
		ExpiresAt: c.Expiry.Time(), KeyID: key.id, Claims: all,
	}, nil
}

// peekHeader decodes the protected header of a compact JWS without
// verifying anything, so that the algorithm and kid can be judged before
// the token is parsed.
func peekHeader(token string) (jwtHeader, error) {
	var h jwtHeader
	if strings.Count(token, ".") != 2 {
		return h, refuse(TokenMalformed, "not a JWS in compact serialization (want three dot-separated parts)")
	}
	raw, err := base64.RawURLEncoding.DecodeString(token[:strings.IndexByte(token, '.')])
	if err != nil {
		return h, refuse(TokenMalformed, "the header is not base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&h); err != nil {
		return h, refuse(TokenMalformed, "the header is not a JSON object")
	}
	return h, nil
}

func utc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// jwtCacheKey identifies the tokens one request would get: the entry at
// one revision, the audience list in order, and the key that signs. A new
// snapshot with a new signing key (or a new entry revision) therefore
// misses the tokens cached before it; revocation is checked on every hit.
type jwtCacheKey struct {
	entry    string
	revision uint64
	aud      string // audiences joined by NUL
	kid      string // the signing key
}

// jwtCache holds the tokens the Authority signed, bounded in size.
type jwtCache struct {
	mu sync.RWMutex
	m  map[jwtCacheKey]*JWTSVID
}

func (c *jwtCache) get(k jwtCacheKey) *JWTSVID {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[k]
}

func (c *jwtCache) put(k jwtCacheKey, t *JWTSVID, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[jwtCacheKey]*JWTSVID)
	}
	if len(c.m) >= jwtCacheMax {
		for k, old := range c.m {
			if !now.Before(old.RefreshAt()) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= jwtCacheMax {
			// Every token is still fresh: so many audiences in one
			// half-TTL is unusual. Start over rather than grow.
			clear(c.m)
		}
	}
	c.m[k] = t
}
