package ca

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// Limits on registration entries.
const (
	// reservedPath is the namespace of the authority's own identities.
	reservedPath = "/badge"

	maxSelectors = 32
	maxDNSNames  = 32
)

// ErrInvalid is matched (with errors.Is) by every error that rejects a
// request field; the error itself is an *InvalidError naming the field.
var ErrInvalid = errors.New("ca: invalid request")

// InvalidError says which field of a request is not acceptable and why.
type InvalidError struct {
	Field string // "spiffe_id", "selector", "ttl", "dns_name", ...
	Value string
	Err   error
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("invalid %s %q: %v", e.Field, e.Value, e.Err)
}

func (e *InvalidError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, value string, format string, args ...any) error {
	return &InvalidError{Field: field, Value: value, Err: fmt.Errorf(format, args...)}
}

// EntryRequest is what an admin asks for when registering a workload.
type EntryRequest struct {
	SPIFFEID  string
	Selectors []string
	TTL       time.Duration // zero: the server's default
	DNSNames  []string
	// Nodes scopes the entry to the agents of these nodes, or to every
	// node with the single value "*". Empty: the entry is served on the
	// server's own socket only.
	Nodes []string
}

// CreateEntry validates req, stores a new entry and publishes it: streams of
// matching callers receive their new SVID at once.
func (a *Authority) CreateEntry(ctx context.Context, req EntryRequest) (storage.Entry, error) {
	e, err := a.validateEntry(req)
	if err != nil {
		return storage.Entry{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, old := range a.entries {
		if old.SPIFFEID == e.SPIFFEID && slices.Equal(old.Selectors, e.Selectors) && slices.Equal(old.Nodes, e.Nodes) {
			return storage.Entry{}, fmt.Errorf("ca: entry %s already registers %s with these selectors%s: %w", old.ID, e.SPIFFEID, nodesPhrase(e.Nodes), storage.ErrExists)
		}
	}
	e.ID, err = newEntryID()
	if err != nil {
		return storage.Entry{}, err
	}
	e.CreatedAt = a.cfg.Time().UTC()
	e.Revision = 1
	if err := a.store.CreateEntry(ctx, e); err != nil {
		return storage.Entry{}, fmt.Errorf("ca: storing entry: %w", err)
	}
	a.entries = append(slices.Clone(a.entries), e)
	slices.SortStableFunc(a.entries, compareEntries)
	a.publishLocked()
	a.log.Info("entry created", slog.String(logkey.EntryID, e.ID), slog.String(logkey.SPIFFEID, e.SPIFFEID),
		slog.Any(logkey.Selectors, e.Selectors), slog.Any("nodes", e.Nodes), slog.Bool(logkey.Audit, true))
	return e, nil
}

// DeleteEntry removes an entry. Callers that matched only this entry stop
// receiving SVIDs; their certificates expire within the SVID TTL.
func (a *Authority) DeleteEntry(ctx context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.store.DeleteEntry(ctx, id); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("ca: entry %q: %w", id, err)
		}
		return fmt.Errorf("ca: deleting entry %s: %w", id, err)
	}
	a.entries = slices.DeleteFunc(slices.Clone(a.entries), func(e storage.Entry) bool { return e.ID == id })
	a.publishLocked()
	a.log.Info("entry deleted", slog.String(logkey.EntryID, id), slog.Bool(logkey.Audit, true))
	return nil
}

// GetEntry returns one entry.
func (a *Authority) GetEntry(ctx context.Context, id string) (storage.Entry, error) {
	e, err := a.store.GetEntry(ctx, id)
	if err != nil {
		return storage.Entry{}, fmt.Errorf("ca: entry %q: %w", id, err)
	}
	return e, nil
}

// ListEntries returns all entries in (CreatedAt, ID) order.
func (a *Authority) ListEntries(ctx context.Context) ([]storage.Entry, error) {
	return a.store.ListEntries(ctx)
}

