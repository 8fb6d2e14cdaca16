package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/unixsock"
	"github.com/badge-dev/badge/storage/bbolt"
)

// childEnv, when set, makes the test binary act as an admin client on the
// socket it names instead of running tests (see TestNonRootRefused).
const childEnv = "BADGE_ADMIN_TEST_CLIENT_SOCKET"

func TestMain(m *testing.M) {
	if sock := os.Getenv(childEnv); sock != "" {
		os.Exit(runChildClient(sock))
	}
	os.Exit(m.Run())
}

// childResult is what the child client reports on stdout.
type childResult struct {
	UID          int    `json:"uid"`
	ListStatus   int    `json:"list_status"`
	CreateStatus int    `json:"create_status"`
	Err          string `json:"err,omitempty"`
}

func runChildClient(sock string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := admin.NewClient(sock)
	res := childResult{UID: os.Getuid()}
	status := func(err error, ok int) int {
		var ae *admin.Error
		switch {
		case err == nil:
			return ok
		case errors.As(err, &ae):
			return ae.Status
		default:
			res.Err += err.Error() + "; "
			return -1
		}
	}
	_, err := c.ListEntries(ctx)
	res.ListStatus = status(err, http.StatusOK)
	_, err = c.CreateEntry(ctx, admin.EntryRequest{SPIFFEID: "spiffe://example.org/intruder", Selectors: []string{"unix:uid:1001"}})
	res.CreateStatus = status(err, http.StatusCreated)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

// env is a real authority on a real bbolt store; it can be restarted.
type env struct {
	dir  string
	db   string
	keys string

	store *bbolt.Store
	auth  *ca.Authority
}

// shortTempDir is a temporary directory with a path short enough for a
// Unix socket (108 bytes) whatever the test's name.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "badge-admin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := shortTempDir(t)
	e := &env{dir: dir, db: filepath.Join(dir, "badge.db"), keys: filepath.Join(dir, "keys")}
	e.open(t)
	return e
}

func (e *env) open(t *testing.T) {
	t.Helper()
	s, err := bbolt.Open(e.db, &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.New(context.Background(), ca.Config{Store: s, KeyDir: e.keys})
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	e.store, e.auth = s, a
	t.Cleanup(e.close)
}

func (e *env) close() {
	if e.auth != nil {
		e.auth.Close()
		e.store.Close()
		e.auth, e.store = nil, nil
	}
}

// server is an admin server on a real Unix socket.
type server struct {
	sock   string
	client *admin.Client
	http   *http.Client // raw requests, for what admin.Client hides
	logs   *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the JSON log records written so far.
func (b *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(b.buf.Bytes()))
	for dec.More() {
		var r map[string]any
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("log is not JSON lines: %v", err)
		}
		out = append(out, r)
	}
	return out
}

