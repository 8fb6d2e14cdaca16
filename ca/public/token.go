package public

import (
	"context"
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/connlimit"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/untrusted"
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
			return bad("invalid_request", "parameter "+strconv.Quote(untrusted.Clip(k))+" is repeated")
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
	now := s.now()
	s.audit.flushDue(now)
	addr := addressKey(r.RemoteAddr)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		s.refuse(w, r, now, addr, "", &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: "the body exceeds 64 KiB or could not be read"})
		return
	}
	req, oerr := parseTokenRequest(r.Header.Get("Authorization"), r.Header.Get("Content-Type"), body)
	if oerr != nil {
		// Cheap to send and free of any check: one audit line per address
		// and interval, whatever client_id it names.
		s.refuse(w, r, now, addr, "", oerr, slog.String("reason", oerr.Description))
		return
	}
	if wait, why := s.lim.admit(addr, req.ClientID); wait > 0 {
		client, desc := req.ClientID, "too many failed attempts for this client from your address; retry later"
		switch why {
		case limitAddress:
			client, desc = "", "too many failed attempts from your address; retry later"
		case limitAddressRate:
			client, desc = "", "too many client authentications from your address; retry later"
		case limitOverall:
			client, desc = "", "too many client authentications; retry later"
		}
		s.refuse(w, r, now, addr, client, &oauthError{Status: http.StatusTooManyRequests, Code: "temporarily_unavailable",
			Description: desc, RetryAfter: wait}, slog.String("limit", string(why)), slog.Duration("retry_after", wait))
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
		wait := s.lim.fail(addr, req.ClientID)
		s.refuse(w, r, s.now(), addr, req.ClientID, &oauthError{Status: http.StatusUnauthorized, Code: "invalid_client",
			Description: "unknown client or wrong secret", RetryAfter: wait}, slog.String("method", req.Method), slog.Duration("retry_after", wait))
		return
	case err != nil:
		s.log.Error("client authentication failed", slog.Any(logkey.Error, err))
		s.auditOne(r, addr, req.ClientID, "server_error")
		writeOAuthError(w, &oauthError{Status: http.StatusInternalServerError, Code: "server_error", Description: "client authentication failed"})
		return
	}
	s.lim.succeed(addr, req.ClientID)
	tok, err := s.clients.SignClientJWTSVID(r.Context(), s.auth.Snapshot(), c, req.Audience)
	var inv *ca.InvalidError
	switch {
	case errors.Is(err, ca.ErrBlocked):
		s.refuse(w, r, now, addr, req.ClientID, &oauthError{Status: http.StatusBadRequest, Code: "unauthorized_client", Description: c.SPIFFEID + " is blocked"},
			slog.String(logkey.SPIFFEID, c.SPIFFEID))
		return
	case errors.As(err, &inv):
		s.refuse(w, r, now, addr, req.ClientID, &oauthError{Status: http.StatusBadRequest, Code: "invalid_target", Description: err.Error()},
			slog.String("reason", err.Error()))
		return
	case err != nil:
		s.log.Error("signing a client's JWT-SVID failed", slog.Any(logkey.Error, err))
		s.auditOne(r, addr, req.ClientID, "server_error")
		writeOAuthError(w, &oauthError{Status: http.StatusInternalServerError, Code: "server_error", Description: "signing failed"})
		return
	}
	s.auditOne(r, addr, req.ClientID, "issued", slog.String(logkey.SPIFFEID, c.SPIFFEID), slog.Any("audience", req.Audience))
	w.Header().Set("Pragma", "no-cache")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(tokenResponse{
		AccessToken: tok.Token,
		TokenType:   "Bearer",
		// Never more than the token's lifetime, whatever s.now says.
		ExpiresIn: max(int64(min(tok.ExpiresAt.Sub(s.now()), tok.ExpiresAt.Sub(tok.IssuedAt))/time.Second), 0),
	})
}

// auditOne writes the audit record of one token request: every issued
// token, and server errors.
func (s *Server) auditOne(r *http.Request, addr, client, result string, attrs ...slog.Attr) {
	attrs = append(attrs, slog.String("client_id", untrusted.Clip(client)), slog.String("remote", addr),
		slog.String("result", result), slog.Bool(logkey.Audit, true))
	level := slog.LevelInfo
	if result != "issued" {
		level = slog.LevelWarn
	}
	s.log.LogAttrs(r.Context(), level, "token request", attrs...)
}

// refuse answers a refused token request and records it in the audit
// trail, aggregated: the first refusal of an (address, client, result) in
// an interval is logged at once, the others of the interval as one line
// with their count. client "" aggregates over all clients of the address.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, now time.Time, addr, client string, e *oauthError, attrs ...slog.Attr) {
	s.audit.record(r.Context(), now, auditKey{addr: addr, client: untrusted.Clip(client), result: e.Code}, attrs)
	writeOAuthError(w, e)
}

// addressKey is the source a request is limited by (connlimit.AddressKey).
func addressKey(remote string) string { return connlimit.AddressKey(remote) }

