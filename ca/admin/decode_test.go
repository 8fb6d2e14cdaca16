package admin_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/ca/admin"
)

// requestFiles returns the files of testdata/requests by name.
func requestFiles(tb testing.TB) map[string][]byte {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "requests", "*.json"))
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no request files in testdata (err %v)", err)
	}
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(p)] = data
	}
	return out
}

func sameRequest(a, b admin.EntryRequest) bool {
	// nil and empty lists mean the same; the encoding omits empty DNS names.
	return a.SPIFFEID == b.SPIFFEID && slices.Equal(a.Selectors, b.Selectors) && a.TTL == b.TTL && slices.Equal(a.DNSNames, b.DNSNames) &&
		slices.Equal(a.Nodes, b.Nodes)
}

func TestDecodeEntryRequestFiles(t *testing.T) {
	type want struct {
		req admin.EntryRequest
		ttl time.Duration
	}
	valid := map[string]want{
		"valid-minimal.json": {req: admin.EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1000"}}},
		"valid-full.json": {
			req: admin.EntryRequest{
				SPIFFEID:  "spiffe://example.org/web",
				Selectors: []string{"unix:uid:1000", "systemd:unit:web.service"},
				TTL:       "90s",
				DNSNames:  []string{"web.example.org", "*.web.example.org"},
			},
			ttl: 90 * time.Second,
		},
		// Syntax only: the authority rejects these values.
		"valid-empty-lists.json":  {req: admin.EntryRequest{SPIFFEID: "spiffe://example.org/api"}},
		"valid-negative-ttl.json": {req: admin.EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1"}, TTL: "-5m"}, ttl: -5 * time.Minute},
		// Syntax only: the authority refuses "*" with another node.
		"valid-nodes.json": {req: admin.EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1000"}, Nodes: []string{"web-1", "*"}}},
	}
	// Errors that carry a more precise type than "malformed".
	var (
		typeErr   *json.UnmarshalTypeError
		syntaxErr *json.SyntaxError
	)
	invalid := map[string]func(error) bool{
		"invalid-unknown-field.json":    nil,
		"invalid-two-objects.json":      nil,
		"invalid-ttl-syntax.json":       nil,
		"invalid-ttl-number.json":       func(err error) bool { return errors.As(err, &typeErr) },
		"invalid-selectors-string.json": func(err error) bool { return errors.As(err, &typeErr) },
		"invalid-array.json":            func(err error) bool { return errors.As(err, &typeErr) },
		"invalid-truncated.json":        nil,
		"invalid-empty.json":            nil,
		"invalid-trailing-garbage.json": nil,
		"invalid-syntax-in-object.json": func(err error) bool { return errors.As(err, &syntaxErr) },
	}

	files := requestFiles(t)
	files["invalid-syntax-in-object.json"] = []byte(`{"spiffe_id": spiffe}`)
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			req, ttl, err := admin.DecodeEntryRequest(bytes.NewReader(data))
			if w, ok := valid[name]; ok {
				if err != nil {
					t.Fatalf("DecodeEntryRequest: %v", err)
				}
				if !sameRequest(req, w.req) || ttl != w.ttl {
					t.Errorf("decoded %+v, ttl %s; want %+v, ttl %s", req, ttl, w.req, w.ttl)
				}
				return
			}
			check, ok := invalid[name]
			if !ok {
				t.Fatalf("testdata file %s has no expectation in this table", name)
			}
			if err == nil {
				t.Fatalf("DecodeEntryRequest accepted %q as %+v", data, req)
			}
			t.Logf("DecodeEntryRequest: %v", err)
			if check != nil && !check(err) {
				t.Errorf("error %v is not of the expected type", err)
			}
		})
	}
}