func startServer(t *testing.T, dir string, cfg admin.Config) *server {
	t.Helper()
	sock := filepath.Join(dir, "admin.sock")
	l, err := unixsock.Listen(sock, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := admin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	t.Cleanup(hc.CloseIdleConnections)
	return &server{sock: sock, client: admin.NewClient(sock), http: hc, logs: logs}
}

// raw sends one request and returns the status and body.
func (s *server) raw(t *testing.T, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://badge"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

func newServer(t *testing.T) (*env, *server) {
	t.Helper()
	e := newEnv(t)
	return e, startServer(t, e.dir, admin.Config{Authority: e.auth})
}

// TestNewRequiresAuthority: a Config without its Authority is refused by
// New, rather than panicking at the first request.
func TestNewRequiresAuthority(t *testing.T) {
	srv, err := admin.New(admin.Config{Logger: slog.New(slog.DiscardHandler)})
	if err == nil || srv != nil {
		t.Fatalf("New = %v, %v; want an error", srv, err)
	}
	t.Logf("New: %v", err)
}

func TestSocketMode(t *testing.T) {
	_, s := newServer(t)
	fi, err := os.Stat(s.sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode = %v, want a socket of mode 0600", fi.Mode())
	}
}

func TestEntriesRoundTrip(t *testing.T) {
	ctx := context.Background()
	_, s := newServer(t)
	c := s.client

	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	if es, err := c.ListEntries(ctx); err != nil || len(es) != 0 {
		t.Fatalf("ListEntries on an empty store = %v, %v; want none", es, err)
	}
	if code, body := s.raw(t, http.MethodGet, "/v1/entries", nil); code != http.StatusOK || strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("empty list = %d %q, want 200 and []", code, body)
	}

	req := admin.EntryRequest{
		SPIFFEID:  "spiffe://example.org/web",
		Selectors: []string{"unix:uid:1000", "systemd:unit:web.service"},
		TTL:       "2m",
		DNSNames:  []string{"Web.Example.org"},
	}
	before := time.Now()
	created, err := c.CreateEntry(ctx, req)
	if err != nil {
		t.Fatalf("CreateEntry: %v", err)
	}
	want := admin.Entry{
		ID:        created.ID,
		SPIFFEID:  "spiffe://example.org/web",
		Selectors: []string{"systemd:unit:web.service", "unix:uid:1000"},
		TTL:       "2m0s",
		DNSNames:  []string{"web.example.org"},
		CreatedAt: created.CreatedAt,
		Revision:  1,
	}
	if !sameEntry(created, want) || created.ID == "" {
		t.Errorf("CreateEntry = %+v, want %+v", created, want)
	}
	if created.CreatedAt.Before(before.Add(-time.Second)) || created.CreatedAt.After(time.Now()) || created.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v, want a UTC time around now", created.CreatedAt)
	}
	second, err := c.CreateEntry(ctx, admin.EntryRequest{SPIFFEID: "spiffe://example.org/db", Selectors: []string{"unix:uid:1001"}})
	if err != nil {
		t.Fatalf("CreateEntry: %v", err)
	}

	got, err := c.GetEntry(ctx, created.ID)
	if err != nil || !sameEntry(got, created) {
		t.Errorf("GetEntry = %+v, %v; want %+v", got, err, created)
	}
	list, err := c.ListEntries(ctx)
	if err != nil || len(list) != 2 || !sameEntry(list[0], created) || !sameEntry(list[1], second) {
		t.Errorf("ListEntries = %+v, %v; want the two entries in creation order", list, err)
	}

	if err := c.DeleteEntry(ctx, created.ID); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	var ae *admin.Error
	if _, err := c.GetEntry(ctx, created.ID); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("GetEntry(deleted) = %v, want a 404 *admin.Error", err)
	}
	if list, err := c.ListEntries(ctx); err != nil || len(list) != 1 || list[0].ID != second.ID {
		t.Errorf("ListEntries after delete = %+v, %v; want only %s", list, err, second.ID)
	}
}

func sameEntry(a, b admin.Entry) bool {
	return a.ID == b.ID && a.SPIFFEID == b.SPIFFEID && slices.Equal(a.Selectors, b.Selectors) &&
		a.TTL == b.TTL && slices.Equal(a.DNSNames, b.DNSNames) && a.CreatedAt.Equal(b.CreatedAt) && a.Revision == b.Revision
}

func TestBadRequests(t *testing.T) {
	ctx := context.Background()
	e, s := newServer(t)
	good := func(mod func(*admin.EntryRequest)) admin.EntryRequest {
		r := admin.EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1000"}}
		mod(&r)
		return r
	}
	tests := []struct {
		name  string
		req   admin.EntryRequest
		field string
	}{
		{"malformed SPIFFE ID", good(func(r *admin.EntryRequest) { r.SPIFFEID = "spiffe:/api" }), "spiffe_id"},
		{"other trust domain", good(func(r *admin.EntryRequest) { r.SPIFFEID = "spiffe://other.org/api" }), "spiffe_id"},
		{"trust domain only", good(func(r *admin.EntryRequest) { r.SPIFFEID = "spiffe://example.org" }), "spiffe_id"},
		{"no selectors", good(func(r *admin.EntryRequest) { r.Selectors = nil }), "selector"},
		{"unknown selector type", good(func(r *admin.EntryRequest) { r.Selectors = []string{"k8s:ns:default"} }), "selector"},
		{"bad selector value", good(func(r *admin.EntryRequest) { r.Selectors = []string{"unix:uid:root"} }), "selector"},
		{"TTL over the maximum", good(func(r *admin.EntryRequest) { r.TTL = "1h" }), "ttl"},
		{"TTL below the minimum", good(func(r *admin.EntryRequest) { r.TTL = "1s" }), "ttl"},
		{"negative TTL", good(func(r *admin.EntryRequest) { r.TTL = "-5m" }), "ttl"},
		{"unparsable TTL", good(func(r *admin.EntryRequest) { r.TTL = "five minutes" }), "ttl"},
		{"bad DNS name", good(func(r *admin.EntryRequest) { r.DNSNames = []string{"a_b.example.org"} }), "dns_name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.client.CreateEntry(ctx, tt.req)
			var ae *admin.Error
			if !errors.As(err, &ae) {
				t.Fatalf("CreateEntry(%+v) = %v, want an *admin.Error", tt.req, err)
			}
			if ae.Status != http.StatusBadRequest || ae.Field != tt.field || ae.Message == "" {
				t.Errorf("error = %+v, want status 400, field %q and a message", ae, tt.field)
			}
		})
	}

	// Requests admin.Client never sends: no field to blame, still 400.
	raws := []struct {
		name   string
		method string
		path   string
		body   string
		status int
	}{
		{"not JSON", http.MethodPost, "/v1/entries", "spiffe://example.org/api", http.StatusBadRequest},
		{"unknown field", http.MethodPost, "/v1/entries", `{"spiffe_id":"spiffe://example.org/api","selector":["unix:uid:1"]}`, http.StatusBadRequest},
		{"two objects", http.MethodPost, "/v1/entries", `{"spiffe_id":"spiffe://example.org/a","selectors":["unix:uid:1"]}{}`, http.StatusBadRequest},
		{"body over 1 MiB", http.MethodPost, "/v1/entries", `{"spiffe_id":"` + strings.Repeat("a", 1<<20) + `"}`, http.StatusBadRequest},
		{"unknown bundle format", http.MethodGet, "/v1/bundle?format=der", "", http.StatusBadRequest},
		{"unknown path", http.MethodGet, "/v1/nothing", "", http.StatusNotFound},
		{"wrong method", http.MethodPut, "/v1/entries", "{}", http.StatusMethodNotAllowed},
	}
	for _, tt := range raws {
		t.Run(tt.name, func(t *testing.T) {
			code, body := s.raw(t, tt.method, tt.path, []byte(tt.body))
			if code != tt.status {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, code, body, tt.status)
			}
		})
	}
	if es, err := e.auth.ListEntries(ctx); err != nil || len(es) != 0 {
		t.Errorf("bad requests stored %d entries (err %v)", len(es), err)
	}
}

