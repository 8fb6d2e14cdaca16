package ca

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/storage"
)

func TestParseNodeName(t *testing.T) {
	for _, ok := range []string{
		"a", "web-1", "node-a.example.org", "0", "1.2.3.4", strings.Repeat("a", 63) + "." + strings.Repeat("b", 63),
		strings.Repeat(strings.Repeat("a", 62)+".", 4) + "a", // 253 bytes
	} {
		if got, err := ParseNodeName(ok); err != nil || got != ok {
			t.Errorf("ParseNodeName(%q) = %q, %v; want it accepted unchanged", ok, got, err)
		}
	}
	for _, bad := range []string{
		"", "*", "Web", "web_1", "web 1", "-web", "web-", "a..b", ".a", "a.", "a/b", "a\x00", "é",
		strings.Repeat("a", 64), strings.Repeat(strings.Repeat("a", 62)+".", 4) + "ab", "*.example.org",
	} {
		_, err := ParseNodeName(bad)
		var inv *InvalidError
		if !errors.As(err, &inv) || inv.Field != "node" {
			t.Errorf("ParseNodeName(%q) = %v; want an InvalidError on field node", bad, err)
			continue
		}
		if len(bad) <= 64 && !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("ParseNodeName(%q): error %q does not name the input", bad, err)
		}
	}
}

// FuzzParseNodeName: never panics; what it accepts is a lower-case DNS
// name that makes a valid node SVID ID, and is returned unchanged.
func FuzzParseNodeName(f *testing.F) {
	for _, s := range []string{"web-1", "a.b.c", "*", "", "A", "a..b", "-", strings.Repeat("a", 300), "x\x00y", "é.example"} {
		f.Add(s)
	}
	a, _ := newTestAuthority(f, nil)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseNodeName(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseNodeName(%q) = %v, not an ErrInvalid", s, err)
			}
			return
		}
		if got != s || len(s) == 0 || len(s) > 253 || strings.ContainsAny(s, "*/ \x00") || strings.ToLower(s) != s {
			t.Fatalf("ParseNodeName accepted %q as %q", s, got)
		}
		id, err := a.NodeID(s)
		if err != nil || id.Path() != NodePath+s {
			t.Fatalf("NodeID(%q) = %v, %v", s, id, err)
		}
	})
}

func TestCreateEntryNodes(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	ctx := context.Background()
	tests := []struct {
		name  string
		nodes []string
		want  []string
		field string // error expected on this field
	}{
		{"none", nil, nil, ""},
		{"sorted and de-duplicated", []string{"web-2", "web-1", "web-2"}, []string{"web-1", "web-2"}, ""},
		{"every node", []string{"*"}, []string{"*"}, ""},
		{"every node twice", []string{"*", "*"}, []string{"*"}, ""},
		{"every node and one", []string{"*", "web-1"}, nil, "node"},
		{"upper case", []string{"Web-1"}, nil, "node"},
		{"wildcard label", []string{"*.example.org"}, nil, "node"},
		{"empty name", []string{""}, nil, "node"},
		{"too many", func() []string {
			out := make([]string, maxEntryNodes+1)
			for i := range out {
				out[i] = "n" + strings.Repeat("x", i%50) + string(rune('a'+i%26))
			}
			return out
		}(), nil, "node"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := a.CreateEntry(ctx, EntryRequest{
				SPIFFEID:  "spiffe://example.org/svc/" + strings.ReplaceAll(tt.name, " ", "-"),
				Selectors: []string{"unix:uid:" + string(rune('0'+i%10))},
				Nodes:     tt.nodes,
			})
			if tt.field != "" {
				var inv *InvalidError
				if !errors.As(err, &inv) || inv.Field != tt.field {
					t.Fatalf("CreateEntry(nodes %q) = %v; want an InvalidError on %s", tt.nodes, err, tt.field)
				}
				return
			}
			if err != nil {
				t.Fatalf("CreateEntry(nodes %q): %v", tt.nodes, err)
			}
			if !slices.Equal(e.Nodes, tt.want) {
				t.Errorf("stored nodes %q, want %q", e.Nodes, tt.want)
			}
			if got, _ := a.GetEntry(ctx, e.ID); !slices.Equal(got.Nodes, tt.want) {
				t.Errorf("read back nodes %q, want %q", got.Nodes, tt.want)
			}
		})
	}
	// The same ID and selectors on another node scope is another entry;
	// on the same scope it is a duplicate.
	req := EntryRequest{SPIFFEID: "spiffe://example.org/dup", Selectors: []string{"unix:uid:7"}}
	for _, nodes := range [][]string{nil, {"a"}, {"*"}} {
		req.Nodes = nodes
		if _, err := a.CreateEntry(ctx, req); err != nil {
			t.Errorf("CreateEntry(nodes %q): %v", nodes, err)
		}
	}
	req.Nodes = []string{"a"}
	if _, err := a.CreateEntry(ctx, req); !errors.Is(err, storage.ErrExists) {
		t.Errorf("duplicate on the same node = %v, want ErrExists", err)
	}
}

