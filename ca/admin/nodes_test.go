package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/ca/admin"
)

func TestNodesAndJoinTokens(t *testing.T) {
	ctx := context.Background()
	e, s := newServer(t)
	var ae *admin.Error

	if list, err := s.client.ListNodes(ctx); err != nil || len(list) != 0 {
		t.Fatalf("ListNodes on a new server = %+v, %v", list, err)
	}
	if code, body := s.raw(t, http.MethodGet, "/v1/nodes", nil); code != http.StatusOK || strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("GET /v1/nodes on a new server = %d %s, want []", code, body)
	}

	tok, err := s.client.CreateJoinToken(ctx, admin.JoinTokenRequest{Node: "web-1", TTL: "30m"})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	if len(tok.Token) != 43 || tok.Node != "web-1" || tok.ExpiresAt.Sub(tok.CreatedAt) != 30*time.Minute {
		t.Fatalf("CreateJoinToken = %+v", tok)
	}
	for _, tt := range []struct {
		body  string
		code  int
		field string
	}{
		{`{"node":"Web-1"}`, http.StatusBadRequest, "node"},
		{`{"node":"*"}`, http.StatusBadRequest, "node"},
		{`{"node":"web-1","ttl":"soon"}`, http.StatusBadRequest, "ttl"},
		{`{"node":"web-1","ttl":"48h"}`, http.StatusBadRequest, "ttl"},
		{`{"node":"web-1","token":"mine"}`, http.StatusBadRequest, ""},
	} {
		code, body := s.raw(t, http.MethodPost, "/v1/tokens", []byte(tt.body))
		var er struct{ Error, Field string }
		json.Unmarshal(body, &er)
		if code != tt.code || er.Field != tt.field || er.Error == "" {
			t.Errorf("POST /v1/tokens %s = %d %s; want %d on field %q", tt.body, code, body, tt.code, tt.field)
		}
	}
	if list, _ := s.client.ListNodes(ctx); len(list) != 0 {
		t.Errorf("a node is listed before its token is used: %+v", list)
	}

	if _, err := e.auth.ConsumeJoinToken(ctx, tok.Token); err != nil {
		t.Fatalf("ConsumeJoinToken: %v", err)
	}
	list, err := s.client.ListNodes(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "web-1" || list[0].Attestation != "join_token" || list[0].Evicted || list[0].EvictedAt != nil {
		t.Fatalf("ListNodes after attestation = %+v, %v", list, err)
	}

	if _, err := s.client.EvictNode(ctx, "ghost"); !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Message != "no node named ghost" {
		t.Errorf("EvictNode(ghost) = %v, want 404 \"no node named ghost\"", err)
	}
	if _, err := s.client.EvictNode(ctx, "Ghost"); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Field != "node" {
		t.Errorf("EvictNode(Ghost) = %v, want 400 on field node", err)
	}
	res, err := s.client.EvictNode(ctx, "web-1")
	if err != nil {
		t.Fatalf("EvictNode: %v", err)
	}
	if res.SPIFFEID != "spiffe://example.org/badge/node/web-1" || !res.Node.Evicted || res.Node.EvictedAt == nil || res.Node.EvictedBy == nil {
		t.Errorf("EvictNode = %+v", res)
	}
	if !e.auth.Snapshot().NodeEvicted("web-1") {
		t.Error("the authority does not report the node evicted")
	}
	// Stable JSON: the same state prints the same document.
	_, first := s.raw(t, http.MethodGet, "/v1/nodes", nil)
	_, second := s.raw(t, http.MethodGet, "/v1/nodes", nil)
	if !bytes.Equal(first, second) || !bytes.Contains(first, []byte(`"evicted": true`)) || !bytes.Contains(first, []byte(`"evicted_by": `)) {
		t.Errorf("GET /v1/nodes is not stable or lacks the eviction:\n%s\n%s", first, second)
	}

	var audited []string
	for _, r := range s.logs.records(t) {
		raw, _ := json.Marshal(r)
		if strings.Contains(string(raw), tok.Token) {
			t.Errorf("the join token is in the server's log: %s", raw)
		}
		if r["audit"] == true && r["status"] != nil && r["status"].(float64) < 300 {
			audited = append(audited, r["method"].(string))
		}
	}
	for _, want := range []string{"POST /v1/tokens", "POST /v1/nodes/web-1/evict"} {
		if !slices.Contains(audited, want) {
			t.Errorf("no audit record of %s in %v", want, audited)
		}
	}
}

