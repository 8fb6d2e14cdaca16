package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/ca/admin"
)

// waitLog waits until the daemon's log has a line containing every one of
// want, and returns it.
func (d *daemon) waitLog(t *testing.T, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
	lines:
		for _, l := range strings.Split(d.logs(), "\n") {
			for _, w := range want {
				if !strings.Contains(l, w) {
					continue lines
				}
			}
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("no daemon log line with %q after 5s:\n%s", want, d.logs())
		}
		<-tick.C
	}
}

// TestE2ENodesAndTokens: join tokens are printed once and never logged, a
// node is listed only once it attests, evicting an unknown node is a
// one-line failure, and bad input is refused naming it.
func TestE2ENodesAndTokens(t *testing.T) {
	d := startDaemon(t)

	if out := d.mustBadge("node", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("node list --json on a new server = %q, want []", out)
	}
	out, errOut, code := d.badge("token", "create", "--node", "web-1")
	token := strings.TrimSpace(out)
	if code != 0 || len(token) != 43 || strings.Count(out, "\n") != 1 {
		t.Fatalf("token create = exit %d, stdout %q, stderr %q; want the token alone on stdout", code, out, errOut)
	}
	if !strings.Contains(errOut, "web-1") || strings.Contains(errOut, token) {
		t.Errorf("token create stderr = %q; want the node named, the token not repeated", errOut)
	}
	var tok admin.JoinToken
	if err := json.Unmarshal([]byte(d.mustBadge("token", "create", "--node", "web-2", "--ttl", "10m", "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	if len(tok.Token) != 43 || tok.Node != "web-2" || tok.ExpiresAt.Sub(tok.CreatedAt) != 10*time.Minute {
		t.Errorf("token create --json = %+v", tok)
	}
	d.waitLog(t, "join token created", "web-2", "audit=true")
	if logs := d.logs(); strings.Contains(logs, token) || strings.Contains(logs, tok.Token) {
		t.Errorf("a join token is in the daemon's log:\n%s", logs)
	}
	// A token made is not a node: nothing is listed until an agent uses it.
	if out := d.mustBadge("node", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("node list --json after token create = %q, want []", out)
	}
	if out := d.mustBadge("node", "list"); strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "NAME") {
		t.Errorf("node list = %q, want the header alone", out)
	}

	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"node", "evict", "ghost"}, 1, "badge node evict: no node named ghost\n"},
		{[]string{"node", "evict", "Ghost"}, 1, `badge node evict: invalid node "Ghost": must be lower case` + "\n"},
		{[]string{"node", "evict"}, 2, "a node name is required"},
		{[]string{"token", "create", "--node", "*"}, 1, `invalid node "*"`},
		{[]string{"token", "create", "--node", "web-1", "--ttl", "48h"}, 1, `invalid ttl "48h0m0s"`},
		{[]string{"token", "create"}, 2, "--node is required"},
		{[]string{"entry", "create", "--id", "spiffe://example.org/x", "--selector", "unix:uid:1", "--node", "*", "--node", "web-1"}, 1, `invalid node "web-1"`},
	} {
		out, errOut, code := d.badge(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.stderr) || out != "" {
			t.Errorf("badge %s = exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, out, errOut, tc.code, tc.stderr)
		}
		if tc.code == 1 && strings.Count(errOut, "\n") != 1 {
			t.Errorf("badge %s: stderr is not one line: %q", strings.Join(tc.args, " "), errOut)
		}
	}
}

// TestE2ENodeScopedEntries: an entry scoped to a node, or to every node, is
// not served on the server's own socket; an entry without nodes is, to the
// same caller. The scope shows in entry list and show, and survives a
// restart.
func TestE2ENodeScopedEntries(t *testing.T) {
	d := startDaemon(t)
	local := d.createEntry("spiffe://example.org/local", "unix:uid:1001")
	d.mustBadge("entry", "create", "--id", "spiffe://example.org/remote", "--selector", "unix:uid:1001", "--node", "web-1", "--node", "web-0")
	d.mustBadge("entry", "create", "--id", "spiffe://example.org/everywhere", "--selector", "unix:uid:1001", "--node", "*")
	d.mustBadge("entry", "create", "--id", "spiffe://example.org/agents-only", "--selector", "unix:uid:1002", "--node", "*")

	r := d.runWorkload(1001, 1001, "fetch")
	if r.Error != "" || len(r.SVIDs) != 1 || r.SVIDs[0].ID != "spiffe://example.org/local" {
		t.Errorf("uid 1001 on the server's socket got %v (%s %s), want only spiffe://example.org/local", ids(r), r.Code, r.Error)
	}
	if r := d.runWorkload(1002, 1002, "fetch"); r.Code != "PermissionDenied" || len(r.SVIDs) != 0 {
		t.Errorf("uid 1002, registered only on nodes, got %v (%s %s), want PermissionDenied", ids(r), r.Code, r.Error)
	}

	listJSON := d.mustBadge("entry", "list", "--json")
	var es []admin.Entry
	if err := json.Unmarshal([]byte(listJSON), &es); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]string{}
	for _, e := range es {
		nodes[e.SPIFFEID] = strings.Join(e.Nodes, ",")
	}
	if want := map[string]string{
		"spiffe://example.org/local": "", "spiffe://example.org/remote": "web-0,web-1",
		"spiffe://example.org/everywhere": "*", "spiffe://example.org/agents-only": "*",
	}; len(nodes) != len(want) || nodes["spiffe://example.org/remote"] != want["spiffe://example.org/remote"] ||
		nodes["spiffe://example.org/everywhere"] != "*" || nodes["spiffe://example.org/local"] != "" {
		t.Errorf("entry list --json nodes = %v, want %v", nodes, want)
	}
	if out := d.mustBadge("entry", "list"); !strings.Contains(out, "NODES") || !strings.Contains(out, "web-0,web-1") {
		t.Errorf("entry list does not show nodes:\n%s", out)
	}
	if out := d.mustBadge("entry", "show", local); !strings.Contains(out, "Nodes:      - (the server's own socket)") {
		t.Errorf("entry show of a local entry:\n%s", out)
	}

	d.restart()
	if again := d.mustBadge("entry", "list", "--json"); again != listJSON {
		t.Errorf("entry list --json changed across a restart:\n%s\n%s", listJSON, again)
	}
	if r := d.runWorkload(1001, 1001, "fetch"); len(r.SVIDs) != 1 || r.SVIDs[0].ID != "spiffe://example.org/local" {
		t.Errorf("after restart, uid 1001 got %v (%s %s)", ids(r), r.Code, r.Error)
	}
}
