package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/internal/socketpath"
)

// Bench modes.
const (
	benchFetch       = "fetch"
	benchStream      = "stream"
	benchPropagation = "propagation"
	benchJWT         = "jwt"
	benchFleet       = "fleet"
)

// Limits that keep a mistyped flag from forking or dialing without end.
const (
	benchMaxUIDs      = 1024
	benchMaxWorkers   = 1 << 20
	benchOpenParallel = 64 // streams being opened at once, per process
	benchMaxAgents    = 10000
)

// Defaults of --mode fleet.
const (
	fleetDefaultAgents    = 100
	fleetDefaultWorkloads = 100
	fleetDefaultSVIDTTL   = time.Minute
	fleetDefaultTimeout   = time.Minute
	fleetMaxNodeEntries   = 100000
)

const usageLine = "badge-bench [--socket PATH[,PATH...]] [--mode fetch|stream|propagation|jwt] [--workers N] [--uids FIRST-LAST] [--duration D] [--samples FILE] [--json]\n" +
	"       badge-bench --mode fleet --server ADDR [--admin-socket PATH] [--agents N] [--workloads N] [--svid-ttl D] [--duration D] [--json]"

// benchConfig is what badge-bench was asked to do.
type benchConfig struct {
	mode string
	// sockets are the Workload API sockets: one, or several servers'
	// that the workers take in turn.
	sockets     []string
	workers     int
	uids        uidRange
	duration    time.Duration
	timeout     time.Duration
	adminSocket string
	setup       bool
	count       int
	audience    string
	trustDomain string
	// serverPIDs are the daemons of sockets, in order (--server-pid);
	// nil: the processes that listen on them.
	serverPIDs []int
	samples    string // file for the raw samples; "" for none
	asJSON     bool

	// node scopes the entries badge-bench creates to that node: the
	// workloads are behind its agent (propagation, --setup).
	node string
	// --mode fleet: agents in-process agents, each with workloads streams,
	// against the agent listener at server; entries with svidTTL.
	agents, workloads int
	nodeEntries       int
	server            string
	svidTTL           time.Duration
}