func TestNotFoundAndConflict(t *testing.T) {
	ctx := context.Background()
	_, s := newServer(t)
	req := admin.EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1000"}}
	if _, err := s.client.CreateEntry(ctx, req); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		call   func() error
		status int
	}{
		{"get unknown", func() error { _, err := s.client.GetEntry(ctx, "0123456789abcdef"); return err }, http.StatusNotFound},
		{"delete unknown", func() error { return s.client.DeleteEntry(ctx, "0123456789abcdef") }, http.StatusNotFound},
		{"get with slash in id", func() error { _, err := s.client.GetEntry(ctx, "../entries"); return err }, http.StatusNotFound},
		{"duplicate", func() error { _, err := s.client.CreateEntry(ctx, req); return err }, http.StatusConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ae *admin.Error
			if err := tt.call(); !errors.As(err, &ae) || ae.Status != tt.status {
				t.Errorf("error = %v, want an *admin.Error with status %d", err, tt.status)
			}
		})
	}
}

func TestBundle(t *testing.T) {
	ctx := context.Background()
	e, s := newServer(t)
	snap := e.auth.Snapshot()
	want := snap.Bundle().X509Authorities()

	for _, format := range []string{"", "pem"} {
		t.Run("pem/"+format, func(t *testing.T) {
			data, err := s.client.Bundle(ctx, format)
			if err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			for rest := data; ; {
				var b *pem.Block
				if b, rest = pem.Decode(rest); b == nil {
					if len(bytes.TrimSpace(rest)) != 0 {
						t.Errorf("trailing data after the PEM blocks: %q", rest)
					}
					break
				}
				if b.Type != "CERTIFICATE" {
					t.Errorf("PEM block of type %q", b.Type)
				}
				got = append(got, b.Bytes)
			}
			if len(got) != len(want) {
				t.Fatalf("%d certificates, want %d", len(got), len(want))
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i].Raw) {
					t.Errorf("certificate %d differs from the snapshot's bundle", i)
				}
			}
		})
	}
	t.Run("jwks", func(t *testing.T) {
		data, err := s.client.Bundle(ctx, "jwks")
		if err != nil {
			t.Fatal(err)
		}
		b, err := spiffebundle.Parse(snap.TrustDomain(), data)
		if err != nil {
			t.Fatalf("spiffebundle.Parse: %v", err)
		}
		if !b.X509Bundle().Equal(snap.Bundle()) {
			t.Errorf("JWKS bundle differs from the snapshot's bundle")
		}
	})
}

