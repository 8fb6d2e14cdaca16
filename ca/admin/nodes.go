package admin

// Nodes of agents and their join tokens:
//
//	POST   /v1/tokens               make a join token (JoinTokenRequest); returns JoinToken, with the token, once
//	GET    /v1/nodes                nodes that have attested, returns []Node ordered by name
//	POST   /v1/nodes/{name}/evict   evict a node; returns EvictResponse

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/jsonout"
	"github.com/badge-dev/badge/storage"
)

// NodeAuthority manages nodes and join tokens: *ca.Authority. It is
// optional: an Authority without it answers these routes with 501.
type NodeAuthority interface {
	CreateJoinToken(ctx context.Context, req ca.JoinTokenRequest) (storage.JoinToken, string, error)
	ListNodes(ctx context.Context) ([]storage.Node, error)
	EvictNode(ctx context.Context, name string, adminUID uint32) (ca.EvictResult, error)
}

// JoinTokenRequest asks for a one-time join token for a node.
type JoinTokenRequest struct {
	Node string `json:"node"`
	// TTL is a Go duration such as "1h"; empty means the server's default.
	TTL string `json:"ttl,omitempty"`
}

// JoinToken is a join token just made: the only time the token is shown.
type JoinToken struct {
	Token     string    `json:"token"`
	Node      string    `json:"node"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Node is an agent's node as the admin API shows it. The same state always
// encodes to the same JSON.
type Node struct {
	Name            string    `json:"name"`
	Attestation     string    `json:"attestation"`
	FirstAttestedAt time.Time `json:"first_attested_at"`
	LastAttestedAt  time.Time `json:"last_attested_at"`
	// SVIDSerial is the serial of the node's current node SVID, if any.
	SVIDSerial string `json:"svid_serial,omitempty"`
	Evicted    bool   `json:"evicted"`
	// EvictedAt and EvictedBy (an admin uid) are set on an evicted node.
	EvictedAt *time.Time `json:"evicted_at,omitempty"`
	EvictedBy *uint32    `json:"evicted_by,omitempty"`
	// Connections is the number of the node's open connections to the
	// agent listener.
	Connections int `json:"connections"`
}

// EvictResponse says what an eviction did.
type EvictResponse struct {
	Node Node `json:"node"`
	// SPIFFEID is the node SVID ID, now revoked and blocked.
	SPIFFEID string `json:"spiffe_id"`
	// Revoked counts the node SVIDs revoked.
	Revoked int `json:"revoked"`
	// CancelledTokens counts the node's unused join tokens deleted.
	CancelledTokens int `json:"cancelled_tokens"`
}

func nodeFromStorage(n storage.Node) Node {
	out := Node{
		Name: n.Name, Attestation: n.Attestation, SVIDSerial: n.SVIDSerial,
		FirstAttestedAt: n.FirstAttestedAt.UTC(), LastAttestedAt: n.LastAttestedAt.UTC(), Evicted: n.Evicted(),
	}
	if n.Evicted() {
		at, by := n.EvictedAt.UTC(), n.EvictedBy
		out.EvictedAt, out.EvictedBy = &at, &by
	}
	return out
}

// DecodeJoinTokenRequest decodes one JoinTokenRequest as strictly as
// DecodeEntryRequest, and parses its TTL (zero when none is given). It
// checks syntax only; the authority validates the values.
func DecodeJoinTokenRequest(r io.Reader) (JoinTokenRequest, time.Duration, error) {
	var req JoinTokenRequest
	if err := decodeStrict(r, &req, "join token request"); err != nil {
		return req, 0, err
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			return req, 0, &ca.InvalidError{Field: "ttl", Value: req.TTL, Err: err}
		}
		if ttl == 0 {
			return req, 0, &ca.InvalidError{Field: "ttl", Value: req.TTL, Err: errZeroTTL}
		}
	}
	return req, ttl, nil
}

var errZeroTTL = errors.New("must be positive (leave it out for the default)")

var errNoNodes = errors.New("this server does not manage nodes")

func (s *Server) nodeAuthority(w http.ResponseWriter) (NodeAuthority, bool) {
	na, ok := s.auth.(NodeAuthority)
	if !ok {
		writeError(w, http.StatusNotImplemented, errNoNodes)
	}
	return na, ok
}

func (s *Server) createJoinToken(w http.ResponseWriter, r *http.Request) {
	auth, ok := s.nodeAuthority(w)
	if !ok {
		return
	}
	req, ttl, err := DecodeJoinTokenRequest(r.Body)
	if err != nil {
		s.writeRequestError(w, err)
		return
	}
	uid, _ := r.Context().Value(ctxKey{}).(uint32)
	rec, token, err := auth.CreateJoinToken(r.Context(), ca.JoinTokenRequest{Node: req.Node, TTL: ttl, AdminUID: uid})
	s.record(r, ca.AuditTokenCreate, req.Node, "ttl="+ttl.String(), err) // never the token
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	jsonout.Respond(w, http.StatusCreated, JoinToken{Token: token, Node: rec.Node, CreatedAt: rec.CreatedAt.UTC(), ExpiresAt: rec.ExpiresAt.UTC()})
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	auth, ok := s.nodeAuthority(w)
	if !ok {
		return
	}
	ns, err := auth.ListNodes(r.Context())
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	out := make([]Node, len(ns))
	for i, n := range ns {
		out[i] = nodeFromStorage(n)
		if s.nodeConns != nil {
			out[i].Connections = s.nodeConns(n.Name)
		}
	}
	jsonout.Respond(w, http.StatusOK, out)
}

func (s *Server) evictNode(w http.ResponseWriter, r *http.Request) {
	auth, ok := s.nodeAuthority(w)
	if !ok {
		return
	}
	uid, _ := r.Context().Value(ctxKey{}).(uint32)
	var res ca.EvictResult
	err := s.retryNoSpace(func() (err error) {
		res, err = auth.EvictNode(r.Context(), r.PathValue("name"), uid)
		return err
	})
	s.record(r, ca.AuditNodeEvict, r.PathValue("name"), "", err)
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	jsonout.Respond(w, http.StatusOK, EvictResponse{Node: nodeFromStorage(res.Node), SPIFFEID: res.SPIFFEID, Revoked: res.Revoked, CancelledTokens: res.CancelledTokens})
}

// CreateJoinToken makes a one-time join token for a node and returns it
// with the token.
func (c *Client) CreateJoinToken(ctx context.Context, req JoinTokenRequest) (JoinToken, error) {
	var out JoinToken
	err := c.do(ctx, http.MethodPost, "/v1/tokens", req, &out)
	return out, err
}

// ListNodes returns every node that has attested, by name.
func (c *Client) ListNodes(ctx context.Context) ([]Node, error) {
	var out []Node
	err := c.do(ctx, http.MethodGet, "/v1/nodes", nil, &out)
	return out, err
}

// EvictNode evicts a node.
func (c *Client) EvictNode(ctx context.Context, name string) (EvictResponse, error) {
	var out EvictResponse
	err := c.do(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(name)+"/evict", nil, &out)
	return out, err
}
