package main

// --mode fleet: a fleet of badge agents, in this process, against one
// badge server.
//
// For each of --agents nodes badge-bench makes a join token and
// --node-entries entries through the admin API, scoped to that node, TTL
// --svid-ttl: spiffe://TD/bench/fleet/NODE with the selector
// unix:uid:<badge-bench's uid>, and spiffe://TD/bench/fleet/NODE/idle-J
// with a uid no account has, which no workload matches but the server
// holds and sends to the node's agent as it would a real node's. It
// then runs the real agent code (package agent) once per node, each with a
// data dir and a Workload API socket of its own (the same handler as
// `badge agent`), and opens --workloads FetchX509SVID streams on every
// agent's socket, each on its own connection. A process has one uid, so
// the workloads of a node share its entry; each stream is still one
// workload to the agent and the server: it gets a key of its own and an
// SVID signed for it by the server, and rotates it at half its life.
//
// Measured, on the server's process (the one that listens on the admin
// socket, or --server-pid): CPU and RSS before the agents connect, once
// all are synced (memory per agent connection), once every workload holds
// its SVID (CPU per SVID), and over --duration of steady state (rotations
// per second, CPU per rotated SVID). The entries are deleted afterwards. The
// nodes stay registered, with no key anywhere (the data dirs are deleted),
// until their node SVIDs expire: evicting them would block their IDs for
// good, a state that every later Sync carries.

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/agent"
	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/logkey"
)

// fleetStartParallel bounds the agents attesting at once: the server's
// per-address connection limit (--agent-max-conns-per-addr, default 256)
// counts the attestation connection and the channel of each.
const fleetStartParallel = 32

// fleetAdminParallel bounds the nodes whose entries are made or deleted at
// once through the admin API.
const fleetAdminParallel = 8

// fleetIdleUID+j (j ≥ 1) is the uid of the j-th entry of a node that no
// workload matches: uids no account has.
const fleetIdleUID = 3_000_000_000

// fleetReport is the result of --mode fleet.
type fleetReport struct {
	Server            string  `json:"server"`
	Agents            int     `json:"agents"`
	WorkloadsPerAgent int     `json:"workloads_per_agent"`
	EntriesPerNode    int     `json:"entries_per_node"`
	SVIDTTLS          float64 `json:"svid_ttl_s"`

	// The agents: attested and synced (first Sync update received).
	AgentsReady   int           `json:"agents_ready"`
	AgentsReadyS  float64       `json:"agents_ready_s"`
	AgentReadyMS  *latencyStats `json:"agent_ready_ms,omitempty"`
	CPUMSAgents   float64       `json:"cpu_ms_agents,omitempty"`
	CPUMSPerAgent float64       `json:"cpu_ms_per_agent,omitempty"`
	// RSS of the server before the agents connect and once all are synced.
	RSSKiBIdle              uint64  `json:"rss_kib_idle,omitempty"`
	RSSKiBAgents            uint64  `json:"rss_kib_agents,omitempty"`
	RSSKiBPerAgent          float64 `json:"rss_kib_per_agent,omitempty"`
	RSSAnonKiBIdle          uint64  `json:"rss_anon_kib_idle,omitempty"`
	RSSAnonKiBAgents        uint64  `json:"rss_anon_kib_agents,omitempty"`
	RSSAnonKiBPerAgent      float64 `json:"rss_anon_kib_per_agent,omitempty"`
	RSSKiBServed            uint64  `json:"rss_kib_served,omitempty"`
	RSSAnonKiBServed        uint64  `json:"rss_anon_kib_served,omitempty"`
	RSSKiBPerWorkload       float64 `json:"rss_kib_per_workload,omitempty"`
	RSSAnonKiBPerWorkload   float64 `json:"rss_anon_kib_per_workload,omitempty"`
	RSSKiBAfterRotation     uint64  `json:"rss_kib_after_rotation,omitempty"`
	RSSAnonKiBAfterRotation uint64  `json:"rss_anon_kib_after_rotation,omitempty"`

	// The workloads: served means holding an SVID with its node's ID.
	Workloads     int           `json:"workloads"`
	Served        int           `json:"served"`
	WrongID       int           `json:"wrong_id"`
	ServeAllS     float64       `json:"serve_all_s"`
	FirstSVIDMS   *latencyStats `json:"first_svid_ms,omitempty"`
	CPUMSServe    float64       `json:"cpu_ms_serve,omitempty"`
	CPUMSPerSVID  float64       `json:"cpu_ms_per_svid,omitempty"`
	ServeHostBusy *hostReport   `json:"serve_host,omitempty"`

	// Steady state: SVIDs rotated over the window.
	Rotation *rotationReport `json:"rotation,omitempty"`
	// StreamErrors counts the workload streams that failed to open or
	// ended before the run did, by gRPC code.
	StreamErrors     map[string]int `json:"stream_errors,omitempty"`
	FirstStreamError string         `json:"first_stream_error,omitempty"`
	// Nodes is the name pattern of the nodes registered.
	Nodes string   `json:"nodes"`
	PID   int      `json:"server_pid"`
	Notes []string `json:"notes,omitempty"`
}