func TestDecodeEntryRequestSizeLimit(t *testing.T) {
	const limit = 1 << 20
	body := func(n int) []byte {
		// {"spiffe_id":"spiffe://example.org/aaa…","selectors":["unix:uid:1"]} of exactly n bytes.
		head, tail := `{"spiffe_id":"spiffe://example.org/`, `","selectors":["unix:uid:1"]}`
		return []byte(head + strings.Repeat("a", n-len(head)-len(tail)) + tail)
	}
	if _, _, err := admin.DecodeEntryRequest(bytes.NewReader(body(limit))); err != nil {
		t.Errorf("a body of exactly 1 MiB was refused: %v", err)
	}
	if _, _, err := admin.DecodeEntryRequest(bytes.NewReader(body(limit + 1))); err == nil {
		t.Error("a body over 1 MiB was accepted")
	}
}

// FuzzDecodeEntryRequest: decoding never panics, and what it accepts
// encodes and decodes again to the same request and TTL.
func FuzzDecodeEntryRequest(f *testing.F) {
	for _, data := range requestFiles(f) {
		f.Add(data)
	}
	for _, s := range []string{
		`{}`,
		`null`,
		`{"spiffe_id":null,"selectors":null,"ttl":"","dns_names":null}`,
		`{"SPIFFE_ID":"spiffe://example.org/x","Selectors":["unix:uid:1"]}`,
		`{"spiffe_id":"spiffe://example.org/x","spiffe_id":"spiffe://example.org/y"}`,
		`{"spiffe_id":"\u00e9\ud800","selectors":["` + "\xff" + `"]}`,
		`{"ttl":"1h2m3.5s"}`,
		`{"ttl":"9223372036854775807ns"}`,
		`{"ttl":"-0"}`,
		`{"nodes":["*"]}`,
		`{"nodes":null}`,
		`{"nodes":["a","a",""]}`,
		` {"selectors":[]} ` + "\n\t",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, ttl, err := admin.DecodeEntryRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		if req.TTL == "" && ttl != 0 {
			t.Fatalf("no ttl given, but decoded ttl %s", ttl)
		}
		if req.TTL != "" {
			if d, err := time.ParseDuration(req.TTL); err != nil || d != ttl {
				t.Fatalf("ttl %q decoded as %s, but ParseDuration gives %s, %v", req.TTL, ttl, d, err)
			}
		}
		enc, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", req, err)
		}
		req2, ttl2, err := admin.DecodeEntryRequest(bytes.NewReader(enc))
		if err != nil {
			t.Fatalf("decoding the re-encoded %s: %v", enc, err)
		}
		if !sameRequest(req, req2) || ttl != ttl2 {
			t.Fatalf("round trip changed the request: %+v (ttl %s) → %s → %+v (ttl %s)", req, ttl, enc, req2, ttl2)
		}
	})
}

// FuzzDecodeRevokeRequest: revoke requests come from the admin socket; the
// decoder must never panic, and whatever it accepts names exactly one
// target and blocks only an ID.
func FuzzDecodeRevokeRequest(f *testing.F) {
	for _, s := range []string{
		`{"spiffe_id":"spiffe://example.org/a","reason":"leak","block":true}`,
		`{"serial":"0a3f"}`,
		`{"serial":"0a3f","block":true}`,
		`{"spiffe_id":"spiffe://example.org/a","serial":"01"}`,
		`{}`,
		`null`,
		`{"spiffe_id":"x"} {"serial":"1"}`,
		`{"reason":"` + strings.Repeat("r", 2000) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := admin.DecodeRevokeRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		if (req.SPIFFEID == "") == (req.Serial == "") {
			t.Fatalf("accepted %+v: not exactly one of spiffe_id and serial", req)
		}
		if req.Block && req.Serial != "" {
			t.Fatalf("accepted a block of a serial: %+v", req)
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		back, err := admin.DecodeRevokeRequest(bytes.NewReader(again))
		if err != nil || back != req {
			t.Fatalf("round trip of %+v gave %+v, %v", req, back, err)
		}
	})
}
