package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/badge-dev/badge/internal/localtrust"
)

// Client calls the admin API over its Unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the admin socket at path. It talks only
// to a server run by root, by this process's uid or by one of serverUIDs,
// as the kernel reports for the connected socket: a socket served by
// another user is refused with an error wrapping localtrust.ErrUntrustedServer,
// before any request is sent on it.
func NewClient(path string, serverUIDs ...uint32) *Client {
	trusted := localtrust.TrustedServerUIDs(serverUIDs...)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return localtrust.DialUnix(ctx, path, trusted)
		},
		DisableCompression: true,
	}
	return &Client{socket: path, http: &http.Client{Transport: tr}}
}

// Error is an error answered by the server.
type Error struct {
	Status  int    // HTTP status
	Message string // the server's one-line cause
	Field   string // the invalid request field, if any
}

func (e *Error) Error() string { return e.Message }

// CreateEntry registers a workload and returns the stored entry.
func (c *Client) CreateEntry(ctx context.Context, req EntryRequest) (Entry, error) {
	var e Entry
	err := c.do(ctx, http.MethodPost, "/v1/entries", req, &e)
	return e, err
}

// ListEntries returns every entry in creation order.
func (c *Client) ListEntries(ctx context.Context) ([]Entry, error) {
	var es []Entry
	err := c.do(ctx, http.MethodGet, "/v1/entries", nil, &es)
	return es, err
}

// GetEntry returns one entry.
func (c *Client) GetEntry(ctx context.Context, id string) (Entry, error) {
	var e Entry
	err := c.do(ctx, http.MethodGet, "/v1/entries/"+url.PathEscape(id), nil, &e)
	return e, err
}

// DeleteEntry deletes an entry.
func (c *Client) DeleteEntry(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/entries/"+url.PathEscape(id), nil, nil)
}

// Revoke revokes an ID or a serial and returns how many certificates it revoked.
func (c *Client) Revoke(ctx context.Context, req RevokeRequest) (RevokeResponse, error) {
	var out RevokeResponse
	err := c.do(ctx, http.MethodPost, "/v1/revocations", req, &out)
	return out, err
}

// Unblock lifts the block of a SPIFFE ID.
func (c *Client) Unblock(ctx context.Context, spiffeID string) error {
	return c.do(ctx, http.MethodPost, "/v1/unblock", UnblockRequest{SPIFFEID: spiffeID}, nil)
}

// Revocations returns what is in force.
func (c *Client) Revocations(ctx context.Context) (Revocations, error) {
	var out Revocations
	err := c.do(ctx, http.MethodGet, "/v1/revocations", nil, &out)
	return out, err
}

// Bundle returns the trust bundle as PEM ("pem") or a SPIFFE JWKS ("jwks").
func (c *Client) Bundle(ctx context.Context, format string) ([]byte, error) {
	var raw rawBody
	err := c.do(ctx, http.MethodGet, "/v1/bundle?format="+url.QueryEscape(format), nil, &raw)
	return raw, err
}

// Health returns nil when the server answers and is ready: its database
// writable, its signing key usable, its revocation list fresh.
func (c *Client) Health(ctx context.Context) error {
	var out map[string]string
	return c.do(ctx, http.MethodGet, "/v1/health", nil, &out)
}

// Status decodes the server's status document (GET /v1/status) into out.
func (c *Client) Status(ctx context.Context, out any) error {
	return c.do(ctx, http.MethodGet, "/v1/status", nil, out)
}

type rawBody []byte

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://badge"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading admin response: %w", err)
	}
	if resp.StatusCode >= 300 {
		return responseError(resp, data)
	}
	switch out := out.(type) {
	case nil:
		return nil
	case *rawBody:
		*out = data
		return nil
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decoding admin response: %w", err)
		}
		return nil
	}
}

// send sends req, turning a failure to reach the server into an error
// that says what to check.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		var untrusted *localtrust.ServerError
		if errors.As(err, &untrusted) {
			return nil, fmt.Errorf("admin socket: %w", untrusted)
		}
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("cannot reach the admin socket %s: is badge server running?", c.socket)
		}
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("permission denied on the admin socket %s: run as root or as the server's user", c.socket)
		}
		return nil, fmt.Errorf("admin socket %s: %w", c.socket, err)
	}
	return resp, nil
}

// responseError is the *Error of a non-2xx answer with body data.
func responseError(resp *http.Response, data []byte) error {
	var e errorResponse
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		e.Error = fmt.Sprintf("admin API answered %s", resp.Status)
	}
	return &Error{Status: resp.StatusCode, Message: e.Error, Field: e.Field}
}

// stream copies the body of GET path to w, unbounded.
func (c *Client) stream(ctx context.Context, path string, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://badge"+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.send(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, responseError(resp, data)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("reading %s from the admin socket: %w", path, err)
	}
	return n, nil
}