// rotationReport is the steady-state rotation load of --mode fleet.
type rotationReport struct {
	WindowS         float64     `json:"window_s"`
	Rotated         int         `json:"rotated"`
	PerSec          float64     `json:"per_s"`
	ExpectedPerSec  float64     `json:"expected_per_s"`
	CPUMS           float64     `json:"cpu_ms,omitempty"`
	CPUMSPerRotated float64     `json:"cpu_ms_per_rotated,omitempty"`
	DaemonCores     float64     `json:"daemon_cores,omitempty"`
	Host            *hostReport `json:"host,omitempty"`
}

// fleetAgent is one in-process agent with its Workload API and workloads.
type fleetAgent struct {
	node     string
	id       string // the SPIFFE ID its workloads must get
	mu       sync.Mutex
	entryIDs []string // the first is that of id
	token    string
	dir      string
	a        *agent.Agent
	wsrv     *workload.Server
	streams  *streamSet
	ready    int64 // ns from its start to its first Sync update
}

// fleet is a run of --mode fleet.
type fleet struct {
	b      *bench
	dir    string
	agents []*fleetAgent
	cancel context.CancelFunc // stops the agents
	wg     sync.WaitGroup     // the agents' Run and Serve
	errMu  sync.Mutex
	errs   []error // of agents that stopped on their own
}

