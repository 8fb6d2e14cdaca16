package sdk

// JWT-SVIDs: for calls that cross a proxy or a queue terminating TLS, the
// caller proves itself with a short-lived signed token instead of its
// certificate. JWTSource fetches and caches tokens, follows the JWT
// bundles, and validates tokens locally; RequireJWT and NewJWTTransport put
// them on HTTP.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// DefaultJWTCacheSize is how many validated tokens a JWTSource remembers.
const DefaultJWTCacheSize = 10000

// maxTokenSlots is the number of (subject, audiences) past which expired
// cached tokens are dropped.
const maxTokenSlots = 1024

// JWTSource fetches JWT-SVIDs from the Workload API, caching one per
// (subject, audiences) until half its lifetime has passed, and validates
// JWT-SVIDs locally against the JWT bundles it follows on a FetchJWTBundles
// stream, caching each validated token until it expires.
//
// JWTSource implements go-spiffe's jwtsvid.Source (FetchJWTSVID) and
// jwtbundle.Source (GetJWTBundleForTrustDomain), so go-spiffe's
// jwtsvid.ParseAndValidate works with it too. It is safe for concurrent
// use.
//
// Local validation checks what the bundle can prove: signature, key, trust
// domain, expiry and audience. It cannot see revocations of SPIFFE IDs (no
// Workload API message carries them for tokens); a token of an ID revoked
// after it was issued stays valid here until it expires, at most the JWT
// TTL (five minutes). Validate through the Workload API's ValidateJWTSVID,
// or the server's introspection endpoint, where that matters.
type JWTSource struct {
	cfg    sourceConfig
	addr   string
	dialer *dialer
	conn   *grpc.ClientConn
	api    workload.SpiffeWorkloadAPIClient

	bundles atomic.Pointer[jwtBundles]

	mu      sync.Mutex
	tokens  map[string]*tokenSlot
	err     error         // why the bundle stream is down; nil while it is up
	changed chan struct{} // closed at the next change of the bundles

	cache validationCache

	ready     chan struct{}
	readyOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
	closed    atomic.Bool
}

// jwtBundles is one set of JWT bundles as received, with a generation that
// changes when the keys do: cached validations of older generations are
// not used.
type jwtBundles struct {
	set *jwtbundle.Set
	raw map[string][]byte
	gen uint64
}

// tokenSlot holds the cached token of one (subject, audiences); its mutex
// makes concurrent callers share one fetch.
type tokenSlot struct {
	mu      sync.Mutex
	svid    atomic.Pointer[jwtsvid.SVID]
	refresh atomic.Int64 // unix nanoseconds
}

// NewJWTSource connects to the Workload API (the address and options as
// for NewX509Source) and returns once the first JWT bundles have arrived.
// ctx bounds only that wait. The source then follows the bundle stream in
// the background, reconnecting with backoff, until Close. WithSVIDID sets
// the subject FetchJWTSVID asks for when its params name none.
func NewJWTSource(ctx context.Context, opts ...SourceOption) (*JWTSource, error) {
	cfg, addr, d, err := newSourceConfig(opts)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(d.target, d.options()...)
	if err != nil {
		return nil, fmt.Errorf("sdk: Workload API at %s: %w", addr, err)
	}
	bg, cancel := context.WithCancel(context.Background())
	s := &JWTSource{
		cfg: cfg, addr: addr, dialer: d, conn: conn, api: workload.NewSpiffeWorkloadAPIClient(conn),
		tokens: make(map[string]*tokenSlot), changed: make(chan struct{}),
		cache: validationCache{max: DefaultJWTCacheSize, m: make(map[[sha256.Size]byte]*validated)},
		ready: make(chan struct{}), cancel: cancel, done: make(chan struct{}),
	}
	go s.run(bg)
	select {
	case <-s.ready:
		return s, nil
	case <-ctx.Done():
		s.mu.Lock()
		last := s.err
		s.mu.Unlock()
		s.Close()
		if last != nil {
			return nil, fmt.Errorf("sdk: no JWT bundle from the Workload API at %s: %w (last error: %w)", addr, ctx.Err(), last)
		}
		return nil, fmt.Errorf("sdk: no JWT bundle from the Workload API at %s: %w", addr, ctx.Err())
	}
}

