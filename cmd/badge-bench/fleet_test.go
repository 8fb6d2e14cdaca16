package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/agent"
	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/ca/workload"
)

// runFleetJSON runs badge-bench --mode fleet against d with args and
// --json; it returns the report (nil on failure), the exit code and stderr.
func runFleetJSON(t *testing.T, d *daemon, args ...string) (*fleetReport, int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"--mode", "fleet", "--server", d.agentAddr, "--admin-socket", d.admin, "--json"}, args...)
	code := run(context.Background(), args, strings.NewReader(""), &out, &errOut, func(string) string { return "" })
	if code != exitOK {
		return nil, code, errOut.String()
	}
	var rep fleetReport
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("badge-bench %q: %v\n%s", args, err, out.String())
	}
	return &rep, code, errOut.String()
}

// TestBenchFleet runs 2 real agents in process against the test daemon's
// agent listener, 3 workloads each, 3 entries per node: every workload
// gets the SVID of its own node's entry (and none of the 2 that match no
// workload), and rotates it within the window; the entries are deleted
// afterwards and the nodes stay registered.
func TestBenchFleet(t *testing.T) {
	d := startDaemon(t)
	rep, code, stderr := runFleetJSON(t, d, "--agents", "2", "--workloads", "3", "--node-entries", "3", "--svid-ttl", "10s", "--duration", "6s")
	if rep == nil {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if rep.Agents != 2 || rep.AgentsReady != 2 || rep.EntriesPerNode != 3 || rep.Workloads != 6 || rep.Served != 6 || rep.WrongID != 0 {
		t.Errorf("report: %d of %d agents ready, %d of %d workloads served, %d wrong IDs; want 2, 2, 6, 6, 0",
			rep.AgentsReady, rep.Agents, rep.Served, rep.Workloads, rep.WrongID)
	}
	if len(rep.StreamErrors) != 0 {
		t.Errorf("stream errors: %v, first %q", rep.StreamErrors, rep.FirstStreamError)
	}
	checkTail(t, "first SVID", rep.FirstSVIDMS, 6)
	checkTail(t, "agent ready", rep.AgentReadyMS, 2)
	if rep.PID != d.pid || rep.RSSKiBIdle == 0 || rep.RSSKiBServed == 0 {
		t.Errorf("server figures of pid %d, RSS %d → %d KiB: want the daemon's, pid %d", rep.PID, rep.RSSKiBIdle, rep.RSSKiBServed, d.pid)
	}
	// Served at about t=0 with a 10 s TTL, every workload rotates at 5 s.
	if r := rep.Rotation; r == nil || r.Rotated < 6 || r.ExpectedPerSec != 1.2 || r.WindowS < 6 {
		t.Errorf("rotation: %+v: want a 6 s window, every workload rotated, 1.2/s expected", r)
	}
	ctx := context.Background()
	es, err := d.client.ListEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 0 {
		t.Errorf("%d entries left after the run: %+v", len(es), es)
	}
	nodes, err := d.client.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 {
		t.Fatalf("nodes after the run: %+v, want the 2 of the agents", nodes)
	}
	for _, n := range nodes {
		if !strings.HasPrefix(n.Name, "bench-") || n.Attestation != "join_token" || n.Evicted {
			t.Errorf("node %+v: want a bench- node attested by join token, not evicted", n)
		}
	}
}

// TestBenchFleetWrongID: a workload that receives a SPIFFE ID other than
// its node's (here from an entry scoped to every node) fails the run.
func TestBenchFleetWrongID(t *testing.T) {
	d := startDaemon(t)
	_, err := d.client.CreateEntry(context.Background(), admin.EntryRequest{
		SPIFFEID: "spiffe://example.org/everywhere", Selectors: []string{fmt.Sprintf("unix:uid:%d", os.Getuid())}, Nodes: []string{"*"},
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep, code, stderr := runFleetJSON(t, d, "--agents", "1", "--workloads", "2", "--duration", "0")
	if code != exitFailure || rep != nil || !strings.Contains(stderr, "2 of 2 workloads received the SVID of their node's entry, and 2 an SVID of another SPIFFE ID") {
		t.Errorf("exit %d, stderr %q: want a failure counting 2 workloads with another ID", code, stderr)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("the run took %s", time.Since(start))
	}
}

// startAgent runs a real agent of node in this process against d's agent
// listener, serving the Workload API on the socket it returns, until the
// test ends.
func startAgent(t *testing.T, d *daemon, node string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tok, err := d.client.CreateJoinToken(ctx, admin.JoinTokenRequest{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	pemBundle, err := d.client.Bundle(ctx, "pem")
	if err != nil {
		t.Fatal(err)
	}
	roots, err := parsePEMCerts(pemBundle)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, err := agent.New(agent.Config{Servers: []string{d.agentAddr}, TrustBundle: roots, DataDir: filepath.Join(dir, "data"), JoinToken: tok.Token})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "workload.sock")
	l, err := workload.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	src := a.Source()
	wsrv, err := workload.New(workload.Config{Source: src, JWT: src, Attestor: attest.New(attest.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	served, ran := make(chan error, 1), make(chan error, 1)
	go func() { served <- wsrv.Serve(l) }()
	if err := a.Attest(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { ran <- a.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := waitConnected(wctx, a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		wsrv.Shutdown(sctx)
		cancel()
		for _, c := range []chan error{served, ran} {
			if err := <-c; err != nil {
				t.Errorf("agent of node %s: %v", node, err)
			}
		}
	})
	return sock
}

// TestBenchPropagationNode times new entries scoped to a node on streams
// behind that node's agent; --setup scopes its entries to the node too.
func TestBenchPropagationNode(t *testing.T) {
	d := startDaemon(t)
	sock := startAgent(t, d, "web-1")
	rep := runJSON(t, "--socket", sock, "--admin-socket", d.admin, "--mode", "propagation", "--node", "web-1", "--setup",
		"--workers", "2", "--count", "3")
	p := rep.Propagation
	if p == nil || p.Streams != 2 || p.Repetitions != 3 || p.Missed != 0 || p.MissedDelete != 0 {
		t.Fatalf("propagation through the agent: %+v, want 2 streams, 3 repetitions, none missed", p)
	}
	checkTail(t, "from create start", p.FromCreateStartMS, 6)
	checkTail(t, "delete", p.DeleteMS, 6)
	es, err := d.client.ListEntries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 0 {
		t.Errorf("after the run %d entries are left, want none: %+v", len(es), es)
	}
}

// TestFleetReportPrint: the text report has a line per phase, with the
// figures the JSON report has.
func TestFleetReportPrint(t *testing.T) {
	r := &fleetReport{
		Server: "127.0.0.1:8443", Agents: 100, WorkloadsPerAgent: 100, EntriesPerNode: 100, SVIDTTLS: 60, PID: 42,
		AgentsReady: 100, AgentsReadyS: 2.5, AgentReadyMS: summarize([]int64{1e6, 2e6}),
		CPUMSAgents: 900, CPUMSPerAgent: 9, RSSKiBIdle: 20 << 10, RSSKiBAgents: 30 << 10, RSSKiBPerAgent: 102.4,
		Workloads: 10000, Served: 10000, ServeAllS: 12.5, FirstSVIDMS: summarize([]int64{3e6}), CPUMSServe: 5000, CPUMSPerSVID: 0.5,
		Rotation:     &rotationReport{WindowS: 120, Rotated: 40000, PerSec: 333.3, ExpectedPerSec: 333.3, CPUMS: 20000, CPUMSPerRotated: 0.5, DaemonCores: 0.167},
		StreamErrors: map[string]int{"Unavailable": 2}, FirstStreamError: "boom", Nodes: "bench-7-0 to bench-7-99",
	}
	var out bytes.Buffer
	r.print(&out)
	for _, want := range []string{
		"100 agents × 100 workloads against 127.0.0.1:8443 (server pid 42), 100 entries per node, SVID TTL 1m0s",
		"100 attested and synced in 2.50 s",
		"= 9.000 ms per agent",
		"= 102.4 KiB per agent connection",
		"10000 of 10000 served in 12.50 s, 0 with a wrong SPIFFE ID",
		"= 0.5000 ms per SVID",
		"40000 SVIDs in 120.0 s = 333.3/s (expected 333.3/s",
		"= 0.5000 ms per rotated SVID, 0.167 cores",
		"map[Unavailable:2]; first: boom",
		"bench-7-0 to bench-7-99 stay registered",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
