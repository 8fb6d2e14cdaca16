package admin

// OAuth clients of the token endpoint:
//
//	POST   /v1/clients        register a client (OAuthClientRequest); returns NewOAuthClient, with the secret, once
//	GET    /v1/clients        list clients, returns []OAuthClient in creation order (never secrets)
//	DELETE /v1/clients/{id}   delete a client; the id (a SPIFFE ID) is path-escaped

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/jsonout"
	"github.com/badge-dev/badge/storage"
)

// ClientAuthority manages OAuth clients: *ca.Authority. It is optional:
// an Authority without it answers the /v1/clients routes with 501.
type ClientAuthority interface {
	CreateClient(ctx context.Context, spiffeID string) (storage.Client, string, error)
	ListClients(ctx context.Context) ([]storage.Client, error)
	DeleteClient(ctx context.Context, id string) error
}

// OAuthClientRequest registers an OAuth client for a SPIFFE ID.
type OAuthClientRequest struct {
	SPIFFEID string `json:"spiffe_id"`
}

// OAuthClient is a registered OAuth client. Its ID is the client_id of the
// token endpoint; it is the SPIFFE ID of the tokens it gets.
type OAuthClient struct {
	ID        string    `json:"id"`
	SPIFFEID  string    `json:"spiffe_id"`
	CreatedAt time.Time `json:"created_at"`
}

// NewOAuthClient is a client just registered, with its secret: the only
// time the secret is shown.
type NewOAuthClient struct {
	OAuthClient
	Secret string `json:"secret"`
}

func oauthClientFromStorage(c storage.Client) OAuthClient {
	return OAuthClient{ID: c.ID, SPIFFEID: c.SPIFFEID, CreatedAt: c.CreatedAt.UTC()}
}

var errNoClients = errors.New("this server does not manage OAuth clients")

func (s *Server) clientAuthority(w http.ResponseWriter) (ClientAuthority, bool) {
	ca, ok := s.auth.(ClientAuthority)
	if !ok {
		writeError(w, http.StatusNotImplemented, errNoClients)
	}
	return ca, ok
}

func (s *Server) createClient(w http.ResponseWriter, r *http.Request) {
	auth, ok := s.clientAuthority(w)
	if !ok {
		return
	}
	var req OAuthClientRequest
	if err := decodeStrict(r.Body, &req, "client request"); err != nil {
		s.record(r, ca.AuditClientCreate, "", "", err)
		writeError(w, http.StatusBadRequest, err)
		return
	}
	c, secret, err := auth.CreateClient(r.Context(), req.SPIFFEID)
	s.record(r, ca.AuditClientCreate, req.SPIFFEID, "", err)
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	jsonout.Respond(w, http.StatusCreated, NewOAuthClient{OAuthClient: oauthClientFromStorage(c), Secret: secret})
}

func (s *Server) listClients(w http.ResponseWriter, r *http.Request) {
	auth, ok := s.clientAuthority(w)
	if !ok {
		return
	}
	cs, err := auth.ListClients(r.Context())
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	out := make([]OAuthClient, len(cs))
	for i, c := range cs {
		out[i] = oauthClientFromStorage(c)
	}
	jsonout.Respond(w, http.StatusOK, out)
}

func (s *Server) deleteClient(w http.ResponseWriter, r *http.Request) {
	auth, ok := s.clientAuthority(w)
	if !ok {
		return
	}
	err := auth.DeleteClient(r.Context(), r.PathValue("id"))
	s.record(r, ca.AuditClientDelete, r.PathValue("id"), "", err)
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// CreateOAuthClient registers an OAuth client for spiffeID and returns it
// with its secret.
func (c *Client) CreateOAuthClient(ctx context.Context, spiffeID string) (NewOAuthClient, error) {
	var out NewOAuthClient
	err := c.do(ctx, http.MethodPost, "/v1/clients", OAuthClientRequest{SPIFFEID: spiffeID}, &out)
	return out, err
}

// ListOAuthClients returns every OAuth client in creation order.
func (c *Client) ListOAuthClients(ctx context.Context) ([]OAuthClient, error) {
	var out []OAuthClient
	err := c.do(ctx, http.MethodGet, "/v1/clients", nil, &out)
	return out, err
}

// DeleteOAuthClient deletes an OAuth client.
func (c *Client) DeleteOAuthClient(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/clients/"+url.PathEscape(id), nil, nil)
}