// Close stops following the Workload API and closes the connection. It is
// safe to call more than once.
func (s *JWTSource) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cancel()
	<-s.done
	return s.conn.Close()
}

func withWorkloadHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

// run follows FetchJWTBundles until ctx is cancelled.
func (s *JWTSource) run(ctx context.Context) {
	defer close(s.done)
	bo := backoff{min: s.cfg.minBackoff, max: s.cfg.maxBackoff}
	for {
		err := s.follow(ctx, &bo)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		wait := bo.next()
		s.cfg.log.Debug("badge sdk: JWT bundle stream down", slog.String(keyAddr, s.addr), slog.Any(keyError, err), slog.Duration(keyRetryIn, wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (s *JWTSource) follow(ctx context.Context, bo *backoff) error {
	ctx, cancel := context.WithCancel(withWorkloadHeader(ctx))
	defer cancel()
	stream, err := s.api.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	if err != nil {
		return s.dialer.explain(err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return s.dialer.explain(err)
		}
		if err := s.applyBundles(resp.GetBundles()); err != nil {
			s.cfg.log.Warn("badge sdk: rejected JWT bundles; keeping the previous ones", slog.String(keyAddr, s.addr), slog.Any(keyError, err))
			continue
		}
		s.mu.Lock()
		s.err = nil
		s.mu.Unlock()
		bo.reset()
	}
}

// applyBundles makes raw (JWKS by trust domain SPIFFE ID) the current
// bundles; unchanged keys keep the generation, and so the cached
// validations.
func (s *JWTSource) applyBundles(raw map[string][]byte) error {
	if len(raw) == 0 {
		return errors.New("sdk: the Workload API sent no JWT bundle")
	}
	old := s.bundles.Load()
	if old != nil && maps.EqualFunc(old.raw, raw, func(a, b []byte) bool { return string(a) == string(b) }) {
		return nil
	}
	set := jwtbundle.NewSet()
	for name, jwks := range raw {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return fmt.Errorf("sdk: JWT bundle key %q: %w", name, err)
		}
		b, err := jwtbundle.Parse(td, jwks)
		if err != nil {
			return fmt.Errorf("sdk: JWT bundle of %s: %w", td, err)
		}
		set.Add(b)
	}
	next := &jwtBundles{set: set, raw: maps.Clone(raw), gen: 1}
	if old != nil {
		next.gen = old.gen + 1
	}
	s.bundles.Store(next)
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	s.readyOnce.Do(func() { close(s.ready) })
	return nil
}

// Changed returns a channel that is closed when the JWT bundles next
// change. Take the channel before reading the bundles, then wait on it.
func (s *JWTSource) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// GetJWTBundleForTrustDomain returns the current JWT bundle of td. It
// implements go-spiffe's jwtbundle.Source.
func (s *JWTSource) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	b := s.bundles.Load()
	if b == nil {
		return nil, errors.New("sdk: no JWT bundle received yet")
	}
	return b.set.GetJWTBundleForTrustDomain(td)
}

// FetchJWTSVID returns a JWT-SVID for params.Audience (and
// ExtraAudiences). A token is fetched once and handed out again until half
// its lifetime has passed; if the Workload API cannot be reached then, the
// cached token is returned until it expires. It implements go-spiffe's
// jwtsvid.Source.
func (s *JWTSource) FetchJWTSVID(ctx context.Context, params jwtsvid.Params) (*jwtsvid.SVID, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if params.Audience == "" {
		return nil, errors.New("sdk: FetchJWTSVID: an audience is required")
	}
	if params.Subject.IsZero() {
		params.Subject = s.cfg.id
	}
	aud := append([]string{params.Audience}, params.ExtraAudiences...)
	key := params.Subject.String() + "\x00" + strings.Join(aud, "\x00")
	now := s.cfg.now()
	s.mu.Lock()
	slot, ok := s.tokens[key]
	if !ok {
		if len(s.tokens) >= maxTokenSlots {
			for k, old := range s.tokens {
				if t := old.svid.Load(); t == nil || !now.Before(t.Expiry) {
					delete(s.tokens, k)
				}
			}
		}
		slot = &tokenSlot{}
		s.tokens[key] = slot
	}
	s.mu.Unlock()

	if t := slot.svid.Load(); t != nil && now.UnixNano() < slot.refresh.Load() {
		return t, nil
	}
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if t := slot.svid.Load(); t != nil && s.cfg.now().UnixNano() < slot.refresh.Load() {
		return t, nil // fetched by another caller meanwhile
	}
	t, err := s.fetch(ctx, params.Subject, aud)
	if err != nil {
		if old := slot.svid.Load(); old != nil && s.cfg.now().Before(old.Expiry) {
			s.cfg.log.Warn("badge sdk: JWT-SVID refresh failed; using the cached token until it expires",
				slog.String(keyAddr, s.addr), slog.Any(keyError, err), slog.Time(keyExpiresAt, old.Expiry))
			return old, nil
		}
		return nil, err
	}
	slot.svid.Store(t)
	slot.refresh.Store(refreshAt(t, now).UnixNano())
	return t, nil
}

// refreshAt is half-way between the token's iat (or when it was fetched,
// if it has none) and its exp.
func refreshAt(t *jwtsvid.SVID, fetched time.Time) time.Time {
	issued := fetched
	if iat, ok := t.Claims["iat"].(float64); ok && iat > 0 {
		issued = time.Unix(int64(iat), 0)
	}
	return issued.Add(t.Expiry.Sub(issued) / 2)
}

func (s *JWTSource) fetch(ctx context.Context, subject spiffeid.ID, aud []string) (*jwtsvid.SVID, error) {
	req := &workload.JWTSVIDRequest{Audience: aud}
	if !subject.IsZero() {
		req.SpiffeId = subject.String()
	}
	resp, err := s.api.FetchJWTSVID(withWorkloadHeader(ctx), req)
	if err != nil {
		return nil, fmt.Errorf("sdk: FetchJWTSVID from %s: %w", s.addr, s.dialer.explain(err))
	}
	if len(resp.GetSvids()) == 0 {
		return nil, errors.New("sdk: FetchJWTSVID: the response holds no JWT-SVID")
	}
	m := resp.Svids[0]
	t, err := jwtsvid.ParseInsecure(m.GetSvid(), aud)
	if err != nil {
		return nil, fmt.Errorf("sdk: FetchJWTSVID: %w", err)
	}
	if m.GetSpiffeId() != t.ID.String() {
		return nil, fmt.Errorf("sdk: FetchJWTSVID: spiffe_id %q does not match the token's sub %s", m.GetSpiffeId(), t.ID)
	}
	t.Hint = m.GetHint()
	return t, nil
}

// ValidateJWTSVID validates token for audience locally: go-spiffe's
// jwtsvid.ParseAndValidate against the bundles this source follows, and,
// stricter than go-spiffe, no leeway after exp. A token validated before is
// found in a cache (by the SHA-256 of the token) and only its expiry and
// audience are checked again, until the keys change. The returned SVID is
// shared with other callers: do not modify it.
//
// A refusal is a *TokenError with the reason. Revocation of the token's
// SPIFFE ID is not checked (see JWTSource).
func (s *JWTSource) ValidateJWTSVID(token, audience string) (*jwtsvid.SVID, error) {
	if audience == "" {
		return nil, &TokenError{Reason: TokenAudience, Detail: "no audience to validate against"}
	}
	b := s.bundles.Load()
	if b == nil || s.closed.Load() {
		return nil, &TokenError{Reason: TokenUntrusted, Detail: "no JWT bundle", Err: ErrClosed}
	}
	now := s.cfg.now()
	sum := sha256.Sum256([]byte(token))
	if v := s.cache.get(sum, b.gen); v != nil {
		if !now.Before(v.svid.Expiry) {
			return nil, expired(v.svid.Expiry, now)
		}
		if !slices.Contains(v.svid.Audience, audience) {
			return nil, wrongAudience(v.svid.Audience, audience)
		}
		return v.svid, nil
	}
	svid, err := validate(token, audience, b.set, now)
	if err != nil {
		return nil, err
	}
	s.cache.put(sum, &validated{svid: svid, gen: b.gen}, now)
	return svid, nil
}

// validate is the uncached validation.
func validate(token, audience string, bundles jwtbundle.Source, now time.Time) (*jwtsvid.SVID, error) {
	svid, err := jwtsvid.ParseAndValidate(token, bundles, []string{audience})
	if err != nil {
		return nil, classify(token, audience, bundles, now, err)
	}
	if !now.Before(svid.Expiry) {
		return nil, expired(svid.Expiry, now)
	}
	return svid, nil
}

// TokenReason says why a JWT-SVID was refused.
type TokenReason int

// The reasons a JWT-SVID can be refused.
const (
	// TokenMissing: the request carries no bearer token.
	TokenMissing TokenReason = iota + 1
	// TokenMalformed: not a JWS in compact serialization, or a required
	// claim (sub, exp) is missing or invalid.
	TokenMalformed
	// TokenAlgorithm: the header's alg is not an asymmetric algorithm
	// SPIFFE allows ("none" and HMAC included).
	TokenAlgorithm
	// TokenUntrusted: there is no JWT bundle for the trust domain of sub.
	TokenUntrusted
	// TokenUnknownKey: no kid, or the bundle has no key with this kid.
	TokenUnknownKey
	// TokenSignature: the signature does not verify.
	TokenSignature
	// TokenExpired: exp has passed.
	TokenExpired
	// TokenAudience: the audience is not among the token's aud.
	TokenAudience
	// TokenNotAuthorized: the token is valid but the authorizer refused
	// its SPIFFE ID (RequireJWT).
	TokenNotAuthorized
)

// String returns a short description such as "expired".
func (r TokenReason) String() string {
	switch r {
	case TokenMissing:
		return "no token"
	case TokenMalformed:
		return "malformed"
	case TokenAlgorithm:
		return "unsupported algorithm"
	case TokenUntrusted:
		return "untrusted trust domain"
	case TokenUnknownKey:
		return "unknown signing key"
	case TokenSignature:
		return "bad signature"
	case TokenExpired:
		return "expired"
	case TokenAudience:
		return "wrong audience"
	case TokenNotAuthorized:
		return "not authorized"
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// TokenError is the refusal of a JWT-SVID. Use errors.As to get it.
type TokenError struct {
	// ID is the token's sub, when it could be read.
	ID spiffeid.ID
	// Reason is why the token was refused.
	Reason TokenReason
	// Detail explains the refusal in words; it never contains the token.
	Detail string
	// Err is the underlying error, if any (go-spiffe's, or an authorizer's).
	Err error
}

func (e *TokenError) Error() string {
	var b strings.Builder
	b.WriteString("sdk: JWT-SVID")
	if !e.ID.IsZero() {
		b.WriteString(" of ")
		b.WriteString(e.ID.String())
	}
	b.WriteString(" refused: ")
	b.WriteString(e.Reason.String())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns Err.
func (e *TokenError) Unwrap() error { return e.Err }

func expired(exp, now time.Time) error {
	return &TokenError{Reason: TokenExpired, Detail: fmt.Sprintf("exp %s is not after now (%s)",
		exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
}

func wrongAudience(aud []string, want string) error {
	return &TokenError{Reason: TokenAudience, Detail: fmt.Sprintf("%q is not among aud %q", want, aud)}
}

// allowedAlgs are the algorithms go-spiffe accepts for JWT-SVIDs.
var allowedAlgs = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}

// classify explains why go-spiffe refused token: it runs the checks in
// order on the unverified token and names the first that fails; what is
// left is the signature.
func classify(token, audience string, bundles jwtbundle.Source, now time.Time, err error) error {
	malformed := func(detail string) error {
		return &TokenError{Reason: TokenMalformed, Detail: detail, Err: err}
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return malformed("not a JWS in compact serialization")
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if raw, derr := base64.RawURLEncoding.DecodeString(parts[0]); derr != nil || json.Unmarshal(raw, &h) != nil {
		return malformed("the header does not decode")
	}
	if !slices.Contains(allowedAlgs, h.Alg) {
		return &TokenError{Reason: TokenAlgorithm, Detail: fmt.Sprintf("alg %q", truncated(h.Alg)), Err: err}
	}
	var c struct {
		Sub string          `json:"sub"`
		Exp json.Number     `json:"exp"`
		Aud json.RawMessage `json:"aud"`
	}
	if raw, derr := base64.RawURLEncoding.DecodeString(parts[1]); derr != nil || json.Unmarshal(raw, &c) != nil {
		return malformed("the claims do not decode")
	}
	id, perr := spiffeid.FromString(c.Sub)
	if perr != nil {
		return malformed(fmt.Sprintf("sub %q is not a SPIFFE ID", truncated(c.Sub)))
	}
	b, berr := bundles.GetJWTBundleForTrustDomain(id.TrustDomain())
	if berr != nil {
		return &TokenError{ID: id, Reason: TokenUntrusted, Detail: "no JWT bundle for trust domain " + id.TrustDomain().Name(), Err: err}
	}
	if h.Kid == "" {
		return &TokenError{ID: id, Reason: TokenUnknownKey, Detail: "the header has no kid", Err: err}
	}
	if _, ok := b.FindJWTAuthority(h.Kid); !ok {
		return &TokenError{ID: id, Reason: TokenUnknownKey, Detail: fmt.Sprintf("kid %q is not in the bundle of %s", truncated(h.Kid), id.TrustDomain().Name()), Err: err}
	}
	if exp, xerr := c.Exp.Float64(); xerr != nil {
		return &TokenError{ID: id, Reason: TokenMalformed, Detail: "no exp claim", Err: err}
	} else if !now.Before(time.Unix(int64(exp), 0)) {
		te := expired(time.Unix(int64(exp), 0), now).(*TokenError)
		te.ID, te.Err = id, err
		return te
	}
	var aud []string
	if json.Unmarshal(c.Aud, &aud) != nil {
		var one string
		if json.Unmarshal(c.Aud, &one) == nil {
			aud = []string{one}
		}
	}
	if !slices.Contains(aud, audience) {
		te := wrongAudience(aud, audience).(*TokenError)
		te.ID, te.Err = id, err
		return te
	}
	return &TokenError{ID: id, Reason: TokenSignature, Err: err}
}

// truncated shortens a value taken from a token for an error message. It
// copies internal/untrusted.Clip, which the SDK may not import.
func truncated(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// validated is a cached validation: the SVID and the bundle generation it
// was validated with.
type validated struct {
	svid *jwtsvid.SVID
	gen  uint64
}

// validationCache maps the SHA-256 of a token to its validation, bounded
// in size.
type validationCache struct {
	mu  sync.RWMutex
	max int
	m   map[[sha256.Size]byte]*validated
}

func (c *validationCache) get(sum [sha256.Size]byte, gen uint64) *validated {
	c.mu.RLock()
	v := c.m[sum]
	c.mu.RUnlock()
	if v == nil || v.gen != gen {
		return nil
	}
	return v
}

func (c *validationCache) put(sum [sha256.Size]byte, v *validated, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, old := range c.m {
			if !now.Before(old.svid.Expiry) || old.gen != v.gen {
				delete(c.m, k)
			}
		}
		// Still full of live tokens: forget an arbitrary quarter.
		for k := range c.m {
			if len(c.m) < c.max*3/4 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[sum] = v
}

// A JWTValidator validates JWT-SVIDs for an audience. *JWTSource is one;
// wrap go-spiffe's jwtsvid.ParseAndValidate or the Workload API's
// ValidateJWTSVID to use another.
type JWTValidator interface {
	ValidateJWTSVID(token, audience string) (*jwtsvid.SVID, error)
}

type jwtContextKey struct{}

// JWTSVIDFromRequest returns the JWT-SVID that RequireJWT validated for r.
func JWTSVIDFromRequest(r *http.Request) (*jwtsvid.SVID, bool) {
	svid, ok := r.Context().Value(jwtContextKey{}).(*jwtsvid.SVID)
	return svid, ok
}

// A JWTOption configures RequireJWT.
type JWTOption func(*jwtMiddleware)

type jwtMiddleware struct {
	onRefuse func(*http.Request, *TokenError)
}

// OnJWTRefused makes RequireJWT call fn with every refusal, for logs and
// metrics: the SDK does not log.
func OnJWTRefused(fn func(r *http.Request, err *TokenError)) JWTOption {
	return func(m *jwtMiddleware) { m.onRefuse = fn }
}

// RequireJWT is middleware that passes a request to next only if it
// carries a JWT-SVID (Authorization: Bearer) that v validates for audience
// and whose SPIFFE ID authz accepts (authz receives no certificate
// chains). It answers 401 with a WWW-Authenticate: Bearer challenge (RFC
// 6750) when the token is missing or invalid, and 403 when authz refuses
// it; the body does not say why (see OnJWTRefused). Handlers get the
// validated token with JWTSVIDFromRequest.
func RequireJWT(v JWTValidator, audience string, authz Authorizer, next http.Handler, opts ...JWTOption) http.Handler {
	var m jwtMiddleware
	for _, o := range opts {
		o(&m)
	}
	refuse := func(w http.ResponseWriter, r *http.Request, status int, te *TokenError) {
		if m.onRefuse != nil {
			m.onRefuse(r, te)
		}
		if status == http.StatusUnauthorized {
			challenge := `Bearer realm="badge"`
			if te.Reason != TokenMissing {
				challenge += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
		}
		http.Error(w, http.StatusText(status), status)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			refuse(w, r, http.StatusUnauthorized, &TokenError{Reason: TokenMissing, Detail: "no Authorization: Bearer header"})
			return
		}
		svid, err := v.ValidateJWTSVID(token, audience)
		if err != nil {
			var te *TokenError
			if !errors.As(err, &te) {
				te = &TokenError{Reason: TokenSignature, Err: err}
			}
			refuse(w, r, http.StatusUnauthorized, te)
			return
		}
		if authz == nil {
			refuse(w, r, http.StatusForbidden, &TokenError{ID: svid.ID, Reason: TokenNotAuthorized, Detail: "no authorizer"})
			return
		}
		if err := authz(svid.ID, nil); err != nil {
			refuse(w, r, http.StatusForbidden, &TokenError{ID: svid.ID, Reason: TokenNotAuthorized, Err: err})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), jwtContextKey{}, svid)))
	})
}

// bearerToken returns the token of an Authorization: Bearer header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// NewJWTTransport returns a RoundTripper that adds a JWT-SVID for audience
// from src (a *JWTSource, or go-spiffe's workloadapi.JWTSource) to each
// request as Authorization: Bearer, replacing any Authorization header,
// and sends it with base (http.DefaultTransport when nil). The request is
// cloned, not modified. Send tokens only over TLS.
func NewJWTTransport(src jwtsvid.Source, audience string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &jwtTransport{src: src, audience: audience, base: base}
}

type jwtTransport struct {
	src      jwtsvid.Source
	audience string
	base     http.RoundTripper
}

func (t *jwtTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	svid, err := t.src.FetchJWTSVID(r.Context(), jwtsvid.Params{Audience: t.audience})
	if err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, err
	}
	r2 := r.Clone(r.Context())
	r2.Header.Set("Authorization", "Bearer "+svid.Marshal())
	return t.base.RoundTrip(r2)
}