func TestEntryNodes(t *testing.T) {
	ctx := context.Background()
	_, s := newServer(t)
	ent, err := s.client.CreateEntry(ctx, admin.EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1000"}, Nodes: []string{"web-2", "web-1"}})
	if err != nil {
		t.Fatalf("CreateEntry: %v", err)
	}
	if !slices.Equal(ent.Nodes, []string{"web-1", "web-2"}) {
		t.Errorf("created entry nodes = %q", ent.Nodes)
	}
	if got, err := s.client.GetEntry(ctx, ent.ID); err != nil || !slices.Equal(got.Nodes, ent.Nodes) {
		t.Errorf("GetEntry = %+v, %v", got, err)
	}
	local, err := s.client.CreateEntry(ctx, admin.EntryRequest{SPIFFEID: "spiffe://example.org/local", Selectors: []string{"unix:uid:1000"}})
	if err != nil {
		t.Fatal(err)
	}
	_, body := s.raw(t, http.MethodGet, "/v1/entries/"+local.ID, nil)
	if bytes.Contains(body, []byte(`"nodes"`)) {
		t.Errorf("an entry without nodes shows a nodes field: %s", body)
	}
	var ae *admin.Error
	if _, err := s.client.CreateEntry(ctx, admin.EntryRequest{SPIFFEID: "spiffe://example.org/x", Selectors: []string{"unix:uid:1"}, Nodes: []string{"*", "web-1"}}); !errors.As(err, &ae) || ae.Field != "node" {
		t.Errorf("CreateEntry(nodes * and web-1) = %v, want 400 on field node", err)
	}
}

func TestDecodeJoinTokenRequest(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want admin.JoinTokenRequest
		ttl  time.Duration
		ok   bool
	}{
		{`{"node":"web-1"}`, admin.JoinTokenRequest{Node: "web-1"}, 0, true},
		{`{"node":"web-1","ttl":"90m"}`, admin.JoinTokenRequest{Node: "web-1", TTL: "90m"}, 90 * time.Minute, true},
		{`{"node":"web-1","ttl":"0s"}`, admin.JoinTokenRequest{}, 0, false},
		{`{"node":"web-1","ttl":3600}`, admin.JoinTokenRequest{}, 0, false},
		{`{"node":"web-1","extra":1}`, admin.JoinTokenRequest{}, 0, false},
		{`{"node":"a"} {"node":"b"}`, admin.JoinTokenRequest{}, 0, false},
		{`[]`, admin.JoinTokenRequest{}, 0, false},
		{``, admin.JoinTokenRequest{}, 0, false},
	} {
		got, ttl, err := admin.DecodeJoinTokenRequest(strings.NewReader(tt.in))
		if (err == nil) != tt.ok || (tt.ok && (got != tt.want || ttl != tt.ttl)) {
			t.Errorf("DecodeJoinTokenRequest(%s) = %+v, %s, %v", tt.in, got, ttl, err)
		}
	}
}

// FuzzDecodeJoinTokenRequest: token requests come from the admin socket;
// the decoder never panics, and what it accepts has a positive TTL or
// none, and survives a round trip.
func FuzzDecodeJoinTokenRequest(f *testing.F) {
	for _, s := range []string{
		`{"node":"web-1"}`,
		`{"node":"web-1","ttl":"1h"}`,
		`{"node":"*","ttl":"-1h"}`,
		`{"node":"web-1","ttl":"0"}`,
		`{"node":null,"ttl":null}`,
		`{}`,
		`null`,
		`{"node":"\u00e9\ud800"}`,
		`{"ttl":"9223372036854775807ns"}`,
		`{"node":"a"}` + "\n" + `{"node":"b"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, ttl, err := admin.DecodeJoinTokenRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		if (req.TTL == "") != (ttl == 0) {
			t.Fatalf("ttl %q decoded as %s", req.TTL, ttl)
		}
		enc, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		back, ttl2, err := admin.DecodeJoinTokenRequest(bytes.NewReader(enc))
		if err != nil || back != req || ttl2 != ttl {
			t.Fatalf("round trip of %+v gave %+v (ttl %s), %v", req, back, ttl2, err)
		}
	})
}