func (e *env) parseBench(args []string) (benchConfig, error) {
	c := benchConfig{
		mode: benchFetch, workers: 4, duration: 10 * time.Second, timeout: 5 * time.Second,
		count: 20, audience: "bench", svidTTL: fleetDefaultSVIDTTL, nodeEntries: 1,
	}
	fs := flag.NewFlagSet("badge-bench", flag.ContinueOnError)
	sock := fs.String("socket", "", "Workload API socket `path` (default: $"+socketpath.EnvSPIFFEEndpoint+", $"+socketpath.EnvWorkload+", "+socketpath.ClientDefaultHelp(socketpath.WorkloadName)+");\n"+
		"a SPIRE agent's socket works for fetch, jwt and stream; several comma-separated paths (several servers) take the workers in turn,\nand the report adds each socket's part")
	fs.StringVar(&c.mode, "mode", c.mode, "fetch: fresh connection per FetchX509SVID; stream: hold N streams (memory, idle CPU);\npropagation: time for a new entry to reach open streams (needs badge's admin API); jwt: FetchJWTSVID on open connections;\n"+
		"fleet: --agents badge agents in this process against --server, each serving --workloads streams (needs badge's admin API)")
	fs.IntVar(&c.workers, "workers", c.workers, "concurrent callers (fetch, jwt) or open streams (stream, propagation)")
	uids := fs.String("uids", "", "run the workers as uids `FIRST-LAST`, round robin (needs root; entries must match them, or use --setup)")
	fs.Var(durationFlag{&c.duration}, "duration", "how long fetch and jwt call, how long stream holds its streams idle, and how long fleet measures\nrotation once every workload holds an SVID (fleet's default: twice --svid-ttl; 0: no rotation window)")
	fs.Var(durationFlag{&c.timeout}, "timeout", "limit for one call, one stream's first SVID, or one propagation;\nfleet: for the agents to attest and sync, and for each workload's first SVID (fleet's default: 1m)")
	asock := fs.String("admin-socket", "", "badge admin API socket `path`, for propagation, --setup and fleet (default: $"+socketpath.EnvAdmin+", "+socketpath.ClientDefaultHelp(socketpath.AdminName)+")")
	fs.BoolVar(&c.setup, "setup", false, "create a badge entry (unix:uid:N) for every benchmarked uid that has none, and delete it afterwards")
	fs.IntVar(&c.count, "count", c.count, "propagation: how many entries to create, one after another")
	fs.StringVar(&c.audience, "audience", c.audience, "jwt: audience to request")
	fs.StringVar(&c.trustDomain, "trust-domain", "", "trust `domain` for entries badge-bench creates (default: that of the workloads' SVIDs or entries, else example.org)")
	pids := fs.String("server-pid", "", "daemon `pid` whose CPU time and RSS to report (default: the process that listens on --socket, for fleet on --admin-socket,\n"+
		"from the socket's peer credentials; give it when another process created the socket, as with systemd socket activation);\n"+
		"with several sockets, one pid per socket, comma-separated in the same order: the report sums them and gives each one's")
	fs.StringVar(&c.samples, "samples", "", "write every sample to `file` as CSV, one line each: start_unix_ns,latency_ns,uid,result;\nresult is OK or the gRPC code of a failed call (fetch, jwt, stream), create or delete (propagation)")
	fs.BoolVar(&c.asJSON, "json", false, "print the results as JSON")
	fs.StringVar(&c.node, "node", "", "propagation, --setup: scope the entries badge-bench creates to node `NAME`, and measure through\nthat node's agent (--socket is the agent's Workload API socket)")
	fs.IntVar(&c.agents, "agents", fleetDefaultAgents, "fleet: agents to run in this process, each with a join token, a data dir and a Workload API socket of its own")
	fs.IntVar(&c.workloads, "workloads", fleetDefaultWorkloads, "fleet: workloads per agent, each a FetchX509SVID stream on its own connection")
	fs.IntVar(&c.nodeEntries, "node-entries", c.nodeEntries, "fleet: entries scoped to each node: the one its workloads match, and as many more that none matches\n(the server holds them and sends them to the node's agent, as for a node that runs that many services)")
	fs.StringVar(&c.server, "server", "", "fleet: the agent listener `address` (HOST:PORT) of the badge server (badge server --agent-listen)")
	fs.Var(durationFlag{&c.svidTTL}, "svid-ttl", "fleet: TTL of the entries badge-bench creates; workloads rotate at half of it")
	fs.SetOutput(io.Discard) // errors are reported once, by run
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(e.stderr, "Usage: %s\n\nFlags:\n", usageLine)
			fs.SetOutput(e.stderr)
			fs.PrintDefaults()
			return c, err
		}
		return c, usagef("%v (run 'badge-bench -h' for usage)", err)
	}
	if fs.NArg() > 0 {
		return c, usagef("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch c.mode {
	case benchFetch, benchStream, benchPropagation, benchJWT:
	case benchFleet:
		if err := c.checkFleet(set); err != nil {
			return c, err
		}
	default:
		return c, usagef("invalid --mode %q: want fetch, stream, propagation, jwt or fleet", c.mode)
	}
	if c.mode != benchFleet {
		for _, f := range []string{"agents", "workloads", "node-entries", "server", "svid-ttl"} {
			if set[f] {
				return c, usagef("--%s is for --mode fleet", f)
			}
		}
	}
	if c.node != "" && c.mode != benchPropagation && !c.setup {
		return c, usagef("--node is for --mode propagation and --setup")
	}
	if c.workers < 1 || c.workers > benchMaxWorkers {
		return c, usagef("invalid --workers %d: want 1 to %d", c.workers, benchMaxWorkers)
	}
	if *uids != "" {
		r, err := parseUIDRange(*uids)
		if err != nil {
			return c, usageError{fmt.Errorf("invalid --uids: %w", err)}
		}
		if c.workers < r.len() {
			return c, usagef("--workers %d is fewer than the %d uids in --uids %s: every uid needs a worker", c.workers, r.len(), r)
		}
		c.uids = r
	}
	if c.timeout <= 0 || (c.duration <= 0 && c.mode != benchFleet) {
		return c, usagef("--duration and --timeout must be positive")
	}
	if c.count < 1 {
		return c, usagef("invalid --count %d: want at least 1", c.count)
	}
	if c.mode == benchJWT && c.audience == "" {
		return c, usagef("--audience must not be empty")
	}
	if c.trustDomain != "" {
		if _, err := spiffeid.TrustDomainFromString(c.trustDomain); err != nil {
			return c, usagef("invalid --trust-domain %q: %v", c.trustDomain, err)
		}
	}
	var err error
	if c.serverPIDs, err = parsePIDs(*pids); err != nil {
		return c, usageError{fmt.Errorf("invalid --server-pid: %w", err)}
	}
	if c.sockets, err = parseSockets(*sock, e.getenv); err != nil {
		return c, usageError{fmt.Errorf("invalid --socket: %w", err)}
	}
	if c.mode == benchFleet {
		if len(c.serverPIDs) > 1 {
			return c, usagef("--mode fleet measures one server: --server-pid takes one pid")
		}
	} else {
		if len(c.serverPIDs) > 0 && len(c.serverPIDs) != len(c.sockets) {
			return c, usagef("--server-pid has %d pids for %d sockets: give one per socket, in the order of --socket", len(c.serverPIDs), len(c.sockets))
		}
		if c.workers < len(c.sockets) {
			return c, usagef("--workers %d is fewer than the %d sockets in --socket: every socket needs a worker", c.workers, len(c.sockets))
		}
	}
	if c.adminSocket, err = socketpath.Admin(*asock, e.getenv); err != nil {
		return c, usageError{err}
	}
	return c, nil
}