// runFleet runs --mode fleet.
func (b *bench) runFleet(ctx context.Context) (*fleetReport, error) {
	c := b.cfg
	b.admin = admin.NewClient(c.adminSocket)
	if len(c.serverPIDs) == 0 {
		pid, err := listenerPID(ctx, c.adminSocket)
		if err != nil {
			return nil, fmt.Errorf("no badge admin API at %s: %w (the server's CPU and RSS are read from the process that listens on it)", c.adminSocket, err)
		}
		b.pids = []int{pid}
	} else {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", c.serverPIDs[0])); err != nil {
			return nil, fmt.Errorf("--server-pid %d: no such process", c.serverPIDs[0])
		}
		b.pids = c.serverPIDs
	}
	pid := b.pids[0]
	// Each workload: a socket in this process and one in the agent; each
	// agent: its channel, its listener, its data dir's files.
	if err := raiseNoFile(uint64(2*c.agents*c.workloads + 16*c.agents + 256)); err != nil {
		return nil, err
	}
	b.checkServerNoFile(pid, uint64(2*c.agents))
	pemBundle, err := b.admin.Bundle(ctx, "pem")
	if err != nil {
		return nil, fmt.Errorf("reading the trust bundle from the admin API: %w", err)
	}
	roots, err := parsePEMCerts(pemBundle)
	if err != nil {
		return nil, fmt.Errorf("the server's trust bundle: %w", err)
	}
	td, err := b.fleetTrustDomain(ctx, roots)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "badge-fleet-")
	if err != nil {
		return nil, err
	}
	f := &fleet{b: b, dir: dir}
	defer f.cleanup()
	if err := f.register(ctx, td); err != nil {
		return nil, err
	}
	rep := &fleetReport{
		Server: c.server, Agents: c.agents, WorkloadsPerAgent: c.workloads, EntriesPerNode: c.nodeEntries, SVIDTTLS: c.svidTTL.Seconds(),
		Workloads: c.agents * c.workloads, PID: pid, Nodes: fmt.Sprintf("bench-%d-0 to bench-%d-%d", os.Getpid(), os.Getpid(), c.agents-1),
	}
	defer func() { rep.Notes = b.notes }()
	idle, ierr := readProcUsage(pid)

	// The agents attest and sync.
	start := time.Now()
	if err := f.startAgents(ctx, roots); err != nil {
		return nil, err
	}
	rep.AgentsReadyS = roundTo(time.Since(start).Seconds(), 3)
	rep.AgentsReady = len(f.agents)
	var ready []int64
	for _, fa := range f.agents {
		ready = append(ready, fa.ready)
	}
	rep.AgentReadyMS = summarize(ready)
	synced, serr := readProcUsage(pid)

	// The workloads get their first SVIDs.
	hostBefore := b.sampleHost()
	start = time.Now()
	firsts, err := f.openWorkloads(ctx)
	serveTime := time.Since(start)
	if err != nil {
		return nil, err
	}
	served, verr := readProcUsage(pid)
	rep.ServeHostBusy = b.hostReport(hostBefore, b.sampleHost(), synced, served, serveTime)
	rep.ServeAllS = roundTo(serveTime.Seconds(), 3)
	rep.FirstSVIDMS = summarize(firsts)
	rep.Served, rep.WrongID = f.served()
	if rep.Served != rep.Workloads || rep.WrongID != 0 {
		return rep, fmt.Errorf("%d of %d workloads received the SVID of their node's entry, and %d an SVID of another SPIFFE ID: %s",
			rep.Served, rep.Workloads, rep.WrongID, f.firstStreamError())
	}
	if err := errors.Join(ierr, serr, verr); err != nil {
		return nil, fmt.Errorf("reading /proc/%d: %w", pid, err)
	}
	rep.CPUMSAgents = roundTo(synced.cpuMS()-idle.cpuMS(), 1)
	rep.CPUMSPerAgent = roundTo(rep.CPUMSAgents/float64(c.agents), 3)
	rep.CPUMSServe = roundTo(served.cpuMS()-synced.cpuMS(), 1)
	rep.CPUMSPerSVID = roundTo(rep.CPUMSServe/float64(rep.Served), 4)
	rep.RSSKiBIdle, rep.RSSKiBAgents, rep.RSSKiBServed = idle.rssKiB, synced.rssKiB, served.rssKiB
	rep.RSSAnonKiBIdle, rep.RSSAnonKiBAgents, rep.RSSAnonKiBServed = idle.anonKiB, synced.anonKiB, served.anonKiB
	rep.RSSKiBPerAgent = roundTo((float64(synced.rssKiB)-float64(idle.rssKiB))/float64(c.agents), 1)
	rep.RSSAnonKiBPerAgent = roundTo((float64(synced.anonKiB)-float64(idle.anonKiB))/float64(c.agents), 1)
	rep.RSSKiBPerWorkload = roundTo((float64(served.rssKiB)-float64(synced.rssKiB))/float64(rep.Served), 2)
	rep.RSSAnonKiBPerWorkload = roundTo((float64(served.anonKiB)-float64(synced.anonKiB))/float64(rep.Served), 2)

	// Steady state: every workload rotates at half the SVID TTL.
	if c.duration > 0 {
		if rep.Rotation, err = f.measureRotation(ctx); err != nil {
			return nil, err
		}
		if after, err := readProcUsage(pid); err == nil {
			rep.RSSKiBAfterRotation, rep.RSSAnonKiBAfterRotation = after.rssKiB, after.anonKiB
		}
	}
	if err := f.agentError(); err != nil {
		return nil, err
	}
	rep.StreamErrors, rep.FirstStreamError = f.streamErrors()
	return rep, nil
}

// streamErrors counts the errors of all workload streams by gRPC code,
// and returns the first.
func (f *fleet) streamErrors() (map[string]int, string) {
	var byCode map[string]int
	first := ""
	for _, fa := range f.agents {
		if fa.streams == nil {
			continue
		}
		fa.streams.mu.Lock()
		for k, v := range fa.streams.errs {
			if byCode == nil {
				byCode = map[string]int{}
			}
			byCode[k] += v
		}
		if first == "" {
			first = fa.streams.firstErr
		}
		fa.streams.mu.Unlock()
	}
	return byCode, first
}

// fleetTrustDomain is --trust-domain, else the trust domain the server's
// root certificates name.
func (b *bench) fleetTrustDomain(ctx context.Context, roots []*x509.Certificate) (spiffeid.TrustDomain, error) {
	if b.cfg.trustDomain != "" {
		return spiffeid.TrustDomainFromString(b.cfg.trustDomain)
	}
	for _, r := range roots {
		for _, u := range r.URIs {
			if td, err := spiffeid.TrustDomainFromURI(u); err == nil && u.Path == "" {
				return td, nil
			}
		}
	}
	return b.trustDomainOf(ctx, nil)
}