// validateEntry checks every field of req and returns the canonical entry.
func (a *Authority) validateEntry(req EntryRequest) (storage.Entry, error) {
	id, err := parseID(a.cfg.TrustDomain, req.SPIFFEID)
	if err != nil {
		return storage.Entry{}, err
	}
	if err := checkNotReserved(id, req.SPIFFEID); err != nil {
		return storage.Entry{}, err
	}
	sels, err := parseSelectors(req.Selectors)
	if err != nil {
		return storage.Entry{}, err
	}
	canon := make([]string, len(sels))
	for i, s := range sels {
		canon[i] = s.String()
	}
	ttl := req.TTL
	switch {
	case ttl < 0:
		return storage.Entry{}, invalid("ttl", ttl.String(), "must not be negative")
	case ttl > 0 && ttl < MinSVIDTTL:
		return storage.Entry{}, invalid("ttl", ttl.String(), "is below the minimum %s", MinSVIDTTL)
	case ttl > a.cfg.MaxSVIDTTL:
		return storage.Entry{}, invalid("ttl", ttl.String(), "exceeds the server's maximum SVID TTL %s", a.cfg.MaxSVIDTTL)
	}
	if len(req.DNSNames) > maxDNSNames {
		return storage.Entry{}, invalid("dns_name", strings.Join(req.DNSNames, ","), "more than %d DNS names", maxDNSNames)
	}
	var dns []string
	for _, n := range req.DNSNames {
		n = strings.ToLower(n)
		if err := validateDNSName(n); err != nil {
			return storage.Entry{}, invalid("dns_name", n, "%v", err)
		}
		if !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	nodes, err := parseNodes(req.Nodes)
	if err != nil {
		return storage.Entry{}, err
	}
	return storage.Entry{SPIFFEID: id.String(), Selectors: canon, TTL: ttl, DNSNames: dns, Nodes: nodes}, nil
}

// nodesPhrase describes the node scope of an entry in an error message.
func nodesPhrase(nodes []string) string {
	switch {
	case len(nodes) == 0:
		return ""
	case nodes[0] == AllNodes:
		return " on every node"
	}
	return " on nodes " + strings.Join(nodes, ",")
}

// checkNotReserved refuses the authority's own identities (the public
// listener's certificate, node SVIDs) for a workload or client, which
// could then impersonate the server or a node.
func checkNotReserved(id spiffeid.ID, given string) error {
	if p := id.Path(); p == reservedPath || strings.HasPrefix(p, reservedPath+"/") {
		return invalid("spiffe_id", given, "paths under %s are reserved for badge itself", reservedPath)
	}
	return nil
}

// parseID parses a SPIFFE ID of a workload in trust domain td.
func parseID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, invalid("spiffe_id", s, "%v", err)
	}
	if !id.MemberOf(td) {
		return spiffeid.ID{}, invalid("spiffe_id", s, "not in trust domain %s", td.Name())
	}
	if id.Path() == "" {
		return spiffeid.ID{}, invalid("spiffe_id", s, "a workload ID needs a path; the trust domain ID itself is reserved")
	}
	return id, nil
}

// parseSelectors parses, de-duplicates and sorts selectors.
func parseSelectors(in []string) ([]attest.Selector, error) {
	if len(in) == 0 {
		return nil, invalid("selector", "", "an entry needs at least one selector")
	}
	if len(in) > maxSelectors {
		return nil, invalid("selector", strings.Join(in, ","), "more than %d selectors", maxSelectors)
	}
	out := make([]attest.Selector, 0, len(in))
	for _, s := range in {
		sel, err := attest.ParseSelector(s)
		if err != nil {
			return nil, &InvalidError{Field: "selector", Value: s, Err: selectorReason{err}}
		}
		if !slices.Contains(out, sel) {
			out = append(out, sel)
		}
	}
	slices.SortFunc(out, func(a, b attest.Selector) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// selectorReason is an attest.SelectorError that prints only its reason,
// since the InvalidError around it already names the selector.
type selectorReason struct{ err error }

func (r selectorReason) Error() string {
	var se *attest.SelectorError
	if errors.As(r.err, &se) {
		return se.Reason
	}
	return r.err.Error()
}

func (r selectorReason) Unwrap() error { return r.err }

// validateDNSName accepts a lower-case host name as RFC 1123 defines it,
// with an optional leading "*." wildcard label.
func validateDNSName(n string) error {
	name := strings.TrimPrefix(n, "*.")
	if name == "" || len(n) > 253 {
		return errors.New("must be a host name of 1 to 253 characters")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("each label must have 1 to 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("a label must not start or end with '-'")
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("character %q is not allowed in a host name", c)
			}
		}
	}
	return nil
}

// compareEntries orders entries by (CreatedAt, ID), the order of the store:
// the oldest matching entry gives a caller its default SVID.
func compareEntries(a, b storage.Entry) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

func newEntryID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("ca: generating entry id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
