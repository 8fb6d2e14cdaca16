package public

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/storage"
)

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	Status      int
	Code        string // invalid_request, invalid_client, unsupported_grant_type, ...
	Description string
	RetryAfter  time.Duration // > 0: a Retry-After header
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Description }

func writeOAuthError(w http.ResponseWriter, e *oauthError) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="badge", charset="UTF-8"`)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(e.RetryAfter)))
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, e.Status, map[string]string{"error": e.Code, "error_description": e.Description})
}

// retrySeconds rounds a delay up to whole seconds, as Retry-After counts.
func retrySeconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

// tokenRequest is a parsed client credentials request.
type tokenRequest struct {
	ClientID     string
	ClientSecret string
	Method       string // client_secret_basic or client_secret_post
	Audience     []string
}

// parseTokenRequest parses a token request as RFC 6749 §4.4.2 and §2.3.1
// define it: an application/x-www-form-urlencoded body with
// grant_type=client_credentials and one or more audience parameters (the
// name RFC 8693 gives it); the client authenticates with HTTP Basic
// (client_secret_basic, id and secret form-encoded first) or with
// client_id and client_secret in the body (client_secret_post), not both.
// Parameters other than audience must not repeat; unknown ones (scope,
// resource) are ignored.
func parseTokenRequest(authorization, contentType string, body []byte) (tokenRequest, *oauthError) {
	var req tokenRequest
	bad := func(code, desc string) (tokenRequest, *oauthError) {
		status := http.StatusBadRequest
		if code == "invalid_client" {
			status = http.StatusUnauthorized
		}
		return tokenRequest{}, &oauthError{Status: status, Code: code, Description: desc}
	}
	if mt, _, err := mime.ParseMediaType(contentType); err != nil || mt != "application/x-www-form-urlencoded" {
		return bad("invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return bad("invalid_request", "the body is not a valid form")
	}
	for k, v := range form {
		if len(v) > 1 && k != "audience" {
			return bad("invalid_request", "parameter "+strconv.Quote(truncate(k))+" is repeated")
		}
	}
	switch gt := form.Get("grant_type"); {
	case !form.Has("grant_type"):
		return bad("invalid_request", "grant_type is required")
	case gt != "client_credentials":
		return bad("unsupported_grant_type", "only grant_type=client_credentials is supported")
	}

	bodyID, bodySecret := form.Get("client_id"), form.Get("client_secret")
	if authorization != "" {
		scheme, cred, _ := strings.Cut(authorization, " ")
		if !strings.EqualFold(scheme, "Basic") {
			return bad("invalid_client", "only HTTP Basic authentication is supported")
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
		if err != nil {
			return bad("invalid_client", "the Basic credentials are not base64")
		}
		id, secret, ok := strings.Cut(string(raw), ":")
		if !ok {
			return bad("invalid_client", "the Basic credentials lack a ':'")
		}
		// RFC 6749 §2.3.1: both are form-encoded before Basic encoding.
		if req.ClientID, err = url.QueryUnescape(id); err != nil {
			return bad("invalid_client", "the client id is not form-encoded")
		}
		if req.ClientSecret, err = url.QueryUnescape(secret); err != nil {
			return bad("invalid_client", "the client secret is not form-encoded")
		}
		if form.Has("client_secret") || (form.Has("client_id") && bodyID != req.ClientID) {
			return bad("invalid_request", "use one client authentication method: HTTP Basic or client_secret in the body, not both")
		}
		req.Method = "client_secret_basic"
	} else {
		if !form.Has("client_id") || !form.Has("client_secret") {
			return bad("invalid_client", "client authentication is required: HTTP Basic, or client_id and client_secret in the body")
		}
		req.ClientID, req.ClientSecret, req.Method = bodyID, bodySecret, "client_secret_post"
	}
	if req.ClientID == "" || len(req.ClientID) > storage.MaxIDLen {
		return bad("invalid_client", "the client id must have 1 to 2048 bytes")
	}
	req.Audience = form["audience"]
	if len(req.Audience) == 0 {
		return bad("invalid_request", "audience is required: the audience the token is for")
	}
	return req, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// tokenResponse is the RFC 6749 §5.1 success response.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// token is the client credentials endpoint.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if s.clients == nil {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeOAuthError(w, &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: "the body exceeds 64 KiB or could not be read"})
		return
	}
	req, oerr := parseTokenRequest(r.Header.Get("Authorization"), r.Header.Get("Content-Type"), body)
	audit := func(result string, attrs ...slog.Attr) {
		attrs = append(attrs, slog.String("client_id", truncate(req.ClientID)), slog.String("remote", r.RemoteAddr),
			slog.String("result", result), slog.Bool(ca.LogAudit, true))
		level := slog.LevelInfo
		if result != "issued" {
			level = slog.LevelWarn
		}
		s.log.LogAttrs(r.Context(), level, "token request", attrs...)
	}
	if oerr != nil {
		audit(oerr.Code, slog.String("reason", oerr.Description))
		writeOAuthError(w, oerr)
		return
	}
	if wait := s.lim.blocked(req.ClientID); wait > 0 {
		audit("rate_limited", slog.Duration("retry_after", wait))
		writeOAuthError(w, &oauthError{Status: http.StatusTooManyRequests, Code: "temporarily_unavailable",
			Description: "too many failed attempts for this client; retry later", RetryAfter: wait})
		return
	}
	if !s.lim.allowCheck() {
		audit("overloaded")
		writeOAuthError(w, &oauthError{Status: http.StatusTooManyRequests, Code: "temporarily_unavailable",
			Description: "too many client authentications; retry later", RetryAfter: time.Second})
		return
	}
	select {
	case s.checking <- struct{}{}:
	case <-r.Context().Done():
		return
	}
	c, err := s.clients.AuthenticateClient(r.Context(), req.ClientID, req.ClientSecret)
	<-s.checking
	switch {
	case errors.Is(err, ca.ErrClientAuth):
		wait := s.lim.fail(req.ClientID)
		audit("invalid_client", slog.String("method", req.Method), slog.Duration("retry_after", wait))
		writeOAuthError(w, &oauthError{Status: http.StatusUnauthorized, Code: "invalid_client",
			Description: "unknown client or wrong secret", RetryAfter: wait})
		return
	case err != nil:
		s.log.Error("client authentication failed", slog.Any(ca.LogError, err))
		audit("server_error")
		writeOAuthError(w, &oauthError{Status: http.StatusInternalServerError, Code: "server_error", Description: "client authentication failed"})
		return
	}
	s.lim.succeed(req.ClientID)
	tok, err := s.clients.SignClientJWTSVID(r.Context(), s.auth.Snapshot(), c, req.Audience)
	var inv *ca.InvalidError
	switch {
	case errors.Is(err, ca.ErrBlocked):
		audit("unauthorized_client", slog.String(ca.LogSPIFFEID, c.SPIFFEID))
		writeOAuthError(w, &oauthError{Status: http.StatusBadRequest, Code: "unauthorized_client", Description: c.SPIFFEID + " is blocked"})
		return
	case errors.As(err, &inv):
		audit("invalid_target", slog.String("reason", err.Error()))
		writeOAuthError(w, &oauthError{Status: http.StatusBadRequest, Code: "invalid_target", Description: err.Error()})
		return
	case err != nil:
		s.log.Error("signing a client's JWT-SVID failed", slog.Any(ca.LogError, err))
		audit("server_error")
		writeOAuthError(w, &oauthError{Status: http.StatusInternalServerError, Code: "server_error", Description: "signing failed"})
		return
	}
	audit("issued", slog.String(ca.LogSPIFFEID, c.SPIFFEID), slog.Any("audience", req.Audience))
	w.Header().Set("Pragma", "no-cache")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(tokenResponse{
		AccessToken: tok.Token,
		TokenType:   "Bearer",
		ExpiresIn:   max(int64(tok.ExpiresAt.Sub(s.now())/time.Second), 0),
	})
}

// Rate limits of client authentication.
const (
	// firstDelay is how long a client waits after one failure; each
	// further failure doubles it, up to maxDelay.
	firstDelay = time.Second
	maxDelay   = 5 * time.Minute
	// forgetAfter: a client with no failure for this long starts over.
	forgetAfter = 15 * time.Minute
	// maxTracked bounds the clients whose failures are remembered.
	maxTracked = 10000
)

// limiter slows down guessing: per client ID (known or not), each failure
// blocks the ID for a delay that doubles with every consecutive failure;
// over all clients, a token bucket bounds the rate of secret checks, each
// of which costs an argon2id hash.
type limiter struct {
	now func() time.Time

	mu      sync.Mutex
	clients map[[sha256.Size]byte]*failures // by SHA-256 of the presented client ID: bounded memory
	tokens  float64
	last    time.Time
	rate    float64
	burst   float64
}

type failures struct {
	n        int
	until    time.Time // blocked until
	lastFail time.Time
}

func newLimiter(now func() time.Time, rate, burst float64) *limiter {
	return &limiter{now: now, clients: make(map[[sha256.Size]byte]*failures), tokens: burst, last: now(), rate: rate, burst: burst}
}

// blocked returns how long id must still wait, or 0.
func (l *limiter) blocked(id string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.clients[sha256.Sum256([]byte(id))]
	if !ok {
		return 0
	}
	return max(f.until.Sub(l.now()), 0)
}

// allowCheck takes one secret check from the global bucket.
func (l *limiter) allowCheck() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// fail records a failure of id and returns how long it is now blocked.
func (l *limiter) fail(id string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	key := sha256.Sum256([]byte(id))
	f, ok := l.clients[key]
	if ok && now.Sub(f.lastFail) > forgetAfter {
		f.n = 0
	}
	if !ok {
		if len(l.clients) >= maxTracked {
			l.evict(now)
		}
		f = &failures{}
		l.clients[key] = f
	}
	f.n++
	d := maxDelay
	if f.n <= 20 {
		d = min(firstDelay<<(f.n-1), maxDelay)
	}
	f.lastFail, f.until = now, now.Add(d)
	return d
}

// succeed forgets the failures of id.
func (l *limiter) succeed(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.clients, sha256.Sum256([]byte(id)))
}

// evict forgets clients not blocked and without a recent failure; if all
// are, it forgets them all: the global bucket still bounds the rate.
func (l *limiter) evict(now time.Time) {
	for k, f := range l.clients {
		if now.After(f.until) && now.Sub(f.lastFail) > forgetAfter {
			delete(l.clients, k)
		}
	}
	if len(l.clients) >= maxTracked {
		clear(l.clients)
	}
}
