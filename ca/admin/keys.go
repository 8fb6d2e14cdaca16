package admin

// The signing keys of the authority:
//
//	GET  /v1/keys          every key, prepared, active and retired; returns []ca.KeyStatus
//	POST /v1/keys/rotate   replace the active key of a kind now (KeyRotateRequest); returns ca.KeyRotation

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/jsonout"
)

// KeyAuthority lists and rotates the signing keys: *ca.Authority. It is
// optional: an Authority without it answers these routes with 501.
type KeyAuthority interface {
	KeyStatuses(ctx context.Context) ([]ca.KeyStatus, error)
	RotateKey(ctx context.Context, kind string, adminUID uint32) (ca.KeyRotation, error)
}

// KeyRotateRequest asks for a rotation of one kind of key now.
type KeyRotateRequest struct {
	// Kind is "root", "intermediate" or "jwt".
	Kind string `json:"kind"`
}

// DecodeKeyRotateRequest decodes one KeyRotateRequest as strictly as
// DecodeEntryRequest. It checks syntax only; the authority checks the kind.
func DecodeKeyRotateRequest(r io.Reader) (KeyRotateRequest, error) {
	var req KeyRotateRequest
	err := decodeStrict(r, &req, "key rotation request")
	return req, err
}

var _ KeyAuthority = (*ca.Authority)(nil)

var errNoKeys = errors.New("this server does not manage its keys through the admin API")

func (s *Server) keyAuthority(w http.ResponseWriter) (KeyAuthority, bool) {
	ka, ok := s.auth.(KeyAuthority)
	if !ok {
		writeError(w, http.StatusNotImplemented, errNoKeys)
	}
	return ka, ok
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	auth, ok := s.keyAuthority(w)
	if !ok {
		return
	}
	keys, err := auth.KeyStatuses(r.Context())
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	jsonout.Respond(w, http.StatusOK, keys)
}

// rotateKey forces a rotation. The authority records it (and every step
// it caused) in the audit trail with the admin's uid; a request that does
// not decode is recorded here.
func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	auth, ok := s.keyAuthority(w)
	if !ok {
		return
	}
	req, err := DecodeKeyRotateRequest(r.Body)
	if err != nil {
		s.record(r, ca.AuditKeyRotate, "", "forced rotation", err)
		s.writeRequestError(w, err)
		return
	}
	uid, _ := r.Context().Value(ctxKey{}).(uint32)
	// The rotation runs to its end even if the admin hangs up.
	res, err := auth.RotateKey(context.WithoutCancel(r.Context()), req.Kind, uid)
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	jsonout.Respond(w, http.StatusOK, res)
}

// ListKeys returns every signing key the server keeps a record of.
func (c *Client) ListKeys(ctx context.Context) ([]ca.KeyStatus, error) {
	var out []ca.KeyStatus
	err := c.do(ctx, http.MethodGet, "/v1/keys", nil, &out)
	return out, err
}

// RotateKey replaces the active key of kind ("root", "intermediate" or
// "jwt") now.
func (c *Client) RotateKey(ctx context.Context, kind string) (ca.KeyRotation, error) {
	var out ca.KeyRotation
	err := c.do(ctx, http.MethodPost, "/v1/keys/rotate", KeyRotateRequest{Kind: kind}, &out)
	return out, err
}