// Limits of client authentication.
const (
	// firstDelay is how long an (address, client) pair waits after one
	// failure; each further failure doubles it, up to maxDelay.
	firstDelay = time.Second
	maxDelay   = 5 * time.Minute
	// addressFreeFailures is how many failures an address may have, over
	// all clients, before the address itself waits: firstDelay after one
	// more, doubling up to maxDelay.
	addressFreeFailures = 5
	// forgetAfter: a pair or address with no failure for this long starts over.
	forgetAfter = 15 * time.Minute
	// maxTracked bounds the pairs, and the addresses, remembered.
	maxTracked = 10000
)

// limitReason says which limit refused a request.
type limitReason string

const (
	limitClient      limitReason = "client"       // the (address, client) pair is backing off
	limitAddress     limitReason = "address"      // the address is backing off
	limitAddressRate limitReason = "address_rate" // the address's budget of secret checks
	limitOverall     limitReason = "overall"      // the budget of addresses with failures
)

// limiter bounds client authentication so that a guesser can neither
// guess fast nor lock anyone else out:
//   - per (address, client ID), each failure blocks the pair for a delay
//     that doubles with every consecutive failure; a success clears it.
//     A client guessed at from elsewhere still gets its secret checked;
//   - per address, failures over all client IDs beyond a few block the
//     address the same way, and a token bucket bounds its secret checks
//     (each an argon2id hash), so random client IDs cost it its own budget;
//   - over all addresses that have failed recently, a token bucket bounds
//     the secret checks, so many guessing addresses cannot take the CPU.
//     Addresses without failures do not draw on it and cannot be starved.
type limiter struct {
	now func() time.Time

	mu     sync.Mutex
	pairs  map[[sha256.Size]byte]*failures // by SHA-256 of address, NUL, client ID: bounded memory
	addrs  map[string]*addressState
	global bucket
	// addrRate and addrBurst configure each address's bucket.
	addrRate, addrBurst float64
}

type failures struct {
	n        int
	until    time.Time // blocked until
	lastFail time.Time
}

// add records one failure at now; the first free failures do not block.
func (f *failures) add(now time.Time, free int) time.Duration {
	if now.Sub(f.lastFail) > forgetAfter {
		f.n = 0
	}
	f.n++
	f.lastFail = now
	n := f.n - free
	if n <= 0 {
		return 0
	}
	d := maxDelay
	if n <= 20 {
		d = min(firstDelay<<(n-1), maxDelay)
	}
	f.until = now.Add(d)
	return d
}

func (f *failures) wait(now time.Time) time.Duration { return max(f.until.Sub(now), 0) }

// recent reports whether f holds a failure not yet forgotten.
func (f *failures) recent(now time.Time) bool {
	return f.n > 0 && now.Sub(f.lastFail) <= forgetAfter
}

type addressState struct {
	failures
	checks bucket
}

// bucket is a token bucket.
type bucket struct {
	tokens, rate, burst float64
	last                time.Time
}

func newBucket(now time.Time, rate, burst float64) bucket {
	return bucket{tokens: burst, rate: rate, burst: burst, last: now}
}

func (b *bucket) refill(now time.Time) {
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
}

// untilOne is how long until the bucket holds a whole token.
func (b *bucket) untilOne() time.Duration {
	return max(time.Duration((1-b.tokens)/b.rate*float64(time.Second)), time.Millisecond)
}

func newLimiter(now func() time.Time, rate, burst, addrRate, addrBurst float64) *limiter {
	return &limiter{
		now: now, pairs: make(map[[sha256.Size]byte]*failures), addrs: make(map[string]*addressState),
		global: newBucket(now(), rate, burst), addrRate: addrRate, addrBurst: addrBurst,
	}
}

func pairKey(addr, client string) [sha256.Size]byte {
	return sha256.Sum256([]byte(addr + "\x00" + client))
}

// admit decides whether a secret check of client from addr may run now. If
// so it takes the check from the budgets and returns 0; else how long to
// wait and which limit refused.
func (l *limiter) admit(addr, client string) (time.Duration, limitReason) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if f, ok := l.pairs[pairKey(addr, client)]; ok {
		if w := f.wait(now); w > 0 {
			return w, limitClient
		}
	}
	a := l.address(addr, now)
	if w := a.wait(now); w > 0 {
		return w, limitAddress
	}
	a.checks.refill(now)
	if a.checks.tokens < 1 {
		return a.checks.untilOne(), limitAddressRate
	}
	suspect := a.recent(now)
	if suspect {
		l.global.refill(now)
		if l.global.tokens < 1 {
			return l.global.untilOne(), limitOverall
		}
		l.global.tokens--
	}
	a.checks.tokens--
	return 0, ""
}