// parsePEMCerts parses the certificates of a PEM bundle.
func parsePEMCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in the PEM bundle")
	}
	return out, nil
}

// register makes a join token and the entries of every node,
// fleetAdminParallel nodes at a time.
func (f *fleet) register(ctx context.Context, td spiffeid.TrustDomain) error {
	for i := range f.b.cfg.agents {
		fa := &fleetAgent{node: fmt.Sprintf("bench-%d-%d", os.Getpid(), i)}
		fa.id = fmt.Sprintf("spiffe://%s/bench/fleet/%s", td.Name(), fa.node)
		fa.dir = filepath.Join(f.dir, fmt.Sprint(i))
		f.agents = append(f.agents, fa)
	}
	return f.eachAgent(ctx, func(fa *fleetAgent) error { return f.registerNode(ctx, fa) })
}

// registerNode makes fa's join token, the entry its workloads match and
// --node-entries less one entries that no workload matches.
func (f *fleet) registerNode(ctx context.Context, fa *fleetAgent) error {
	c := f.b.cfg
	tok, err := f.b.admin.CreateJoinToken(ctx, admin.JoinTokenRequest{Node: fa.node})
	if err != nil {
		return fmt.Errorf("creating a join token for node %s: %w", fa.node, err)
	}
	fa.token = tok.Token
	for j := range c.nodeEntries {
		id, sel := fa.id, fmt.Sprintf("unix:uid:%d", os.Getuid())
		if j > 0 {
			id, sel = fmt.Sprintf("%s/idle-%d", fa.id, j), fmt.Sprintf("unix:uid:%d", fleetIdleUID+j)
		}
		ent, err := f.b.admin.CreateEntry(ctx, admin.EntryRequest{SPIFFEID: id, Selectors: []string{sel}, Nodes: []string{fa.node}, TTL: c.svidTTL.String()})
		if err != nil {
			return fmt.Errorf("creating entry %s of node %s: %w", id, fa.node, err)
		}
		fa.mu.Lock()
		fa.entryIDs = append(fa.entryIDs, ent.ID)
		fa.mu.Unlock()
	}
	return nil
}