// TestNodeEntriesNotMatchedLocally: an entry scoped to nodes is never
// matched on the server's own socket; the per-node view serves it to its
// nodes only.
func TestNodeEntriesNotMatchedLocally(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	ctx := context.Background()
	create := func(path string, nodes ...string) string {
		t.Helper()
		env.clock.Advance(time.Second) // creation order is (CreatedAt, ID) order
		e, err := a.CreateEntry(ctx, EntryRequest{SPIFFEID: "spiffe://example.org/" + path, Selectors: []string{"unix:uid:1000"}, Nodes: nodes})
		if err != nil {
			t.Fatal(err)
		}
		return e.ID
	}
	onlyB := create("only-b", "node-b")
	local := create("local")
	every := create("every", "*")
	onAB := create("a-and-b", "node-a", "node-b")
	// Selector kinds used only by node entries are not computed locally.
	env.clock.Advance(time.Second)
	gid, err := a.CreateEntry(ctx, EntryRequest{SPIFFEID: "spiffe://example.org/gid", Selectors: []string{"unix:gid:5"}, Nodes: []string{"node-a"}})
	if err != nil {
		t.Fatal(err)
	}

	snap := a.Snapshot()
	if got := entryIDs(snap.Match(set(t, "unix:uid:1000", "unix:gid:5"))); !slices.Equal(got, []string{local}) {
		t.Errorf("Match on the server's socket = %v, want only the local entry %s", got, local)
	}
	if snap.Kinds() != attest.KindUID {
		t.Errorf("Kinds = %b: node entries' kinds leak into local attestation", snap.Kinds())
	}
	for _, tt := range []struct {
		node string
		want []string
	}{
		{"node-a", []string{every, onAB, gid.ID}},
		{"node-b", []string{onlyB, every, onAB}},
		{"node-c", []string{every}},
		{"*", nil},
	} {
		if got := entryIDs(snap.EntriesForNode(tt.node)); !slices.Equal(got, tt.want) {
			t.Errorf("EntriesForNode(%s) = %v, want %v", tt.node, got, tt.want)
		}
	}
	// A blocked ID is served to no node.
	if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: "spiffe://example.org/every", Block: true}); err != nil {
		t.Fatal(err)
	}
	if got := entryIDs(a.Snapshot().EntriesForNode("node-c")); len(got) != 0 {
		t.Errorf("EntriesForNode(node-c) after blocking = %v, want none", got)
	}
}