// checkFleet checks the flags of --mode fleet, set being the flags given,
// and fills in its defaults: --timeout a minute, --duration twice the
// SVID TTL (four rotations of every workload).
func (c *benchConfig) checkFleet(set map[string]bool) error {
	for _, f := range []string{"uids", "workers", "setup", "samples", "node", "socket", "count", "audience"} {
		if set[f] {
			return usagef("--%s is not for --mode fleet", f)
		}
	}
	if c.server == "" {
		return usagef("--mode fleet needs --server, the agent listener address of the badge server (badge server --agent-listen)")
	}
	if _, _, err := net.SplitHostPort(c.server); err != nil {
		return usagef("invalid --server %q: want HOST:PORT (%v)", c.server, err)
	}
	if c.agents < 1 || c.agents > benchMaxAgents {
		return usagef("invalid --agents %d: want 1 to %d", c.agents, benchMaxAgents)
	}
	if c.workloads < 1 || c.workloads > benchMaxWorkers/c.agents {
		return usagef("invalid --workloads %d: want 1 to %d with %d agents", c.workloads, benchMaxWorkers/c.agents, c.agents)
	}
	if c.nodeEntries < 1 || c.nodeEntries > fleetMaxNodeEntries {
		return usagef("invalid --node-entries %d: want 1 to %d", c.nodeEntries, fleetMaxNodeEntries)
	}
	if c.svidTTL < 10*time.Second {
		return usagef("invalid --svid-ttl %s: the server's minimum is 10s", c.svidTTL)
	}
	if !set["timeout"] {
		c.timeout = fleetDefaultTimeout
	}
	if !set["duration"] {
		c.duration = 2 * c.svidTTL
	}
	return nil
}

// parseSockets resolves --socket: one path (or the default from the
// environment), or several separated by commas, each distinct.
func parseSockets(v string, getenv func(string) string) ([]string, error) {
	if !strings.Contains(v, ",") {
		p, err := socketpath.Workload(v, getenv)
		if err != nil {
			return nil, err
		}
		return []string{p}, nil
	}
	var out []string
	for f := range strings.SplitSeq(v, ",") {
		if f == "" {
			return nil, fmt.Errorf("an empty path in %q: want PATH,PATH,...", v)
		}
		p, err := socketpath.Parse(f)
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, p) {
			return nil, fmt.Errorf("%s is given twice", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// parsePIDs parses --server-pid: "" or "0" for none (the listeners of the
// sockets), else positive pids separated by commas.
func parsePIDs(v string) ([]int, error) {
	if v == "" || v == "0" {
		return nil, nil
	}
	var out []int
	for f := range strings.SplitSeq(v, ",") {
		if f == "" || f[0] < '0' || f[0] > '9' {
			return nil, fmt.Errorf("%q is not a pid: want PID or PID,PID,...", f)
		}
		n, err := strconv.ParseInt(f, 10, 32)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a pid: want PID or PID,PID,...", f)
		}
		out = append(out, int(n))
	}
	return out, nil
}

// durationFlag is a time.Duration flag that refuses negative values.
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if d < 0 {
		return fmt.Errorf("duration %s is negative", s)
	}
	*f.d = d
	return nil
}

// uidRange is an inclusive range of uids; the zero value is "not set".
type uidRange struct {
	first, last uint32
	set         bool
}

// parseUIDRange parses "FIRST-LAST" or a single uid.
func parseUIDRange(s string) (uidRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	first, err := parseUID(lo)
	if err != nil {
		return uidRange{}, err
	}
	last := first
	if isRange {
		if last, err = parseUID(hi); err != nil {
			return uidRange{}, err
		}
	}
	if last < first {
		return uidRange{}, fmt.Errorf("range %q ends before it starts", s)
	}
	if last-first >= benchMaxUIDs {
		return uidRange{}, fmt.Errorf("range %q has %d uids; at most %d", s, uint64(last-first)+1, benchMaxUIDs)
	}
	return uidRange{first: first, last: last, set: true}, nil
}

func parseUID(s string) (uint32, error) {
	if s == "" || strings.TrimSpace(s) != s || s[0] == '+' {
		return 0, fmt.Errorf("want FIRST-LAST, two uids such as 1001-1016, not %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a uid", s)
	}
	if n == math.MaxUint32 {
		return 0, fmt.Errorf("%d is not a valid uid (it means -1)", n)
	}
	return uint32(n), nil
}

func (r uidRange) len() int { return int(r.last-r.first) + 1 }

func (r uidRange) String() string {
	if r.first == r.last {
		return strconv.FormatUint(uint64(r.first), 10)
	}
	return fmt.Sprintf("%d-%d", r.first, r.last)
}
