package ca

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/storage"
)

func uidSelectors(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("unix:uid:%d", i)
	}
	return out
}

func dnsNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("h%d.example.org", i)
	}
	return out
}

func TestCreateEntryInvalid(t *testing.T) {
	valid := func(mod func(*EntryRequest)) EntryRequest {
		r := EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1000"}}
		mod(&r)
		return r
	}
	tests := []struct {
		name  string
		req   EntryRequest
		field string
		is    error // a further sentinel the error must match, if any
	}{
		{"malformed SPIFFE ID", valid(func(r *EntryRequest) { r.SPIFFEID = "not a spiffe id" }), "spiffe_id", nil},
		{"empty SPIFFE ID", valid(func(r *EntryRequest) { r.SPIFFEID = "" }), "spiffe_id", nil},
		{"upper-case trust domain", valid(func(r *EntryRequest) { r.SPIFFEID = "spiffe://Example.org/api" }), "spiffe_id", nil},
		{"other scheme", valid(func(r *EntryRequest) { r.SPIFFEID = "https://example.org/api" }), "spiffe_id", nil},
		{"other trust domain", valid(func(r *EntryRequest) { r.SPIFFEID = "spiffe://other.org/api" }), "spiffe_id", nil},
		{"trust domain only", valid(func(r *EntryRequest) { r.SPIFFEID = "spiffe://example.org" }), "spiffe_id", nil},
		{"trailing slash", valid(func(r *EntryRequest) { r.SPIFFEID = "spiffe://example.org/api/" }), "spiffe_id", nil},
		{"the server's own identity", valid(func(r *EntryRequest) { r.SPIFFEID = "spiffe://example.org/badge/server" }), "spiffe_id", nil},
		{"reserved namespace", valid(func(r *EntryRequest) { r.SPIFFEID = "spiffe://example.org/badge/anything" }), "spiffe_id", nil},
		{"no selectors", valid(func(r *EntryRequest) { r.Selectors = nil }), "selector", nil},
		{"unknown selector type", valid(func(r *EntryRequest) { r.Selectors = []string{"k8s:ns:default"} }), "selector", attest.ErrUnknownType},
		{"unknown selector key", valid(func(r *EntryRequest) { r.Selectors = []string{"unix:shell:bash"} }), "selector", attest.ErrUnknownKey},
		{"bad selector value", valid(func(r *EntryRequest) { r.Selectors = []string{"unix:uid:abc"} }), "selector", attest.ErrInvalidValue},
		{"selector without value", valid(func(r *EntryRequest) { r.Selectors = []string{"unix:uid"} }), "selector", attest.ErrSelectorSyntax},
		{"one bad selector among good", valid(func(r *EntryRequest) { r.Selectors = []string{"unix:uid:1", "unix:gid:-1"} }), "selector", attest.ErrInvalidValue},
		{"too many selectors", valid(func(r *EntryRequest) { r.Selectors = uidSelectors(maxSelectors + 1) }), "selector", nil},
		{"negative TTL", valid(func(r *EntryRequest) { r.TTL = -time.Second }), "ttl", nil},
		{"TTL over the maximum", valid(func(r *EntryRequest) { r.TTL = DefaultMaxSVIDTTL + time.Second }), "ttl", nil},
		{"TTL below the minimum", valid(func(r *EntryRequest) { r.TTL = MinSVIDTTL - time.Second }), "ttl", nil},
		{"DNS name with underscore", valid(func(r *EntryRequest) { r.DNSNames = []string{"a_b.example.org"} }), "dns_name", nil},
		{"DNS label of 64 characters", valid(func(r *EntryRequest) { r.DNSNames = []string{strings.Repeat("a", 64) + ".example.org"} }), "dns_name", nil},
		{"DNS name of 254 characters", valid(func(r *EntryRequest) {
			r.DNSNames = []string{strings.Repeat(strings.Repeat("a", 62)+".", 4) + "abcd"}
		}), "dns_name", nil},
		{"empty DNS name", valid(func(r *EntryRequest) { r.DNSNames = []string{""} }), "dns_name", nil},
		{"empty DNS label", valid(func(r *EntryRequest) { r.DNSNames = []string{"a..example.org"} }), "dns_name", nil},
		{"DNS label starting with a hyphen", valid(func(r *EntryRequest) { r.DNSNames = []string{"-a.example.org"} }), "dns_name", nil},
		{"DNS label ending with a hyphen", valid(func(r *EntryRequest) { r.DNSNames = []string{"a-.example.org"} }), "dns_name", nil},
		{"bare wildcard", valid(func(r *EntryRequest) { r.DNSNames = []string{"*."} }), "dns_name", nil},
		{"wildcard not leftmost", valid(func(r *EntryRequest) { r.DNSNames = []string{"a.*.example.org"} }), "dns_name", nil},
		{"double wildcard", valid(func(r *EntryRequest) { r.DNSNames = []string{"*.*.example.org"} }), "dns_name", nil},
		{"DNS name with space", valid(func(r *EntryRequest) { r.DNSNames = []string{"a b.example.org"} }), "dns_name", nil},
		{"DNS name with non-ASCII", valid(func(r *EntryRequest) { r.DNSNames = []string{"bücher.example.org"} }), "dns_name", nil},
		{"IP address as DNS name", valid(func(r *EntryRequest) { r.DNSNames = []string{"10.0.0.1:443"} }), "dns_name", nil},
		{"too many DNS names", valid(func(r *EntryRequest) { r.DNSNames = dnsNames(maxDNSNames + 1) }), "dns_name", nil},
	}
	ctx := context.Background()
	a, _ := newTestAuthority(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := a.Snapshot()
			_, err := a.CreateEntry(ctx, tt.req)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("CreateEntry(%+v) = %v, want ErrInvalid", tt.req, err)
			}
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("error %v is not an *InvalidError", err)
			}
			if inv.Field != tt.field {
				t.Errorf("Field = %q, want %q (error: %v)", inv.Field, tt.field, err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not match %v", err, tt.is)
			}
			if errors.Is(err, storage.ErrExists) || errors.Is(err, storage.ErrNotFound) {
				t.Errorf("a validation error matches a storage sentinel: %v", err)
			}
			if a.Snapshot() != old {
				t.Error("a rejected request published a snapshot")
			}
		})
	}
	if es, err := a.ListEntries(ctx); err != nil || len(es) != 0 {
		t.Errorf("after rejected requests the store holds %d entries (err %v), want none", len(es), err)
	}
}