// logRecords is a JSON log that tests can read.
type logRecords struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logRecords) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logRecords) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// find returns the records with the given message.
func (l *logRecords) find(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(l.String()) {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

func withLog(logs *logRecords) func(*Config) {
	return func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

func TestJoinToken(t *testing.T) {
	logs := &logRecords{}
	a, env := newTestAuthority(t, withLog(logs))
	ctx := context.Background()

	rec, token, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: "web-1", AdminUID: 1000})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	if len(token) != 43 || rec.Node != "web-1" || rec.ExpiresAt.Sub(rec.CreatedAt) != DefaultJoinTokenTTL || rec.Hash == token || strings.Contains(rec.Hash, token) {
		t.Fatalf("CreateJoinToken = %+v, %q", rec, token)
	}
	if got, _ := a.ListNodes(ctx); len(got) != 0 {
		t.Errorf("a node is listed before its token is used: %+v", got)
	}
	for _, ttl := range []time.Duration{-time.Minute, time.Second, MaxJoinTokenTTL + time.Second} {
		var inv *InvalidError
		if _, _, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: "web-1", TTL: ttl}); !errors.As(err, &inv) || inv.Field != "ttl" {
			t.Errorf("CreateJoinToken(ttl %s) = %v, want an InvalidError on ttl", ttl, err)
		}
	}
	if _, _, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: "Web"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("CreateJoinToken(node Web) = %v, want ErrInvalid", err)
	}

	for _, tt := range []struct {
		name  string
		token string
		is    error
	}{
		{"unknown", strings.Repeat("A", 43), storage.ErrNotFound},
		{"empty", "", storage.ErrNotFound},
		{"over-long", strings.Repeat("A", MaxJoinTokenLen+1), storage.ErrNotFound},
	} {
		if _, err := a.ConsumeJoinToken(ctx, tt.token); !errors.Is(err, ErrJoinTokenRefused) || !errors.Is(err, tt.is) {
			t.Errorf("ConsumeJoinToken(%s) = %v, want ErrJoinTokenRefused and %v", tt.name, err, tt.is)
		}
	}
	node, err := a.ConsumeJoinToken(ctx, token)
	if err != nil {
		t.Fatalf("ConsumeJoinToken: %v", err)
	}
	if node.Name != "web-1" || node.Attestation != storage.AttestJoinToken || !node.LastAttestedAt.Equal(env.clock.Now()) || node.Evicted() {
		t.Errorf("attested node = %+v", node)
	}
	if _, err := a.ConsumeJoinToken(ctx, token); !errors.Is(err, storage.ErrTokenUsed) || !errors.Is(err, ErrJoinTokenRefused) {
		t.Errorf("second ConsumeJoinToken = %v, want ErrTokenUsed", err)
	}
	if got, _ := a.ListNodes(ctx); len(got) != 1 || got[0].Name != "web-1" {
		t.Errorf("ListNodes = %+v, want web-1", got)
	}

	_, late, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: "web-2", TTL: MinJoinTokenTTL})
	if err != nil {
		t.Fatal(err)
	}
	env.clock.Advance(MinJoinTokenTTL)
	if _, err := a.ConsumeJoinToken(ctx, late); !errors.Is(err, storage.ErrTokenExpired) {
		t.Errorf("ConsumeJoinToken at expiry = %v, want ErrTokenExpired", err)
	}

	if strings.Contains(logs.String(), token) || strings.Contains(logs.String(), late) {
		t.Errorf("a join token is in the log:\n%s", logs)
	}
	created := logs.find(t, "join token created")
	if len(created) != 2 || created[0]["audit"] != true || created[0]["admin_uid"] != 1000.0 || created[0]["node"] != "web-1" {
		t.Errorf("audit of token creation = %v", created)
	}
	attested := logs.find(t, "node attested")
	if len(attested) != 1 || attested[0]["audit"] != true || attested[0]["node"] != "web-1" || attested[0]["attestation"] != "join_token" {
		t.Errorf("audit of node registration = %v", attested)
	}
	refused := logs.find(t, "join token refused")
	var reasons []string
	for _, r := range refused {
		reasons = append(reasons, r["reason"].(string))
	}
	if want := []string{"unknown", "malformed", "malformed", "used", "expired"}; !slices.Equal(reasons, want) {
		t.Errorf("refusals logged with reasons %v, want %v", reasons, want)
	}
}