func TestStableJSON(t *testing.T) {
	ctx := context.Background()
	e, s := newServer(t)
	var ids []string
	for i, sels := range [][]string{{"unix:uid:1"}, {"unix:gid:2", "unix:uid:1"}, {"unix:user:alice"}} {
		ent, err := s.client.CreateEntry(ctx, admin.EntryRequest{
			SPIFFEID: fmt.Sprintf("spiffe://example.org/w%d", i), Selectors: sels, TTL: "90s", DNSNames: []string{fmt.Sprintf("w%d.example.org", i)},
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ent.ID)
	}
	paths := []string{"/v1/entries", "/v1/entries/" + ids[1], "/v1/bundle?format=pem", "/v1/bundle?format=jwks"}
	first := make(map[string][]byte)
	for _, p := range paths {
		code, body := s.raw(t, http.MethodGet, p, nil)
		if code != http.StatusOK {
			t.Fatalf("GET %s = %d %s", p, code, body)
		}
		first[p] = body
		if _, again := s.raw(t, http.MethodGet, p, nil); !bytes.Equal(again, body) {
			t.Errorf("GET %s twice gave different documents:\n%s\n%s", p, body, again)
		}
	}

	// The same state after a restart prints the same documents.
	e.close()
	s2dir := filepath.Join(e.dir, "restart")
	e.open(t)
	s2 := startServer(t, s2dir, admin.Config{Authority: e.auth})
	for _, p := range paths {
		if _, body := s2.raw(t, http.MethodGet, p, nil); !bytes.Equal(body, first[p]) {
			t.Errorf("GET %s after restart:\n%s\nwant\n%s", p, body, first[p])
		}
	}
}

func TestAuditLog(t *testing.T) {
	ctx := context.Background()
	_, s := newServer(t)
	ent, err := s.client.CreateEntry(ctx, admin.EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.ListEntries(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.client.DeleteEntry(ctx, ent.ID); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range s.logs.records(t) {
		if r[logkey.Audit] == true && r["msg"] == "admin request" {
			got = append(got, fmt.Sprintf("%v %v uid=%v", r[logkey.Method], r["status"], r[logkey.AdminUID]))
		}
	}
	uid := os.Geteuid()
	want := []string{
		fmt.Sprintf("POST /v1/entries 201 uid=%d", uid),
		fmt.Sprintf("DELETE /v1/entries/%s 204 uid=%d", ent.ID, uid),
	}
	if !slices.Equal(got, want) {
		t.Errorf("audit records = %q, want %q (reads are not audited)", got, want)
	}
}

// TestNonRootRefused runs an admin client as uid 1001 in a child process
// against a socket whose file mode would let it in: the server must still
// refuse it from its SO_PEERCRED credentials, unless 1001 is allowed.
func TestNonRootRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts an admin client as uid 1001 to test the SO_PEERCRED check")
	}
	const uid = 1001
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		allowed      []uint32
		list, create int
	}{
		{"only root", []uint32{}, http.StatusForbidden, http.StatusForbidden},
		{"1001 allowed", []uint32{uid}, http.StatusOK, http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			// The test binary's own directory may be 0700: copy it
			// where uid 1001 can run it, beside a socket it can reach.
			if err := os.Chmod(e.dir, 0o755); err != nil {
				t.Fatal(err)
			}
			bin := filepath.Join(e.dir, "admin.test")
			copyExecutable(t, exe, bin)
			s := startServer(t, e.dir, admin.Config{Authority: e.auth, AllowedUIDs: tt.allowed})
			if err := os.Chmod(s.sock, 0o666); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			cmd.Env = append(os.Environ(), childEnv+"="+s.sock)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child client: %v\n%s", err, stderr.Bytes())
			}
			var res childResult
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("child output %q: %v", out, err)
			}
			if res.UID != uid || res.Err != "" {
				t.Fatalf("child ran as uid %d with error %q; want uid %d reaching the server", res.UID, res.Err, uid)
			}
			if res.ListStatus != tt.list || res.CreateStatus != tt.create {
				t.Errorf("uid %d: list %d, create %d; want %d, %d", uid, res.ListStatus, res.CreateStatus, tt.list, tt.create)
			}
			es, err := e.auth.ListEntries(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if created := len(es) == 1; created != (tt.create == http.StatusCreated) {
				t.Errorf("%d entries after the child's create, want the create to take effect only if allowed", len(es))
			}
			if tt.list == http.StatusForbidden {
				refused := 0
				for _, r := range s.logs.records(t) {
					if r["msg"] == "admin request refused" && r[logkey.AdminUID] == float64(uid) && r[logkey.Audit] == true {
						refused++
					}
				}
				if refused != 2 {
					t.Errorf("%d audit records of refused requests from uid %d, want 2", refused, uid)
				}
			}
		})
	}
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