func TestCreateEntryCanonical(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	tests := []struct {
		name      string
		req       EntryRequest
		selectors []string
		dns       []string
		ttl       time.Duration
	}{
		{
			name:      "minimal",
			req:       EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1000"}},
			selectors: []string{"unix:uid:1000"},
		},
		{
			name:      "selectors sorted and de-duplicated",
			req:       EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1", "unix:gid:2", "unix:uid:1", "systemd:unit:api.service"}},
			selectors: []string{"systemd:unit:api.service", "unix:gid:2", "unix:uid:1"},
		},
		{
			name:      "as many selectors as allowed",
			req:       EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: uidSelectors(maxSelectors)},
			selectors: slices.Sorted(slices.Values(uidSelectors(maxSelectors))),
		},
		{
			name:      "upper-case DNS names lower-cased and de-duplicated",
			req:       EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1"}, DNSNames: []string{"API.Example.org", "api.example.org", "*.API.example.org"}},
			selectors: []string{"unix:uid:1"},
			dns:       []string{"api.example.org", "*.api.example.org"},
		},
		{
			name:      "wildcard, single label, digits, hyphens, 63-character label",
			req:       EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1"}, DNSNames: []string{"*.example.org", "localhost", "1-2.example.org", label63 + ".example.org"}},
			selectors: []string{"unix:uid:1"},
			dns:       []string{"*.example.org", "localhost", "1-2.example.org", label63 + ".example.org"},
		},
		{
			name:      "as many DNS names as allowed",
			req:       EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1"}, DNSNames: dnsNames(maxDNSNames)},
			selectors: []string{"unix:uid:1"},
			dns:       dnsNames(maxDNSNames),
		},
		{
			name:      "minimum TTL",
			req:       EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1"}, TTL: MinSVIDTTL},
			selectors: []string{"unix:uid:1"},
			ttl:       MinSVIDTTL,
		},
		{
			name:      "maximum TTL",
			req:       EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1"}, TTL: DefaultMaxSVIDTTL},
			selectors: []string{"unix:uid:1"},
			ttl:       DefaultMaxSVIDTTL,
		},
	}
	idPattern := regexp.MustCompile(`^[0-9a-f]{16}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			a, env := newTestAuthority(t, nil)
			old := a.Snapshot()
			e, err := a.CreateEntry(ctx, tt.req)
			if err != nil {
				t.Fatalf("CreateEntry: %v", err)
			}
			if !idPattern.MatchString(e.ID) || e.SPIFFEID != tt.req.SPIFFEID || e.Revision != 1 || !e.CreatedAt.Equal(env.clock.Now()) {
				t.Errorf("entry = %+v; want a 16-hex-digit ID, the request's SPIFFE ID, revision 1, created now", e)
			}
			if !slices.Equal(e.Selectors, tt.selectors) || !slices.Equal(e.DNSNames, tt.dns) || e.TTL != tt.ttl {
				t.Errorf("entry selectors %q, DNS names %q, TTL %s; want %q, %q, %s", e.Selectors, e.DNSNames, e.TTL, tt.selectors, tt.dns, tt.ttl)
			}
			got, err := a.GetEntry(ctx, e.ID)
			if err != nil {
				t.Fatalf("GetEntry: %v", err)
			}
			if !sameEntry(got, e) {
				t.Errorf("stored %+v, returned %+v", got, e)
			}
			if !replaced(old) {
				t.Error("creating an entry did not replace the snapshot")
			}
			if se := entryFor(t, a.Snapshot(), e.ID); se.ID.String() != e.SPIFFEID {
				t.Errorf("snapshot entry ID %s, want %s", se.ID, e.SPIFFEID)
			}
		})
	}
}

func sameEntry(a, b storage.Entry) bool {
	return a.ID == b.ID && a.SPIFFEID == b.SPIFFEID && slices.Equal(a.Selectors, b.Selectors) &&
		a.TTL == b.TTL && slices.Equal(a.DNSNames, b.DNSNames) && a.CreatedAt.Equal(b.CreatedAt) && a.Revision == b.Revision
}

func TestCreateEntryDuplicate(t *testing.T) {
	ctx := context.Background()
	a, _ := newTestAuthority(t, nil)
	mustCreate(t, a, "spiffe://example.org/api", "unix:uid:1", "unix:gid:2")

	tests := []struct {
		name string
		req  EntryRequest
		is   error // nil: accepted
	}{
		{"same ID and selectors", EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1", "unix:gid:2"}}, storage.ErrExists},
		{"same selectors in another order, repeated", EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:gid:2", "unix:uid:1", "unix:gid:2"}}, storage.ErrExists},
		{"same ID and selectors, other TTL", EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1", "unix:gid:2"}, TTL: time.Minute}, storage.ErrExists},
		{"same ID, fewer selectors", EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1"}}, nil},
		{"same selectors, other ID", EntryRequest{SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:uid:1", "unix:gid:2"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.CreateEntry(ctx, tt.req)
			switch {
			case tt.is == nil && err != nil:
				t.Errorf("CreateEntry: %v, want success", err)
			case tt.is != nil && !errors.Is(err, tt.is):
				t.Errorf("CreateEntry: %v, want %v", err, tt.is)
			case errors.Is(err, ErrInvalid):
				t.Errorf("a duplicate is reported as invalid: %v", err)
			}
		})
	}
	if es, _ := a.ListEntries(ctx); len(es) != 3 {
		t.Errorf("%d entries stored, want 3", len(es))
	}
}

func TestDeleteEntry(t *testing.T) {
	ctx := context.Background()
	a, _ := newTestAuthority(t, nil)
	keep := mustCreate(t, a, "spiffe://example.org/keep", "unix:uid:1")
	gone := mustCreate(t, a, "spiffe://example.org/gone", "unix:uid:1")

	old := a.Snapshot()
	if err := a.DeleteEntry(ctx, gone); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	if !replaced(old) {
		t.Error("deleting an entry did not replace the snapshot")
	}
	if m := a.Snapshot().Match(set(t, "unix:uid:1")); len(m) != 1 || m[0].Record.ID != keep {
		t.Errorf("after delete, Match = %v, want only %s", entryIDs(m), keep)
	}
	if _, err := a.GetEntry(ctx, gone); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetEntry(deleted) = %v, want ErrNotFound", err)
	}

	tests := []struct{ name, id string }{
		{"deleted twice", gone},
		{"never existed", "0123456789abcdef"},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := a.Snapshot()
			if err := a.DeleteEntry(ctx, tt.id); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("DeleteEntry(%q) = %v, want ErrNotFound", tt.id, err)
			}
			if _, err := a.GetEntry(ctx, tt.id); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("GetEntry(%q) = %v, want ErrNotFound", tt.id, err)
			}
			if a.Snapshot() != before {
				t.Error("a failed delete published a snapshot")
			}
		})
	}
}

func entryIDs(es []*Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Record.ID
	}
	return out
}

func TestMatch(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	// Entries are created a second apart; "early" is created last with the
	// clock set back, so creation time, not insertion order, decides.
	ids := make(map[string]string)
	create := func(name string, sels ...string) {
		env.clock.Advance(time.Second)
		ids[name] = mustCreate(t, a, "spiffe://example.org/"+name, sels...)
	}
	create("uid", "unix:uid:1000")
	create("uid-gid", "unix:uid:1000", "unix:gid:100")
	create("gid", "unix:gid:100")
	create("uid-again", "unix:uid:1000", "unix:uid:1000")
	create("user", "unix:user:alice")
	env.clock.Advance(-time.Hour)
	create("early", "unix:gid:100", "unix:supplementary_gid:5")

	tests := []struct {
		name   string
		caller attest.Set
		want   []string
	}{
		{"uid only", set(t, "unix:uid:1000"), []string{"uid", "uid-again"}},
		{"uid and gid", set(t, "unix:uid:1000", "unix:gid:100"), []string{"uid", "uid-gid", "gid", "uid-again"}},
		{"gid only", set(t, "unix:gid:100"), []string{"gid"}},
		{"everything", set(t, "unix:uid:1000", "unix:gid:100", "unix:user:alice", "unix:supplementary_gid:5"), []string{"early", "uid", "uid-gid", "gid", "uid-again", "user"}},
		{"unrelated selectors", set(t, "unix:uid:1001", "unix:gid:101", "unix:user:bob"), nil},
		{"half of an entry's selectors", set(t, "unix:supplementary_gid:5"), nil},
		{"empty", attest.Set{}, nil},
		{"nil", nil, nil},
	}
	snap := a.Snapshot()
	if want := attest.KindUID | attest.KindGID | attest.KindUser | attest.KindSupplementaryGID; snap.Kinds() != want {
		t.Errorf("Kinds = %b, want %b", snap.Kinds(), want)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []string
			for _, name := range tt.want {
				want = append(want, ids[name])
			}
			if got := entryIDs(snap.Match(tt.caller)); !slices.Equal(got, want) {
				t.Errorf("Match = %v, want %v (%v)", got, want, tt.want)
			}
		})
	}
}