// TestJoinTokenRace: of concurrent agents presenting one token, exactly
// one is attested.
func TestJoinTokenRace(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	_, token, err := a.CreateJoinToken(context.Background(), JoinTokenRequest{Node: "race"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = a.ConsumeJoinToken(context.Background(), token)
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
		} else if !errors.Is(err, storage.ErrTokenUsed) {
			t.Errorf("loser: %v, want ErrTokenUsed", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d agents attested with one token, want 1", wins)
	}
}

// TestAttestJoinToken: the agent listener's path refuses unknown, used and
// expired tokens as ConsumeJoinToken does, reading only the presented
// token: a damaged record of another token is reported for that token
// alone, as a store failure, and does not stop the others.
func TestAttestJoinToken(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	a := env.open(t, nil)
	var tokens []string
	for _, node := range []string{"web-1", "web-2", "web-3", "damaged"} {
		_, tok, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: node, TTL: MinJoinTokenTTL})
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tok)
	}
	web1, web2, web3, damaged := tokens[0], tokens[1], tokens[2], tokens[3]
	a.Close()
	env.store.Close()
	dir := filepath.Dir(env.keyDir)
	db, err := bolt.Open(filepath.Join(dir, "badge.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	hash := hashJoinToken(damaged)
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("join_tokens")).Put([]byte(hash), []byte(`{"hash":"`+hash+`","node":7}`))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	env.store = openStore(t, dir, true)
	logs := &logRecords{}
	a = env.open(t, withLog(logs))
	attest := func(token string) (storage.Node, error) {
		node, _, err := a.AttestJoinToken(ctx, token, csrOf(t, ecKey(t, elliptic.P256())), DefaultNodeSVIDTTL)
		return node, err
	}

	if node, err := attest(web1); err != nil || node.Name != "web-1" {
		t.Fatalf("AttestJoinToken(sound token beside a damaged one) = %+v, %v; want node web-1", node, err)
	}
	_, err = attest(damaged)
	if !errors.Is(err, storage.ErrCorrupt) || errors.Is(err, ErrJoinTokenRefused) {
		t.Errorf("AttestJoinToken(damaged) = %v, want ErrCorrupt and no refusal", err)
	}
	if node, err := attest(web2); err != nil || node.Name != "web-2" {
		t.Errorf("AttestJoinToken(sound token after the damaged one) = %+v, %v; want node web-2", node, err)
	}
	env.clock.Advance(MinJoinTokenTTL)
	for _, tt := range []struct {
		name, token string
		is          error
	}{
		{"unknown", strings.Repeat("A", 43), storage.ErrNotFound},
		{"used", web1, storage.ErrTokenUsed},
		{"expired", web3, storage.ErrTokenExpired},
	} {
		_, err := attest(tt.token)
		if !errors.Is(err, ErrJoinTokenRefused) || !errors.Is(err, tt.is) {
			t.Errorf("AttestJoinToken(%s) = %v, want ErrJoinTokenRefused and %v", tt.name, err, tt.is)
		} else if h := hashJoinToken(tt.token); strings.Contains(err.Error(), h) {
			t.Errorf("AttestJoinToken(%s) = %v: the refusal names the token's hash", tt.name, err)
		}
	}
	var reasons []string
	for _, r := range logs.find(t, "join token refused") {
		reasons = append(reasons, r["reason"].(string))
	}
	if want := []string{"unknown", "used", "expired"}; !slices.Equal(reasons, want) {
		t.Errorf("refusals logged with reasons %v, want %v", reasons, want)
	}
}

