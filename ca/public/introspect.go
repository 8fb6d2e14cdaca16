package public

import (
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"net/url"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/logkey"
)

// introspection is the RFC 7662 response for an active token. An inactive
// one is {"active": false} and nothing else.
type introspection struct {
	Active    bool     `json:"active"`
	Sub       string   `json:"sub,omitempty"`
	Aud       []string `json:"aud,omitempty"`
	Exp       int64    `json:"exp,omitempty"`
	Iat       int64    `json:"iat,omitempty"`
	Iss       string   `json:"iss,omitempty"`
	TokenType string   `json:"token_type,omitempty"`
}

// introspect answers RFC 7662 token introspection for a caller that
// presents an X.509-SVID of the trust domain (mutual TLS). The token is
// active when the authority would accept it for some audience: signature,
// expiry and revocation are checked; the audience is for the caller to
// check against aud.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		writeOAuthError(w, &oauthError{Status: http.StatusUnauthorized, Code: "invalid_client",
			Description: "introspection requires a client X.509-SVID of the trust domain (mutual TLS)"})
		return
	}
	// Verified at the handshake; checked again, revocation included, for
	// every request on a long-lived connection.
	caller, err := s.verifyClient(r.TLS.PeerCertificates)
	if err != nil {
		s.log.Warn("introspection refused", slog.Any(logkey.Error, err), slog.String("remote", r.RemoteAddr), slog.Bool(logkey.Audit, true))
		writeOAuthError(w, &oauthError{Status: http.StatusUnauthorized, Code: "invalid_client", Description: err.Error()})
		return
	}
	form, oerr := readForm(w, r)
	if oerr != nil {
		writeOAuthError(w, oerr)
		return
	}
	if len(form["token"]) != 1 || form.Get("token") == "" {
		writeOAuthError(w, &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: "exactly one token parameter is required"})
		return
	}
	snap := s.auth.Snapshot()
	c, err := s.auth.ValidateJWTSVID(snap, form.Get("token"), "")
	if err != nil {
		var te *ca.TokenError
		if !errors.As(err, &te) {
			s.log.Error("introspection failed", slog.Any(logkey.Error, err))
			writeOAuthError(w, &oauthError{Status: http.StatusInternalServerError, Code: "server_error", Description: "validation failed"})
			return
		}
		s.log.Debug("introspection: inactive token", slog.String("caller", caller.String()), slog.String("reason", string(te.Reason)))
		writeJSON(w, http.StatusOK, introspection{Active: false})
		return
	}
	out := introspection{Active: true, Sub: c.ID.String(), Aud: c.Audience, Exp: c.ExpiresAt.Unix(), Iss: c.Issuer, TokenType: "Bearer"}
	if !c.IssuedAt.IsZero() {
		out.Iat = c.IssuedAt.Unix()
	}
	s.log.Debug("introspection: active token", slog.String("caller", caller.String()), slog.String(logkey.SPIFFEID, out.Sub))
	writeJSON(w, http.StatusOK, out)
}

// readForm reads an application/x-www-form-urlencoded body of at most
// maxBodyBytes.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, *oauthError) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: "the body must be application/x-www-form-urlencoded"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	if err := r.ParseForm(); err != nil {
		return nil, &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: "the body is not a valid form (or exceeds 64 KiB)"}
	}
	return r.PostForm, nil
}
