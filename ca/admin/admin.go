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
//	GET    /v1/bundle         the trust bundle, ?format=pem (default) or jwks
//	GET    /v1/health         {"status":"ok"} when the authority is serving
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
}

// Entry is a registration entry as the admin API shows it. The same state
// always encodes to the same JSON.
type Entry struct {
	ID        string    `json:"id"`
	SPIFFEID  string    `json:"spiffe_id"`
	Selectors []string  `json:"selectors"`
	TTL       string    `json:"ttl,omitempty"`
	DNSNames  []string  `json:"dns_names,omitempty"`
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
		ID: e.ID, SPIFFEID: e.SPIFFEID, Selectors: e.Selectors, DNSNames: e.DNSNames,
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
	data, err := io.ReadAll(io.LimitReader(r, maxRequestBytes+1))
	if err != nil {
		return req, 0, fmt.Errorf("reading request: %w", err)
	}
	if len(data) > maxRequestBytes {
		return req, 0, fmt.Errorf("request body exceeds %d bytes", maxRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, 0, fmt.Errorf("decoding entry request: %w", err)
	}
	if err := dec.Decode(new(json.RawMessage)); err != io.EOF {
		return req, 0, errors.New("decoding entry request: unexpected data after the JSON object")
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			return req, 0, &ca.InvalidError{Field: "ttl", Value: req.TTL, Err: err}
		}
	}
	return req, ttl, nil
}