// nodeEntry is the entry a later agent listener signs node SVIDs with.
func nodeEntry(t *testing.T, a *Authority, name string) *Entry {
	t.Helper()
	e, err := a.nodeEntry(name)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEvictNode(t *testing.T) {
	logs := &logRecords{}
	env := newEnv(t)
	a := env.open(t, withLog(logs))
	ctx := context.Background()

	var ae error
	if _, ae = a.EvictNode(ctx, "ghost", 0); !errors.Is(ae, storage.ErrNotFound) || ae.Error() != "no node named ghost" {
		t.Errorf("EvictNode(ghost) = %v, want ErrNotFound \"no node named ghost\"", ae)
	}
	if _, err := a.EvictNode(ctx, "Ghost", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("EvictNode(Ghost) = %v, want ErrInvalid", err)
	}

	_, token, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ConsumeJoinToken(ctx, token); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateEntry(ctx, EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1"}, Nodes: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	ne := nodeEntry(t, a, "web-1")
	svid, err := a.SignX509SVID(ctx, a.Snapshot(), ne)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetNodeSVID(ctx, "web-1", svid.Serial); err != nil {
		t.Fatalf("SetNodeSVID: %v", err)
	}
	// A token made before the eviction must not bring the node back.
	_, stale, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	before := a.Snapshot()
	if len(before.EntriesForNode("web-1")) != 1 || before.NodeEvicted("web-1") {
		t.Fatalf("before eviction: %d entries, evicted %v", len(before.EntriesForNode("web-1")), before.NodeEvicted("web-1"))
	}

	res, err := a.EvictNode(ctx, "web-1", 1000)
	if err != nil {
		t.Fatalf("EvictNode: %v", err)
	}
	if res.Revoked != 1 || res.CancelledTokens != 1 || res.SPIFFEID != "spiffe://example.org/badge/node/web-1" || !res.Node.Evicted() || res.Node.EvictedBy != 1000 {
		t.Errorf("EvictNode = %+v", res)
	}
	select {
	case <-before.Done():
	default:
		t.Fatal("no new snapshot was published")
	}
	check := func(when string, a *Authority) {
		t.Helper()
		snap := a.Snapshot()
		if !snap.NodeEvicted("web-1") || len(snap.EntriesForNode("web-1")) != 0 {
			t.Errorf("%s: NodeEvicted = %v, %d entries; want evicted, none", when, snap.NodeEvicted("web-1"), len(snap.EntriesForNode("web-1")))
		}
		if err := snap.CheckRevocation(X509Credential(ne.ID, svid.Serial)); !errors.Is(err, ErrBlocked) {
			t.Errorf("%s: the node SVID is not refused as blocked: %v", when, err)
		}
		if _, err := a.SignX509SVID(ctx, snap, ne); !errors.Is(err, ErrBlocked) {
			t.Errorf("%s: a node SVID was signed for an evicted node: %v", when, err)
		}
		if err := a.SetNodeSVID(ctx, "web-1", "0a"); !errors.Is(err, ErrNodeEvicted) {
			t.Errorf("%s: SetNodeSVID = %v, want ErrNodeEvicted", when, err)
		}
		if _, err := a.RegisterNode(ctx, NodeAttestation{Name: "web-1", Method: storage.AttestX509PoP}); !errors.Is(err, ErrNodeEvicted) {
			t.Errorf("%s: RegisterNode(x509pop) = %v, want ErrNodeEvicted", when, err)
		}
		if _, err := a.ConsumeJoinToken(ctx, stale); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: the token made before the eviction = %v, want it gone", when, err)
		}
	}
	check("after eviction", a)
	evicted := logs.find(t, "node evicted")
	if len(evicted) != 1 || evicted[0]["audit"] != true || evicted[0]["admin_uid"] != 1000.0 || evicted[0]["node"] != "web-1" {
		t.Errorf("audit of the eviction = %v", evicted)
	}

	// Durable: a restarted authority still refuses the node.
	a.Close()
	a = env.open(t, nil)
	check("after restart", a)

	// New proof brings it back.
	_, fresh, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := a.ConsumeJoinToken(ctx, fresh)
	if err != nil || node.Evicted() {
		t.Fatalf("ConsumeJoinToken after eviction = %+v, %v", node, err)
	}
	snap := a.Snapshot()
	if snap.NodeEvicted("web-1") || len(snap.EntriesForNode("web-1")) != 1 {
		t.Errorf("re-attested node: evicted %v, %d entries", snap.NodeEvicted("web-1"), len(snap.EntriesForNode("web-1")))
	}
	again, err := a.SignX509SVID(ctx, snap, ne)
	if err != nil {
		t.Fatalf("node SVID after re-attestation: %v", err)
	}
	if err := snap.CheckRevocation(X509Credential(ne.ID, again.Serial)); err != nil {
		t.Errorf("the new node SVID is refused: %v", err)
	}
	if err := snap.CheckRevocation(X509Credential(ne.ID, svid.Serial)); !errors.Is(err, ErrRevoked) {
		t.Errorf("the old node SVID is no longer revoked: %v", err)
	}
	if err := a.SetNodeSVID(ctx, "web-1", again.Serial); err != nil {
		t.Errorf("SetNodeSVID after re-attestation: %v", err)
	}
}

func TestRegisterNode(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	ctx := context.Background()
	n, err := a.RegisterNode(ctx, NodeAttestation{Name: "host-1.example.org", Method: storage.AttestX509PoP})
	if err != nil || n.Attestation != storage.AttestX509PoP || n.FirstAttestedAt.IsZero() {
		t.Fatalf("RegisterNode = %+v, %v", n, err)
	}
	if _, err := a.RegisterNode(ctx, NodeAttestation{Name: "host-1.example.org", Method: storage.AttestJoinToken}); !errors.Is(err, ErrInvalid) {
		t.Errorf("RegisterNode(join_token) = %v, want ErrInvalid", err)
	}
	if _, err := a.RegisterNode(ctx, NodeAttestation{Name: "HOST", Method: storage.AttestX509PoP}); !errors.Is(err, ErrInvalid) {
		t.Errorf("RegisterNode(HOST) = %v, want ErrInvalid", err)
	}
	if err := a.SetNodeSVID(ctx, "nobody", "0a"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("SetNodeSVID(unknown node) = %v, want ErrNotFound", err)
	}
}

// TestReservedIDsForClients: an OAuth client cannot take a node's (or the
// server's) identity, and get JWT-SVIDs for it.
func TestReservedIDsForClients(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	for _, id := range []string{"spiffe://example.org/badge/node/web-1", "spiffe://example.org/badge/server", "spiffe://example.org/badge"} {
		var inv *InvalidError
		if _, _, err := a.CreateClient(context.Background(), id); !errors.As(err, &inv) || inv.Field != "spiffe_id" {
			t.Errorf("CreateClient(%s) = %v, want an InvalidError on spiffe_id", id, err)
		}
	}
}

// TestPruneJoinTokens: expired tokens, used or not, are deleted once
// PruneMargin past their expiry; a live one stays and still works.
func TestPruneJoinTokens(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	ctx := context.Background()
	_, used, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: "a", TTL: MinJoinTokenTTL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ConsumeJoinToken(ctx, used); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: "b", TTL: MinJoinTokenTTL}); err != nil {
		t.Fatal(err)
	}
	env.clock.Advance(DefaultPruneMargin + time.Hour)
	_, live, err := a.CreateJoinToken(ctx, JoinTokenRequest{Node: "c"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := a.pruneJoinTokens(ctx)
	if err != nil || n != 2 {
		t.Fatalf("pruneJoinTokens = %d, %v; want the 2 expired tokens", n, err)
	}
	if left, _ := env.store.ListJoinTokens(ctx); len(left) != 1 || left[0].Node != "c" {
		t.Errorf("tokens left: %+v, want c's", left)
	}
	if _, err := a.ConsumeJoinToken(ctx, live); err != nil {
		t.Errorf("the live token after pruning: %v", err)
	}
}
