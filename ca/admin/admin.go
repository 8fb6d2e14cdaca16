// Package admin serves the admin API of badge on a Unix socket and is the
// client the CLI uses to call it.
//
// The API is JSON over HTTP/1.1 on a socket of mode 0600. The socket mode is
// not the only guard: every connection's peer credentials are read from the
// kernel, and only root and the server's own uid are served.
//
//	POST   /v1/entries        create an entry (EntryRequest), returns Entry
//	GET    /v1/entries        list entries, returns []Entry in creation order
//	GET    /v1/entries/{id}   one entry
//	DELETE /v1/entries/{id}   delete an entry
//	POST   /v1/revocations    revoke an ID or a serial (RevokeRequest), returns RevokeResponse
//	GET    /v1/revocations    what is in force, returns Revocations
//	POST   /v1/unblock        lift the block of an ID (UnblockRequest)
//	POST   /v1/tokens         make a join token for a node (JoinTokenRequest), returns JoinToken, once
//	GET    /v1/nodes          nodes that have attested, returns []Node by name
//	POST   /v1/nodes/{name}/evict  evict a node, returns EvictResponse
//	GET    /v1/bundle         the trust bundle, ?format=pem (default) or jwks
//	GET    /v1/health         {"status":"ok"} when the authority is serving
//	GET    /v1/audit          audit records (AuditPage); GET /v1/audit/verify; GET /v1/backup (see audit.go)
//
// Every request that changes state is recorded in the authority's audit
// trail (Authority.Audit) with the admin's uid, what it asked and the
// result, whether it succeeded or not; see audit.go for reading and
// verifying the trail and for backups.
package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/storage"
)

// maxRequestBytes bounds an admin request body.
const maxRequestBytes = 1 << 20

// EntryRequest registers a workload.
type EntryRequest struct {
	SPIFFEID  string   `json:"spiffe_id"`
	Selectors []string `json:"selectors"`
	// TTL is a Go duration such as "5m"; empty means the server's default.
	TTL      string   `json:"ttl,omitempty"`
	DNSNames []string `json:"dns_names,omitempty"`
	// Nodes scopes the entry to the agents of these nodes, or to every
	// node with ["*"]; empty: the server's own socket only.
	Nodes []string `json:"nodes,omitempty"`
}

// Entry is a registration entry as the admin API shows it. The same state
// always encodes to the same JSON.
type Entry struct {
	ID        string    `json:"id"`
	SPIFFEID  string    `json:"spiffe_id"`
	Selectors []string  `json:"selectors"`
	TTL       string    `json:"ttl,omitempty"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	Nodes     []string  `json:"nodes,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Revision  uint64    `json:"revision"`
}

// errorResponse is the body of every non-2xx answer.
type errorResponse struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func entryFromStorage(e storage.Entry) Entry {
	out := Entry{
		ID: e.ID, SPIFFEID: e.SPIFFEID, Selectors: e.Selectors, DNSNames: e.DNSNames, Nodes: e.Nodes,
		CreatedAt: e.CreatedAt.UTC(), Revision: e.Revision,
	}
	if out.Selectors == nil {
		out.Selectors = []string{}
	}
	if e.TTL > 0 {
		out.TTL = e.TTL.String()
	}
	return out
}

// DecodeEntryRequest decodes one EntryRequest, refusing unknown fields,
// trailing data and bodies over 1 MiB. It checks syntax only; the authority
// validates the values.
func DecodeEntryRequest(r io.Reader) (EntryRequest, time.Duration, error) {
	var req EntryRequest
	if err := decodeStrict(r, &req, "entry request"); err != nil {
		return req, 0, err
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			return req, 0, &ca.InvalidError{Field: "ttl", Value: req.TTL, Err: err}
		}
	}
	return req, ttl, nil
}

// RevokeRequest revokes a SPIFFE ID (every unexpired certificate issued to
// it) or one certificate by serial. Exactly one of SPIFFEID and Serial is set.
type RevokeRequest struct {
	SPIFFEID string `json:"spiffe_id,omitempty"`
	Serial   string `json:"serial,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Block stops issuance to the ID until it is unblocked (SPIFFEID only).
	Block bool `json:"block,omitempty"`
}

// RevokeResponse says how many certificates a revocation revoked, and how
// many it covered that were revoked before (their revocation time and
// reason unchanged).
type RevokeResponse struct {
	Revoked        int    `json:"revoked"`
	AlreadyRevoked int    `json:"already_revoked,omitempty"`
	SPIFFEID       string `json:"spiffe_id,omitempty"`
	Blocked        bool   `json:"blocked,omitempty"`
}

// UnblockRequest lifts the block of a SPIFFE ID.
type UnblockRequest struct {
	SPIFFEID string `json:"spiffe_id"`
}

// Revocations is what is in force, sorted: revoked IDs and revoked,
// unexpired certificates.
type Revocations struct {
	IDs     []RevokedID     `json:"ids"`
	Serials []RevokedSerial `json:"serials"`
}

// RevokedID is a revoked (and possibly blocked) SPIFFE ID.
type RevokedID struct {
	SPIFFEID  string    `json:"spiffe_id"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
	Blocked   bool      `json:"blocked"`
}

// RevokedSerial is a revoked certificate.
type RevokedSerial struct {
	Serial    string    `json:"serial"`
	SPIFFEID  string    `json:"spiffe_id"`
	NotAfter  time.Time `json:"not_after"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}

// DecodeRevokeRequest decodes one RevokeRequest as strictly as
// DecodeEntryRequest, and checks that it names exactly one target.
func DecodeRevokeRequest(r io.Reader) (RevokeRequest, error) {
	var req RevokeRequest
	if err := decodeStrict(r, &req, "revoke request"); err != nil {
		return req, err
	}
	switch {
	case req.SPIFFEID == "" && req.Serial == "":
		return req, &ca.InvalidError{Field: "spiffe_id", Err: errors.New("a revocation names a SPIFFE ID or a serial")}
	case req.SPIFFEID != "" && req.Serial != "":
		return req, &ca.InvalidError{Field: "serial", Value: req.Serial, Err: errors.New("a revocation names a SPIFFE ID or a serial, not both")}
	case req.Serial != "" && req.Block:
		return req, &ca.InvalidError{Field: "block", Value: "true", Err: errors.New("only a SPIFFE ID can be blocked")}
	}
	return req, nil
}

// decodeStrict decodes one JSON object into v, refusing unknown fields,
// trailing data and bodies over 1 MiB.
func decodeStrict(r io.Reader, v any, what string) error {
	data, err := io.ReadAll(io.LimitReader(r, maxRequestBytes+1))
	if err != nil {
		return fmt.Errorf("reading %s: %w", what, err)
	}
	if len(data) > maxRequestBytes {
		return fmt.Errorf("%s body exceeds %d bytes", what, maxRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding %s: %w", what, err)
	}
	if err := dec.Decode(new(json.RawMessage)); err != io.EOF {
		return fmt.Errorf("decoding %s: unexpected data after the JSON object", what)
	}
	return nil
}