// address returns the state of addr, tracking it if new.
func (l *limiter) address(addr string, now time.Time) *addressState {
	a, ok := l.addrs[addr]
	if !ok {
		if len(l.addrs) >= maxTracked {
			l.evict(now)
		}
		a = &addressState{checks: newBucket(now, l.addrRate, l.addrBurst)}
		l.addrs[addr] = a
	}
	return a
}

// fail records a failed check of client from addr and returns how long
// the pair (or the address) is now blocked.
func (l *limiter) fail(addr, client string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	key := pairKey(addr, client)
	f, ok := l.pairs[key]
	if !ok {
		if len(l.pairs) >= maxTracked {
			l.evict(now)
		}
		f = &failures{}
		l.pairs[key] = f
	}
	d := f.add(now, 0)
	return max(d, l.address(addr, now).add(now, addressFreeFailures))
}

// succeed forgets the failures of client from addr. The address's own
// failures stay: a client that knows one secret cannot clear the record
// of its guesses at others.
func (l *limiter) succeed(addr, client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pairs, pairKey(addr, client))
}

// evict forgets pairs and addresses that are neither blocked nor holding
// a recent failure nor a spent budget; if that is not enough, it forgets
// them all: the overall bucket still bounds the rate.
func (l *limiter) evict(now time.Time) {
	for k, f := range l.pairs {
		if now.After(f.until) && !f.recent(now) {
			delete(l.pairs, k)
		}
	}
	for k, a := range l.addrs {
		a.checks.refill(now)
		if now.After(a.until) && !a.recent(now) && a.checks.tokens >= a.checks.burst {
			delete(l.addrs, k)
		}
	}
	if len(l.pairs) >= maxTracked {
		clear(l.pairs)
	}
	if len(l.addrs) >= maxTracked {
		clear(l.addrs)
	}
}

// auditKey is what refusals are aggregated by in the audit trail.
type auditKey struct {
	addr, client, result string
}

// auditWindow counts the refusals of one key in one interval.
type auditWindow struct {
	start time.Time
	count int // refusals not logged yet
	attrs []slog.Attr
}

// auditLog aggregates refused token requests: the first of an (address,
// client, result) is logged at once, the rest of its interval as one line
// with a count, so that a guesser cannot flood the log.
type auditLog struct {
	log      *slog.Logger
	interval time.Duration

	mu        sync.Mutex
	windows   map[auditKey]*auditWindow
	overflow  int // refusals of keys beyond maxTracked, not logged yet
	lastFlush time.Time
}

func newAuditLog(log *slog.Logger, interval time.Duration, now time.Time) *auditLog {
	return &auditLog{log: log, interval: interval, windows: make(map[auditKey]*auditWindow), lastFlush: now}
}

func (a *auditLog) record(ctx context.Context, now time.Time, k auditKey, attrs []slog.Attr) {
	a.mu.Lock()
	w, ok := a.windows[k]
	if ok {
		w.count++
		w.attrs = attrs
		a.mu.Unlock()
		return
	}
	if len(a.windows) >= maxTracked {
		a.overflow++
		a.mu.Unlock()
		return
	}
	a.windows[k] = &auditWindow{start: now}
	a.mu.Unlock()
	a.emit(ctx, k, 1, now, attrs)
}

func (a *auditLog) emit(ctx context.Context, k auditKey, count int, since time.Time, attrs []slog.Attr) {
	client := k.client
	if client == "" {
		client = "*"
	}
	attrs = append(slices.Clip(attrs), slog.String("client_id", client), slog.String("remote", k.addr),
		slog.String("result", k.result), slog.Int(logkey.Count, count), slog.Time("since", since.UTC()), slog.Bool(logkey.Audit, true))
	a.log.LogAttrs(ctx, slog.LevelWarn, "token request", attrs...)
}

// flushDue flushes when an interval has passed since the last flush.
func (a *auditLog) flushDue(now time.Time) {
	a.mu.Lock()
	due := now.Sub(a.lastFlush) >= a.interval
	a.mu.Unlock()
	if due {
		a.flush(now)
	}
}

// flush logs the count of every window whose interval has ended and starts
// a new one for it; a window that ended with nothing to log is dropped.
func (a *auditLog) flush(now time.Time) {
	type line struct {
		k     auditKey
		count int
		since time.Time
		attrs []slog.Attr
	}
	var lines []line
	a.mu.Lock()
	a.lastFlush = now
	for k, w := range a.windows {
		if now.Sub(w.start) < a.interval {
			continue
		}
		if w.count == 0 {
			delete(a.windows, k)
			continue
		}
		lines = append(lines, line{k, w.count, w.start, w.attrs})
		w.start, w.count = now, 0
	}
	overflow := a.overflow
	a.overflow = 0
	a.mu.Unlock()
	for _, l := range lines {
		a.emit(context.Background(), l.k, l.count, l.since, l.attrs)
	}
	if overflow > 0 {
		a.log.Warn("token request", slog.String("client_id", "*"), slog.String("remote", "*"), slog.String("result", "refused"),
			slog.Int(logkey.Count, overflow), slog.Bool(logkey.Audit, true))
	}
}