// eachAgent calls fn for every agent, fleetAdminParallel at a time, and
// returns the first error.
func (f *fleet) eachAgent(ctx context.Context, fn func(*fleetAgent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, fleetAdminParallel)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, fa := range f.agents {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(fa); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// startAgents starts every agent, fleetStartParallel at a time, and
// returns when all have attested and received their node's state.
func (f *fleet) startAgents(ctx context.Context, roots []*x509.Certificate) error {
	c := f.b.cfg
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	log := slog.New(slog.NewTextHandler(f.b.e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := context.WithTimeout(ctx, c.timeout)
	defer stop()
	sem := make(chan struct{}, fleetStartParallel)
	errs := make([]error, len(f.agents))
	var wg sync.WaitGroup
	for i, fa := range f.agents {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f.startAgent(ctx, runCtx, fa, roots, log.With(slog.String(logkey.Node, fa.node)))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("agents not all synced within --timeout %s: %w", c.timeout, err)
		}
		return err
	}
	return nil
}

// startAgent starts one agent: its Workload API, attestation, its channel
// to the server; it returns once the first Sync update arrived.
func (f *fleet) startAgent(ctx, runCtx context.Context, fa *fleetAgent, roots []*x509.Certificate, log *slog.Logger) error {
	start := time.Now()
	a, err := agent.New(agent.Config{Servers: []string{f.b.cfg.server}, TrustBundle: roots, DataDir: filepath.Join(fa.dir, "data"),
		JoinToken: fa.token, Logger: log})
	if err != nil {
		return fmt.Errorf("node %s: %w", fa.node, err)
	}
	l, err := workload.Listen(filepath.Join(fa.dir, "workload.sock"))
	if err != nil {
		return fmt.Errorf("node %s: %w", fa.node, err)
	}
	src := a.Source()
	wsrv, err := workload.New(workload.Config{Source: src, JWT: src, Attestor: attest.New(attest.Config{Logger: log}), Logger: log})
	if err != nil {
		l.Close()
		return fmt.Errorf("node %s: %w", fa.node, err)
	}
	fa.a, fa.wsrv = a, wsrv
	f.wg.Go(func() {
		if err := wsrv.Serve(l); err != nil {
			f.agentFailed(fmt.Errorf("node %s: Workload API: %w", fa.node, err))
		}
	})
	if err := a.Attest(ctx); err != nil {
		return fmt.Errorf("node %s: %w", fa.node, err)
	}
	f.wg.Go(func() {
		if err := a.Run(runCtx); err != nil {
			f.agentFailed(fmt.Errorf("node %s: %w", fa.node, err))
		}
	})
	if err := waitConnected(ctx, a); err != nil {
		return fmt.Errorf("node %s: attested, but not connected to the server: %w", fa.node, err)
	}
	fa.ready = int64(time.Since(start))
	return nil
}

// waitConnected waits until a has received its node's state and holds the
// channel it came on. The agent publishes the state a moment before it
// takes the channel for signing, and no event marks that moment: once
// synced, it polls briefly.
func waitConnected(ctx context.Context, a *agent.Agent) error {
	for st := a.State(); !st.Synced(); st = a.State() {
		select {
		case <-st.Done():
		case <-ctx.Done():
			return fmt.Errorf("no Sync update from the server: %w", ctx.Err())
		}
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for status.Code(a.Source().Check(ctx, workload.Caller{})) == codes.Unavailable {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("synced, but the channel is gone: %w", ctx.Err())
		}
	}
	return nil
}

func (f *fleet) agentFailed(err error) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	f.errs = append(f.errs, err)
}

// agentError returns the errors of agents that stopped on their own.
func (f *fleet) agentError() error {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return errors.Join(f.errs...)
}

// openWorkloads opens every agent's workloads at once, and returns the
// time each waited for its first SVID.
func (f *fleet) openWorkloads(ctx context.Context) ([]int64, error) {
	c := f.b.cfg
	res := make([]groupResult, len(f.agents))
	var wg sync.WaitGroup
	for i, fa := range f.agents {
		fa.streams = newStreamSet([]string{filepath.Join(fa.dir, "workload.sock")}, 0)
		wg.Go(func() { res[i] = fa.streams.open(ctx, c.workloads, c.timeout, false) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []int64
	for i, r := range res {
		if r.Fatal != "" {
			return nil, fmt.Errorf("node %s: the agent refused a workload (%s): %s", f.agents[i].node, r.FatalCode, r.Fatal)
		}
		out = append(out, r.Samples...)
	}
	return out, nil
}

// served counts the workloads that received the SVID of their node's
// entry, and those that received any other SPIFFE ID.
func (f *fleet) served() (ok, wrong int) {
	for _, fa := range f.agents {
		if fa.streams == nil {
			continue
		}
		_, byID := fa.streams.received()
		for id, n := range byID {
			if id == fa.id {
				ok += n
			} else {
				wrong += n
			}
		}
	}
	return ok, wrong
}

// firstStreamError is the first error a workload stream met, if any.
func (f *fleet) firstStreamError() string {
	if _, first := f.streamErrors(); first != "" {
		return "first error: " + first
	}
	return "no stream error"
}

func (f *fleet) renewals() int {
	n := 0
	for _, fa := range f.agents {
		n += fa.streams.renewals()
	}
	return n
}

// measureRotation counts the SVIDs rotated, and the server's CPU, over
// --duration.
func (f *fleet) measureRotation(ctx context.Context) (*rotationReport, error) {
	b, c := f.b, f.b.cfg
	r0 := f.renewals()
	u0, err := readProcUsage(b.pids[0])
	if err != nil {
		return nil, err
	}
	h0 := b.sampleHost()
	start := time.Now()
	t := time.NewTimer(c.duration)
	select {
	case <-ctx.Done():
		t.Stop()
		return nil, ctx.Err()
	case <-t.C:
	}
	window := time.Since(start)
	u1, err := readProcUsage(b.pids[0])
	if err != nil {
		return nil, err
	}
	r := &rotationReport{
		WindowS: roundTo(window.Seconds(), 3), Rotated: f.renewals() - r0,
		ExpectedPerSec: roundTo(float64(c.agents*c.workloads)/(c.svidTTL.Seconds()/2), 1),
		CPUMS:          roundTo(u1.cpuMS()-u0.cpuMS(), 1),
		Host:           b.hostReport(h0, b.sampleHost(), u0, u1, window),
	}
	r.PerSec = roundTo(float64(r.Rotated)/window.Seconds(), 1)
	r.DaemonCores = roundTo(r.CPUMS/float64(window.Milliseconds()), 3)
	if r.Rotated > 0 {
		r.CPUMSPerRotated = roundTo(r.CPUMS/float64(r.Rotated), 4)
	}
	return r, nil
}

// cleanup closes the workloads and stops the agents, deletes the entries
// and evicts the nodes it made, and removes the temporary directory.
func (f *fleet) cleanup() {
	var wg sync.WaitGroup
	for _, fa := range f.agents {
		if fa.streams != nil {
			wg.Go(fa.streams.close)
		}
	}
	wg.Wait()
	for _, fa := range f.agents {
		if fa.wsrv != nil {
			wg.Go(func() {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				fa.wsrv.Shutdown(sctx)
			})
		}
	}
	wg.Wait()
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	f.eachAgent(ctx, func(fa *fleetAgent) error {
		for _, id := range fa.entryIDs {
			if err := f.b.admin.DeleteEntry(ctx, id); err != nil {
				fmt.Fprintf(f.b.e.stderr, "badge-bench: could not delete entry %s of node %s that the fleet run created: %v\n", id, fa.node, err)
			}
		}
		return nil
	})
	os.RemoveAll(f.dir)
}

// print writes the report as text.
func (r *fleetReport) print(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("badge-bench --mode fleet: %d agents × %d workloads against %s (server pid %d), %d entries per node, SVID TTL %s",
		r.Agents, r.WorkloadsPerAgent, r.Server, r.PID, r.EntriesPerNode, time.Duration(r.SVIDTTLS*float64(time.Second)))
	p("  agents:    %d attested and synced in %.2f s; per agent: %s", r.AgentsReady, r.AgentsReadyS, r.AgentReadyMS)
	p("  server:    CPU %.0f ms = %.3f ms per agent; RSS %s → %s = %.1f KiB per agent connection (anonymous %s → %s = %.1f KiB)",
		r.CPUMSAgents, r.CPUMSPerAgent, mib(r.RSSKiBIdle), mib(r.RSSKiBAgents), r.RSSKiBPerAgent,
		mib(r.RSSAnonKiBIdle), mib(r.RSSAnonKiBAgents), r.RSSAnonKiBPerAgent)
	p("  workloads: %d of %d served in %.2f s, %d with a wrong SPIFFE ID; first SVID per workload: %s",
		r.Served, r.Workloads, r.ServeAllS, r.WrongID, r.FirstSVIDMS)
	p("  server:    CPU %.0f ms = %.4f ms per SVID; RSS %s (anonymous %s) = %.2f KiB per workload",
		r.CPUMSServe, r.CPUMSPerSVID, mib(r.RSSKiBServed), mib(r.RSSAnonKiBServed), r.RSSKiBPerWorkload)
	if h := r.ServeHostBusy; h != nil {
		p("  host:      %d CPUs, %.2f busy while serving: server %.2f, badge-bench (agents and workloads) %.2f, other processes %.2f",
			h.CPUs, h.BusyCores, h.DaemonCores, h.BenchCores, h.OtherCores)
	}
	if ro := r.Rotation; ro != nil {
		p("  rotation:  %d SVIDs in %.1f s = %.1f/s (expected %.1f/s: every workload at half the TTL)", ro.Rotated, ro.WindowS, ro.PerSec, ro.ExpectedPerSec)
		p("  server:    CPU %.0f ms = %.4f ms per rotated SVID, %.3f cores; RSS %s after", ro.CPUMS, ro.CPUMSPerRotated, ro.DaemonCores, mib(r.RSSKiBAfterRotation))
		if h := ro.Host; h != nil {
			p("  host:      %d CPUs, %.2f busy: server %.2f, badge-bench %.2f, other processes %.2f",
				h.CPUs, h.BusyCores, h.DaemonCores, h.BenchCores, h.OtherCores)
		}
	}
	if len(r.StreamErrors) > 0 {
		p("  errors:    workload streams failed or ended: %v; first: %s", r.StreamErrors, r.FirstStreamError)
	}
	p("  nodes:     %s stay registered (their keys are gone with the run's temporary directory)", r.Nodes)
	for _, n := range r.Notes {
		p("  note: %s", n)
	}
}
