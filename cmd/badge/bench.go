package main

// badge bench: the load generator that ships with badge.
//
// It talks to a running server only through the Workload API socket (and,
// for --mode propagation or --setup, the admin socket), with go-spiffe's
// client: workloadapi.Client for fetch and jwt, the generated Workload API
// client for streams, where every response must be timed as it arrives. It
// reads the daemon's CPU time and RSS from /proc.
//
// --uids runs every worker as a uid of its own. A process cannot hold
// several uids, so bench re-executes itself once per uid (as that uid) and
// the children report back to the parent as JSON lines on a pipe: the
// parent sends the run's spec, then "go"; a child answers with its samples,
// then serves "wait" (propagation) until "close".

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca/admin"
)

// Bench modes.
const (
	benchFetch       = "fetch"
	benchStream      = "stream"
	benchPropagation = "propagation"
	benchJWT         = "jwt"
)

// benchChildArg, as the first argument of "badge bench", makes the process a
// worker child of another bench (see runBenchChild). It is not a flag so
// that it stays out of the usage text.
const benchChildArg = "--internal-bench-child"

// Limits that keep a mistyped flag from forking or dialing without end.
const (
	benchMaxUIDs      = 1024
	benchMaxWorkers   = 1 << 20
	benchOpenParallel = 64 // streams being opened at once, per process
)

// benchConfig is what `badge bench` was asked to do.
type benchConfig struct {
	mode        string
	socket      string
	workers     int
	uids        uidRange
	duration    time.Duration
	timeout     time.Duration
	adminSocket string
	setup       bool
	count       int
	audience    string
	trustDomain string
	serverPID   int
	asJSON      bool
}

func runBench(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == benchChildArg {
		return runBenchChild(ctx, e.stdin, e.stdout)
	}
	c, err := e.parseBench(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b := &bench{cfg: c, e: e}
	rep, err := b.run(ctx)
	if err != nil {
		return err
	}
	if c.asJSON {
		return writeJSON(e.stdout, rep)
	}
	rep.print(e.stdout)
	return nil
}

func (e *env) parseBench(args []string) (benchConfig, error) {
	c := benchConfig{
		mode: benchFetch, workers: 4, duration: 10 * time.Second, timeout: 5 * time.Second,
		count: 20, audience: "bench",
	}
	fs := e.flagSet("bench", "[--socket PATH] [--mode fetch|stream|propagation|jwt] [--workers N] [--uids FIRST-LAST] [--duration D]")
	sock := fs.String("socket", "", "Workload API socket `path` (default: $SPIFFE_ENDPOINT_SOCKET, $BADGE_SOCKET, "+clientSocketHelp(workloadSocketName)+")")
	fs.StringVar(&c.mode, "mode", c.mode, "fetch: fresh connection per FetchX509SVID; stream: hold N streams (memory, idle CPU);\npropagation: time for a new entry to reach open streams; jwt: FetchJWTSVID on open connections")
	fs.IntVar(&c.workers, "workers", c.workers, "concurrent callers (fetch, jwt) or open streams (stream, propagation)")
	uids := fs.String("uids", "", "run the workers as uids `FIRST-LAST`, round robin (needs root; entries must match them, or use --setup)")
	fs.Var(durationFlag{&c.duration}, "duration", "how long fetch and jwt call, and how long stream holds its streams idle")
	fs.Var(durationFlag{&c.timeout}, "timeout", "limit for one call, one stream's first SVID, or one propagation")
	asock := adminFlags(fs)
	fs.BoolVar(&c.setup, "setup", false, "create an entry (unix:uid:N) for every benchmarked uid that has none, and delete it afterwards")
	fs.IntVar(&c.count, "count", c.count, "propagation: how many entries to create, one after another")
	fs.StringVar(&c.audience, "audience", c.audience, "jwt: audience to request")
	fs.StringVar(&c.trustDomain, "trust-domain", "", "trust `domain` for entries bench creates (default: that of the workloads' SVIDs or entries, else example.org)")
	fs.IntVar(&c.serverPID, "server-pid", 0, "daemon `pid` whose CPU time and RSS to report (default: the process listening on --socket)")
	fs.BoolVar(&c.asJSON, "json", false, "print the results as JSON")
	noEnv := []string{"socket", "mode", "workers", "uids", "duration", "timeout", "setup", "count", "audience", "trust-domain", "server-pid", "json"}
	if err := e.parseNoArgs(fs, args, noEnv...); err != nil {
		return c, err
	}
	switch c.mode {
	case benchFetch, benchStream, benchPropagation, benchJWT:
	default:
		return c, usagef("invalid --mode %q: want fetch, stream, propagation or jwt", c.mode)
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
	if c.duration <= 0 || c.timeout <= 0 {
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
	if c.serverPID < 0 {
		return c, usagef("invalid --server-pid %d", c.serverPID)
	}
	var err error
	if c.socket, err = e.workloadSocket(*sock); err != nil {
		return c, err
	}
	if *asock == "" {
		*asock = clientSocket(e.getenv, adminSocketName)
	}
	if c.adminSocket, err = socketPath(*asock); err != nil {
		return c, err
	}
	return c, nil
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

// bench runs one benchmark.
type bench struct {
	cfg    benchConfig
	e      *env
	pid    int      // the daemon, 0 if unknown
	groups []group  // all workers, one group per uid
	notes  []string // warnings printed with the summary
	admin  *admin.Client
}

func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

func (b *bench) run(ctx context.Context) (*benchReport, error) {
	c := b.cfg
	if fi, err := os.Stat(c.socket); err != nil {
		return nil, fmt.Errorf("no Workload API socket at %s: is badge server running? (%v)", c.socket, err)
	} else if fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("%s is not a socket", c.socket)
	}
	if c.uids.set && os.Geteuid() != 0 {
		return nil, fmt.Errorf("--uids needs root: bench runs one child per uid with that uid's credentials (this process runs as uid %d)", os.Geteuid())
	}
	b.pid = c.serverPID
	if b.pid == 0 {
		pid, err := findSocketOwner("/proc", c.socket)
		if err != nil {
			b.note("daemon CPU and RSS not reported: %v; pass --server-pid", err)
		}
		b.pid = pid
	} else if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", b.pid)); err != nil {
		return nil, fmt.Errorf("--server-pid %d: no such process", b.pid)
	}
	if c.mode == benchPropagation || c.setup {
		b.admin = admin.NewClient(c.adminSocket)
	}
	if c.setup {
		cleanup, err := b.setupEntries(ctx)
		defer cleanup()
		if err != nil {
			return nil, err
		}
	}
	if err := b.startGroups(ctx); err != nil {
		return nil, err
	}
	defer b.closeGroups()
	rep := &benchReport{
		Mode: c.mode, Socket: c.socket, Workers: c.workers, DurationS: c.duration.Seconds(),
	}
	if c.uids.set {
		rep.UIDs = c.uids.String()
	}
	var err error
	switch c.mode {
	case benchFetch, benchJWT:
		err = b.runCalls(ctx, rep)
	case benchStream:
		err = b.runStreams(ctx, rep)
	case benchPropagation:
		err = b.runPropagation(ctx, rep)
	}
	rep.Notes = b.notes
	return rep, err
}

// uidList is the uids the workers run as: the range, or this process's uid.
func (b *bench) uidList() []uint32 {
	if !b.cfg.uids.set {
		return []uint32{uint32(os.Getuid())}
	}
	var out []uint32
	for u := uint64(b.cfg.uids.first); u <= uint64(b.cfg.uids.last); u++ {
		out = append(out, uint32(u))
	}
	return out
}

// startGroups starts the workers' processes: this one, or one child per uid.
func (b *bench) startGroups(ctx context.Context) error {
	c := b.cfg
	uids := b.uidList()
	spec := benchSpec{Mode: c.mode, Socket: c.socket, Duration: c.duration, Timeout: c.timeout, Audience: c.audience}
	share := func(i int) int { // workers of the i-th uid, round robin
		n := c.workers / len(uids)
		if i < c.workers%len(uids) {
			n++
		}
		return n
	}
	streams := c.mode == benchStream || c.mode == benchPropagation
	if streams {
		need := uint64(share(0)) + 256
		if err := raiseNoFile(need); err != nil {
			return err
		}
		b.checkServerNoFile(uint64(c.workers))
	}
	if !c.uids.set {
		spec.Workers = c.workers
		b.groups = []group{&localGroup{spec: spec, uid: uids[0]}}
		return nil
	}
	exe, cleanup, err := benchExecutable()
	if err != nil {
		return err
	}
	defer cleanup() // the children keep the executable they started from open
	for i, uid := range uids {
		s := spec
		s.Workers = share(i)
		g, err := startChild(ctx, exe, uid, s, b.e.stderr)
		if err != nil {
			b.closeGroups()
			return fmt.Errorf("starting the worker for uid %d: %w", uid, err)
		}
		b.groups = append(b.groups, g)
	}
	return nil
}

func (b *bench) closeGroups() {
	var wg sync.WaitGroup
	for _, g := range b.groups {
		wg.Go(func() { g.Close() })
	}
	wg.Wait()
	b.groups = nil
}

// runAll runs every group at once and merges what they measured.
// The first group that fails stops the others.
func (b *bench) runAll(ctx context.Context) (benchSamples, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := make([]groupResult, len(b.groups))
	errs := make([]error, len(b.groups))
	var wg sync.WaitGroup
	for i, g := range b.groups {
		wg.Go(func() {
			res[i], errs[i] = g.Run(ctx)
			if errs[i] != nil || res[i].Fatal != "" {
				cancel()
			}
		})
	}
	wg.Wait()
	var all benchSamples
	all.errors = map[string]int{}
	for i, r := range res { // the cause first: the groups it stopped fail too
		if r.Fatal != "" {
			return all, b.fatalError(b.groups[i].UID(), r)
		}
	}
	for i, err := range errs {
		if err != nil {
			return all, fmt.Errorf("worker for uid %d: %w", b.groups[i].UID(), err)
		}
	}
	for _, r := range res {
		all.ns = append(all.ns, r.Samples...)
		for k, v := range r.Errors {
			all.errors[k] += v
		}
		if all.firstErr == "" {
			all.firstErr = r.FirstErr
		}
		if len(all.firstIDs) == 0 {
			all.firstIDs = r.IDs
		}
		all.opened = append(all.opened, len(r.Samples))
	}
	return all, nil
}

// benchSamples is what all groups measured together.
type benchSamples struct {
	ns       []int64
	errors   map[string]int
	firstErr string
	firstIDs []string
	opened   []int // per group: successful calls or open streams
}

func (s benchSamples) errorCount() int {
	n := 0
	for _, v := range s.errors {
		n += v
	}
	return n
}

// fatalError explains a failure that ends the run.
func (b *bench) fatalError(uid uint32, r groupResult) error {
	switch r.FatalCode {
	case codes.PermissionDenied.String():
		return fmt.Errorf("the Workload API refused uid %d (PermissionDenied: %s); if no entry matches that uid, register one with "+
			"`badge entry create --id spiffe://<trust-domain>/bench/uid-%d --selector unix:uid:%d`, or rerun with --setup", uid, r.Fatal, uid, uid)
	case codes.Unimplemented.String():
		if b.cfg.mode == benchJWT {
			return fmt.Errorf("the server does not implement FetchJWTSVID yet (Unimplemented: %s)", r.Fatal)
		}
	case codes.Unavailable.String():
		return fmt.Errorf("no Workload API answers on %s (uid %d): %s", b.cfg.socket, uid, r.Fatal)
	}
	return fmt.Errorf("uid %d: %s: %s", uid, r.FatalCode, r.Fatal)
}

// runCalls measures fetch or jwt: the workers call for --duration.
func (b *bench) runCalls(ctx context.Context, rep *benchReport) error {
	before, berr := readProcUsage(b.pid)
	hostBefore := b.sampleHost()
	start := time.Now()
	s, err := b.runAll(ctx)
	elapsed := time.Since(start)
	after, aerr := readProcUsage(b.pid)
	rep.Host = b.hostReport(hostBefore, b.sampleHost(), before, after, elapsed)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	rep.ElapsedS = roundTo(elapsed.Seconds(), 3)
	rep.Calls = len(s.ns)
	rep.CallsPerSec = roundTo(float64(rep.Calls)/elapsed.Seconds(), 1)
	rep.Errors, rep.ErrorCodes, rep.FirstError = s.errorCount(), s.errors, s.firstErr
	rep.LatencyMS = summarize(s.ns)
	if b.pid != 0 && berr == nil && aerr == nil {
		cpu := after.cpuMS() - before.cpuMS()
		rep.Server = &serverReport{
			PID: b.pid, CPUMS: cpu, CPUMSKernel: ticksMS(after.stime - before.stime),
			RSSKiBBefore: before.rssKiB, RSSKiBAfter: after.rssKiB,
			RSSAnonKiBBefore: before.anonKiB, RSSAnonKiBAfter: after.anonKiB,
		}
		if rep.Calls > 0 {
			rep.Server.CPUMSPerCall = roundTo(cpu/float64(rep.Calls), 4)
		}
	} else if b.pid != 0 {
		b.note("reading /proc/%d: %v", b.pid, errors.Join(berr, aerr))
	}
	return nil
}

// runStreams opens the streams, holds them idle for --duration, closes them.
func (b *bench) runStreams(ctx context.Context, rep *benchReport) error {
	idle, ierr := readProcUsage(b.pid)
	hostBefore := b.sampleHost()
	start := time.Now()
	s, err := b.runAll(ctx)
	openTime := time.Since(start)
	if err != nil {
		return err
	}
	opened, _ := readProcUsage(b.pid)
	rep.Host = b.hostReport(hostBefore, b.sampleHost(), idle, opened, openTime)
	sr := &streamReport{
		Requested: b.cfg.workers, Open: len(s.ns), OpenAllS: openTime.Seconds(),
		OpenLatencyMS: summarize(s.ns), HoldS: b.cfg.duration.Seconds(),
	}
	rep.Streams = sr
	rep.Errors, rep.ErrorCodes, rep.FirstError = s.errorCount(), s.errors, s.firstErr
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.cfg.duration):
	}
	held, herr := readProcUsage(b.pid)
	b.closeGroups()
	time.Sleep(time.Second) // let the daemon notice the closed connections
	closed, cerr := readProcUsage(b.pid)
	if b.pid == 0 {
		return nil
	}
	if err := errors.Join(ierr, herr, cerr); err != nil {
		b.note("reading /proc/%d: %v", b.pid, err)
		return nil
	}
	sr.RSSKiBIdle, sr.RSSKiBOpen, sr.RSSKiBHeld, sr.RSSKiBClosed = idle.rssKiB, opened.rssKiB, held.rssKiB, closed.rssKiB
	sr.RSSAnonKiBIdle, sr.RSSAnonKiBHeld = idle.anonKiB, held.anonKiB
	sr.CPUMSOpen = opened.cpuMS() - idle.cpuMS()
	sr.CPUMSHold = held.cpuMS() - opened.cpuMS()
	if sr.Open > 0 {
		sr.RSSKiBPerStream = roundTo((float64(held.rssKiB)-float64(idle.rssKiB))/float64(sr.Open), 2)
		sr.RSSAnonKiBPerStream = roundTo((float64(held.anonKiB)-float64(idle.anonKiB))/float64(sr.Open), 2)
		sr.CPUMSPerOpen = roundTo(sr.CPUMSOpen/float64(sr.Open), 4)
	}
	rep.Server = &serverReport{
		PID: b.pid, CPUMS: sr.CPUMSOpen + sr.CPUMSHold, CPUMSKernel: ticksMS(held.stime - idle.stime),
		RSSKiBBefore: idle.rssKiB, RSSKiBAfter: held.rssKiB,
		RSSAnonKiBBefore: idle.anonKiB, RSSAnonKiBAfter: held.anonKiB,
	}
	return nil
}

// runPropagation opens the streams, then --count times creates an entry
// that matches them and times its arrival on every stream, and deletes it.
func (b *bench) runPropagation(ctx context.Context, rep *benchReport) error {
	s, err := b.runAll(ctx)
	if err != nil {
		return err
	}
	rep.Errors, rep.ErrorCodes, rep.FirstError = s.errorCount(), s.errors, s.firstErr
	for i, n := range s.opened {
		if n == 0 {
			return fmt.Errorf("no stream of uid %d opened: %s", b.groups[i].UID(), s.firstErr)
		}
	}
	td, err := b.trustDomainOf(ctx, s.firstIDs)
	if err != nil {
		return err
	}
	pr := &propagationReport{Streams: len(s.ns), Repetitions: b.cfg.count}
	rep.Propagation = pr
	var fromStart, fromReturn, createCall, deleted []int64
	created := map[string]string{} // entry id → SPIFFE ID, deleted on the way out
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for id := range created {
			if err := b.admin.DeleteEntry(dctx, id); err != nil {
				b.note("could not delete entry %s (%s) that bench created: %v", id, created[id], err)
			}
		}
	}()
	for k := 1; k <= b.cfg.count; k++ {
		type made struct{ entryID, spiffeID string }
		ents := make([]made, len(b.groups))
		t0 := make([]int64, len(b.groups))
		t1 := make([]int64, len(b.groups))
		for i, g := range b.groups {
			id := fmt.Sprintf("spiffe://%s/bench/prop-%d-%d", td.Name(), os.Getpid(), k)
			if len(b.groups) > 1 {
				id += fmt.Sprintf("-uid%d", g.UID())
			}
			t0[i] = monoNow()
			ent, err := b.admin.CreateEntry(ctx, admin.EntryRequest{SPIFFEID: id, Selectors: []string{fmt.Sprintf("unix:uid:%d", g.UID())}})
			t1[i] = monoNow()
			if err != nil {
				return fmt.Errorf("creating entry %s: %w", id, err)
			}
			created[ent.ID] = id
			ents[i] = made{ent.ID, id}
			createCall = append(createCall, t1[i]-t0[i])
		}
		arr, err := b.waitAll(ctx, func(i int) string { return ents[i].spiffeID }, false)
		if err != nil {
			return err
		}
		for i, a := range arr {
			for _, t := range a {
				fromStart = append(fromStart, t-t0[i])
				fromReturn = append(fromReturn, t-t1[i])
			}
			pr.Missed += s.opened[i] - len(a)
		}
		td0 := make([]int64, len(b.groups))
		for i := range b.groups {
			td0[i] = monoNow()
			if err := b.admin.DeleteEntry(ctx, ents[i].entryID); err != nil {
				return fmt.Errorf("deleting entry %s: %w", ents[i].entryID, err)
			}
			delete(created, ents[i].entryID)
		}
		arr, err = b.waitAll(ctx, func(i int) string { return ents[i].spiffeID }, true)
		if err != nil {
			return err
		}
		for i, a := range arr {
			for _, t := range a {
				deleted = append(deleted, t-td0[i])
			}
			pr.MissedDelete += s.opened[i] - len(a)
		}
	}
	pr.FromCreateStartMS = summarize(fromStart)
	pr.FromCreateReturnMS = summarize(fromReturn)
	pr.CreateCallMS = summarize(createCall)
	pr.DeleteMS = summarize(deleted)
	return nil
}

// waitAll waits, in every group at once, until each stream has received
// (gone: no longer receives) the SPIFFE ID idOf(group), or --timeout.
func (b *bench) waitAll(ctx context.Context, idOf func(int) string, gone bool) ([][]int64, error) {
	out := make([][]int64, len(b.groups))
	errs := make([]error, len(b.groups))
	var wg sync.WaitGroup
	for i, g := range b.groups {
		wg.Go(func() { out[i], errs[i] = g.Wait(ctx, idOf(i), gone, b.cfg.timeout) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, ctx.Err()
}

// trustDomainOf picks the trust domain of entries bench creates: the flag,
// else that of the SPIFFE IDs the workloads hold, else that of an existing
// entry, else example.org.
func (b *bench) trustDomainOf(ctx context.Context, held []string) (spiffeid.TrustDomain, error) {
	if b.cfg.trustDomain != "" {
		return spiffeid.TrustDomainFromString(b.cfg.trustDomain)
	}
	for _, s := range held {
		if id, err := spiffeid.FromString(s); err == nil {
			return id.TrustDomain(), nil
		}
	}
	es, err := b.admin.ListEntries(ctx)
	if err != nil {
		return spiffeid.TrustDomain{}, err
	}
	for _, en := range es {
		if id, err := spiffeid.FromString(en.SPIFFEID); err == nil {
			return id.TrustDomain(), nil
		}
	}
	return spiffeid.RequireTrustDomainFromString("example.org"), nil
}

// setupEntries creates spiffe://TD/bench/uid-N (selector unix:uid:N) for
// every benchmarked uid that no entry with exactly that selector matches.
// The returned function deletes what it created.
func (b *bench) setupEntries(ctx context.Context) (func(), error) {
	var created []string
	cleanup := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for _, id := range created {
			if err := b.admin.DeleteEntry(dctx, id); err != nil {
				fmt.Fprintf(b.e.stderr, "badge bench: could not delete entry %s that --setup created: %v\n", id, err)
			}
		}
	}
	es, err := b.admin.ListEntries(ctx)
	if err != nil {
		return cleanup, fmt.Errorf("--setup: %w", err)
	}
	have := map[string]bool{}
	for _, en := range es {
		if len(en.Selectors) == 1 {
			have[en.Selectors[0]] = true
		}
	}
	td, err := b.trustDomainOf(ctx, nil)
	if err != nil {
		return cleanup, err
	}
	for _, uid := range b.uidList() {
		sel := fmt.Sprintf("unix:uid:%d", uid)
		if have[sel] {
			continue
		}
		ent, err := b.admin.CreateEntry(ctx, admin.EntryRequest{
			SPIFFEID: fmt.Sprintf("spiffe://%s/bench/uid-%d", td.Name(), uid), Selectors: []string{sel},
		})
		if err != nil {
			return cleanup, fmt.Errorf("--setup: creating an entry for uid %d: %w", uid, err)
		}
		created = append(created, ent.ID)
	}
	return cleanup, nil
}

// checkServerNoFile notes when the daemon's open-file limit is too low for
// the streams: it holds a socket per connection (and a pidfd as well on
// kernels without SO_PEERPIDFD, counted here to be safe).
func (b *bench) checkServerNoFile(streams uint64) {
	if b.pid == 0 {
		return
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", b.pid))
	if err != nil {
		return
	}
	soft, err := parseProcMaxOpenFiles(string(data))
	if err != nil || soft >= streams+64 {
		return
	}
	b.note("the daemon (pid %d) may open %d files, and %d streams need at least %d (a socket each, and a pidfd each on kernels before 6.5): "+
		"start it under a higher `ulimit -n` (LimitNOFILE= in systemd)", b.pid, soft, streams, streams+64)
}

// group is the workers of one uid: in this process, or in a child.
type group interface {
	UID() uint32
	// Run runs the mode's workload: calls for the spec's duration (fetch,
	// jwt) or opens the streams (stream, propagation).
	Run(ctx context.Context) (groupResult, error)
	// Wait returns, for each open stream, the monotonic time (monoNow) at
	// which it first received SPIFFE ID id, or with gone the first
	// response without id after it had it. It waits until every stream has
	// or until timeout.
	Wait(ctx context.Context, id string, gone bool, timeout time.Duration) ([]int64, error)
	// Close closes every stream and, for a child, ends it.
	Close() error
}

// benchSpec tells a group what to do.
type benchSpec struct {
	Mode     string        `json:"mode"`
	Socket   string        `json:"socket"`
	Workers  int           `json:"workers"`
	Duration time.Duration `json:"duration"`
	Timeout  time.Duration `json:"timeout"`
	Audience string        `json:"audience,omitempty"`
}

// groupResult is what one group measured.
type groupResult struct {
	// Samples are latencies in nanoseconds: of each successful call
	// (fetch, jwt) or of each stream's first SVID (stream, propagation).
	Samples []int64 `json:"samples_ns"`
	// Errors counts failed calls or streams by gRPC code.
	Errors   map[string]int `json:"errors,omitempty"`
	FirstErr string         `json:"first_error,omitempty"`
	// Fatal, with its gRPC code, is an error that ends the run
	// (PermissionDenied, Unimplemented, a first call that failed).
	Fatal     string `json:"fatal,omitempty"`
	FatalCode string `json:"fatal_code,omitempty"`
	// IDs are the SPIFFE IDs of the first response (streams only).
	IDs []string `json:"ids,omitempty"`
}

// localGroup runs workers in this process.
type localGroup struct {
	spec    benchSpec
	uid     uint32
	streams *streamSet
}

func (g *localGroup) UID() uint32 { return g.uid }

func (g *localGroup) Run(ctx context.Context) (groupResult, error) {
	switch g.spec.Mode {
	case benchFetch, benchJWT:
		return runCallers(ctx, g.spec), nil
	default:
		g.streams = newStreamSet(g.spec.Socket)
		return g.streams.open(ctx, g.spec.Workers, g.spec.Timeout), nil
	}
}

func (g *localGroup) Wait(ctx context.Context, id string, gone bool, timeout time.Duration) ([]int64, error) {
	if g.streams == nil {
		return nil, errors.New("no streams are open")
	}
	return g.streams.wait(ctx, id, gone, timeout), nil
}

func (g *localGroup) Close() error {
	if g.streams != nil {
		g.streams.close()
	}
	return nil
}

// fatalCode reports whether a call failing with c makes the run meaningless.
func fatalCode(c codes.Code) bool {
	return c == codes.PermissionDenied || c == codes.Unimplemented || c == codes.InvalidArgument
}

// runCallers runs spec.Workers callers for spec.Duration. A fetch caller
// opens a fresh connection for every FetchX509SVID; a jwt caller keeps one
// connection and calls FetchJWTSVID on it.
func runCallers(ctx context.Context, spec benchSpec) groupResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	addr := "unix://" + spec.Socket
	until := time.Now().Add(spec.Duration)
	type out struct {
		ns       []int64
		errs     map[string]int
		firstErr string
	}
	outs := make([]out, spec.Workers)
	var (
		fatalOnce sync.Once
		fatal     error
		wg        sync.WaitGroup
	)
	stop := func(err error) { fatalOnce.Do(func() { fatal = err; cancel() }) }
	for w := range outs {
		o := &outs[w]
		o.errs = map[string]int{}
		wg.Go(func() {
			var jc *workloadapi.Client
			if spec.Mode == benchJWT {
				var err error
				if jc, err = workloadapi.New(ctx, workloadapi.WithAddr(addr)); err != nil {
					stop(err)
					return
				}
				defer jc.Close()
			}
			for first := true; time.Now().Before(until) && ctx.Err() == nil; first = false {
				cctx, ccancel := context.WithTimeout(ctx, spec.Timeout)
				start := time.Now()
				var err error
				if jc != nil {
					_, err = jc.FetchJWTSVID(cctx, jwtsvid.Params{Audience: spec.Audience})
				} else {
					err = fetchFresh(cctx, addr)
				}
				d := time.Since(start)
				ccancel()
				if err != nil {
					if ctx.Err() != nil {
						return // another worker ended the run
					}
					code := status.Code(err)
					if fatalCode(code) || (first && code == codes.Unavailable) {
						stop(err)
						return
					}
					o.errs[code.String()]++
					if o.firstErr == "" {
						o.firstErr = err.Error()
					}
					continue
				}
				o.ns = append(o.ns, int64(d))
			}
		})
	}
	wg.Wait()
	var r groupResult
	if fatal != nil {
		r.Fatal, r.FatalCode = status.Convert(fatal).Message(), status.Code(fatal).String()
		return r
	}
	r.Errors = map[string]int{}
	for _, o := range outs {
		r.Samples = append(r.Samples, o.ns...)
		for k, v := range o.errs {
			r.Errors[k] += v
		}
		if r.FirstErr == "" {
			r.FirstErr = o.firstErr
		}
	}
	return r
}

// fetchFresh connects, fetches the default X.509-SVID and disconnects, as a
// workload that starts up does.
func fetchFresh(ctx context.Context, addr string) error {
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.FetchX509SVID(ctx)
	return err
}

// streamSet holds FetchX509SVID streams, each on its own connection, and
// records when each SPIFFE ID arrives on (and leaves) each of them.
type streamSet struct {
	target string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   []*grpc.ClientConn
	nOpen   int                // streams that received their first SVID
	changed chan struct{}      // closed and replaced on every response
	seen    map[string][]int64 // SPIFFE ID → when each stream got it
	gone    map[string][]int64 // SPIFFE ID → when each stream that had it lost it
	errs    map[string]int
	first   string
}

func newStreamSet(socket string) *streamSet {
	return &streamSet{
		target: "unix://" + socket, changed: make(chan struct{}),
		seen: map[string][]int64{}, gone: map[string][]int64{}, errs: map[string]int{},
	}
}

// open opens n streams, benchOpenParallel at a time, each waiting up to
// timeout for its first SVID.
// Cancelling ctx stops the opening; the streams opened stay open until
// close.
func (s *streamSet) open(ctx context.Context, n int, timeout time.Duration) groupResult {
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	sem := make(chan struct{}, benchOpenParallel)
	lat := make([]int64, n)
	var (
		wg        sync.WaitGroup
		fatalOnce sync.Once
		fatal     error
		firstIDs  []string
	)
	for i := range n {
		if ctx.Err() != nil || s.ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d, ids, err := s.openOne(timeout)
			if err != nil {
				if fatalCode(status.Code(err)) {
					fatalOnce.Do(func() { fatal = err; s.cancel() })
				}
				s.noteErr(err)
				lat[i] = -1
				return
			}
			lat[i] = d
			if i == 0 {
				firstIDs = ids
			}
		})
	}
	wg.Wait()
	var r groupResult
	if fatal != nil {
		r.Fatal, r.FatalCode = status.Convert(fatal).Message(), status.Code(fatal).String()
		return r
	}
	for _, d := range lat {
		if d > 0 {
			r.Samples = append(r.Samples, d)
		}
	}
	s.mu.Lock()
	r.Errors, r.FirstErr = maps.Clone(s.errs), s.first
	s.mu.Unlock()
	r.IDs = firstIDs
	return r
}

func (s *streamSet) openOne(timeout time.Duration) (int64, []string, error) {
	start := time.Now()
	conn, err := grpc.NewClient(s.target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithReadBufferSize(8<<10), grpc.WithWriteBufferSize(8<<10))
	if err != nil {
		return 0, nil, err
	}
	ctx := metadata.AppendToOutgoingContext(s.ctx, "workload.spiffe.io", "true")
	ctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(timeout, cancel)
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	var resp *workload.X509SVIDResponse
	if err == nil {
		resp, err = stream.Recv()
	}
	if !timer.Stop() && err != nil && s.ctx.Err() == nil {
		err = status.Errorf(codes.DeadlineExceeded, "no X.509-SVID within %s", timeout)
	}
	if err != nil {
		cancel()
		conn.Close()
		return 0, nil, err
	}
	d := int64(time.Since(start))
	got := svidIDs(resp)
	s.mu.Lock()
	s.conns = append(s.conns, conn)
	s.nOpen++
	s.recordLocked(nil, got, monoNow())
	s.mu.Unlock()
	s.wg.Go(func() {
		defer cancel()
		s.recvLoop(stream, got)
	})
	return d, got, nil
}

func (s *streamSet) recvLoop(stream grpc.ServerStreamingClient[workload.X509SVIDResponse], cur []string) {
	for {
		resp, err := stream.Recv()
		now := monoNow()
		if err != nil {
			if s.ctx.Err() == nil {
				s.noteErr(err)
			}
			return
		}
		next := svidIDs(resp)
		s.mu.Lock()
		s.recordLocked(cur, next, now)
		s.mu.Unlock()
		cur = next
	}
}

// recordLocked notes a response carrying next on a stream that held prev.
func (s *streamSet) recordLocked(prev, next []string, now int64) {
	for _, id := range next {
		if !slices.Contains(prev, id) {
			s.seen[id] = append(s.seen[id], now)
		}
	}
	for _, id := range prev {
		if !slices.Contains(next, id) {
			s.gone[id] = append(s.gone[id], now)
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *streamSet) noteErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs[status.Code(err).String()]++
	if s.first == "" {
		s.first = err.Error()
	}
}

func (s *streamSet) wait(ctx context.Context, id string, gone bool, timeout time.Duration) []int64 {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		m := s.seen
		if gone {
			m = s.gone
		}
		got, ch, want := m[id], s.changed, s.nOpen
		if len(got) >= want {
			defer s.mu.Unlock()
			return slices.Clone(got)
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			s.mu.Lock()
			defer s.mu.Unlock()
			return slices.Clone(m[id])
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *streamSet) close() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}

func svidIDs(resp *workload.X509SVIDResponse) []string {
	out := make([]string, len(resp.GetSvids()))
	for i, sv := range resp.GetSvids() {
		out[i] = sv.GetSpiffeId()
	}
	return out
}

// monoNow is CLOCK_MONOTONIC in nanoseconds: comparable between the
// processes of one machine, unlike the monotonic reading of time.Time.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Now().UnixNano()
	}
	return ts.Nano()
}

// childMsg is one line of the parent–child protocol. The parent sends
// Spec first, then commands (go, wait, close); the child answers each.
type childMsg struct {
	Spec     *benchSpec    `json:"spec,omitempty"`
	Cmd      string        `json:"cmd,omitempty"`
	ID       string        `json:"id,omitempty"`
	Gone     bool          `json:"gone,omitempty"`
	Timeout  time.Duration `json:"timeout,omitempty"`
	Ready    bool          `json:"ready,omitempty"`
	Result   *groupResult  `json:"result,omitempty"`
	Arrivals []int64       `json:"arrivals,omitempty"`
	Err      string        `json:"error,omitempty"`
}

// runBenchChild is the worker side of --uids: it runs a localGroup as
// the uid it was started with and answers the parent on stdout.
func runBenchChild(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(stdin))
	enc := json.NewEncoder(stdout)
	var m childMsg
	if err := dec.Decode(&m); err != nil || m.Spec == nil {
		return usagef("%s is for bench's own use", benchChildArg)
	}
	g := &localGroup{spec: *m.Spec, uid: uint32(os.Getuid())}
	defer g.Close()
	if err := enc.Encode(childMsg{Ready: true}); err != nil {
		return err
	}
	for {
		var m childMsg
		if err := dec.Decode(&m); err != nil {
			return nil // the parent is gone
		}
		var reply childMsg
		switch m.Cmd {
		case "go":
			r, err := g.Run(ctx)
			reply.Result = &r
			if err != nil {
				reply.Err = err.Error()
			}
		case "wait":
			arr, err := g.Wait(ctx, m.ID, m.Gone, m.Timeout)
			reply.Arrivals = arr
			if err != nil {
				reply.Err = err.Error()
			}
		case "close":
			g.Close()
			return enc.Encode(childMsg{Ready: true})
		default:
			reply.Err = fmt.Sprintf("unknown command %q", m.Cmd)
		}
		if err := enc.Encode(reply); err != nil {
			return err
		}
	}
}

// childGroup is a localGroup in a child process running as another uid.
type childGroup struct {
	uid  uint32
	cmd  *exec.Cmd
	in   io.WriteCloser
	enc  *json.Encoder
	dec  *json.Decoder
	done chan struct{}
}

func startChild(ctx context.Context, exe string, uid uint32, spec benchSpec, stderr io.Writer) (*childGroup, error) {
	gid := uid
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			gid = uint32(g)
		}
	}
	cmd := exec.Command(exe, "bench", benchChildArg)
	cmd.Dir = "/"
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &childGroup{uid: uid, cmd: cmd, in: in, enc: json.NewEncoder(in), dec: json.NewDecoder(bufio.NewReader(out)), done: make(chan struct{})}
	go func() { // a cancelled run must not wait on a child that still works
		select {
		case <-ctx.Done():
			cmd.Process.Kill()
		case <-c.done:
		}
	}()
	if _, err := c.roundTrip(childMsg{Spec: &spec}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *childGroup) roundTrip(m childMsg) (childMsg, error) {
	var r childMsg
	if err := c.enc.Encode(m); err != nil {
		return r, fmt.Errorf("worker process: %w", err)
	}
	if err := c.dec.Decode(&r); err != nil {
		return r, fmt.Errorf("worker process exited (%v)", err)
	}
	if r.Err != "" {
		return r, errors.New(r.Err)
	}
	return r, nil
}

func (c *childGroup) UID() uint32 { return c.uid }

func (c *childGroup) Run(ctx context.Context) (groupResult, error) {
	finished := make(chan struct{})
	go func() { // stopping the run ends the child
		select {
		case <-ctx.Done():
			c.cmd.Process.Kill()
		case <-finished:
		}
	}()
	r, err := c.roundTrip(childMsg{Cmd: "go"})
	close(finished)
	if err != nil {
		return groupResult{}, err
	}
	if r.Result == nil {
		return groupResult{}, errors.New("worker process sent no result")
	}
	return *r.Result, nil
}

func (c *childGroup) Wait(_ context.Context, id string, gone bool, timeout time.Duration) ([]int64, error) {
	r, err := c.roundTrip(childMsg{Cmd: "wait", ID: id, Gone: gone, Timeout: timeout})
	return r.Arrivals, err
}

func (c *childGroup) Close() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	if _, err := c.roundTrip(childMsg{Cmd: "close"}); err != nil {
		c.cmd.Process.Kill()
	}
	c.in.Close()
	t := time.AfterFunc(10*time.Second, func() { c.cmd.Process.Kill() })
	err := c.cmd.Wait()
	t.Stop()
	close(c.done)
	return err
}

// benchExecutable returns this executable, or a copy of it in a new 0755
// directory if other uids cannot reach it, and a function that removes
// the copy.
func benchExecutable() (string, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	if worldExecutable(exe) {
		return exe, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "badge-bench-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	cp := filepath.Join(dir, "badge")
	err = os.Chmod(dir, 0o755)
	if err == nil {
		err = copyFile(cp, exe, 0o755)
	}
	if err == nil && !worldExecutable(cp) {
		err = fmt.Errorf("%s is not reachable by other users; set TMPDIR to a directory they can traverse", dir)
	}
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("copying %s for the worker uids: %w", exe, err)
	}
	return cp, cleanup, nil
}

// worldExecutable reports whether any uid can execute path: the file is
// readable and executable by others and every directory above it is
// searchable by others.
func worldExecutable(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o005 != 0o005 {
		return false
	}
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func copyFile(dst, src string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// raiseNoFile raises RLIMIT_NOFILE to at least need, the hard limit too
// when running as root.
func raiseNoFile(need uint64) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if rl.Cur >= need {
		return nil
	}
	if rl.Max < need {
		if os.Geteuid() != 0 {
			return fmt.Errorf("%d streams need %d open files, but the hard limit is %d: raise it (ulimit -Hn) or run as root", need-256, need, rl.Max)
		}
		rl.Max = need
	}
	rl.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("raising the open-file limit to %d: %w (see /proc/sys/fs/nr_open)", need, err)
	}
	return nil
}

// hostSample is the busy CPU time of the machine and of bench's own
// processes, in clock ticks.
type hostSample struct{ busy, bench uint64 }

func (b *bench) sampleHost() hostSample {
	var h hostSample
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		h.busy, _ = parseProcStatBusy(string(data))
	}
	pids := []int{os.Getpid()}
	for _, g := range b.groups {
		if c, ok := g.(*childGroup); ok {
			pids = append(pids, c.cmd.Process.Pid)
		}
	}
	for _, pid := range pids {
		if u, err := readProcUsage(pid); err == nil {
			h.bench += u.utime + u.stime
		}
	}
	return h
}

// hostReport says how busy the machine was over a window of d, and with
// what: on a shared machine, other processes skew every figure.
func (b *bench) hostReport(h0, h1 hostSample, d0, d1 procUsage, d time.Duration) *hostReport {
	if h1.busy == 0 || d <= 0 {
		return nil
	}
	cores := func(ticks uint64) float64 { return roundTo(ticksMS(ticks)/float64(d.Milliseconds()), 2) }
	r := &hostReport{CPUs: runtime.NumCPU(), BusyCores: cores(h1.busy - h0.busy), BenchCores: cores(h1.bench - h0.bench)}
	if b.pid != 0 && d1.utime != 0 {
		r.DaemonCores = cores(d1.utime + d1.stime - d0.utime - d0.stime)
	}
	r.OtherCores = roundTo(max(r.BusyCores-r.BenchCores-r.DaemonCores, 0), 2)
	return r
}

// parseProcStatBusy returns the busy time of all CPUs (user, nice, system,
// irq, softirq, steal; guest time is part of user) from /proc/stat.
func parseProcStatBusy(s string) (uint64, error) {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: no cpu line")
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // skip idle (4) and iowait (5)
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return busy, nil
}

// Reading the daemon from /proc.

// procUsage is a process's CPU time and resident memory at one moment.
type procUsage struct {
	utime, stime uint64 // clock ticks in user and kernel mode
	rssKiB       uint64 // VmRSS
	anonKiB      uint64 // RssAnon: VmRSS without mapped files (the database)
}

func (u procUsage) cpuMS() float64 { return ticksMS(u.utime + u.stime) }

func ticksMS(t uint64) float64 { return float64(t) * 1000 / float64(clockTicks()) }

func readProcUsage(pid int) (procUsage, error) {
	if pid == 0 {
		return procUsage{}, errors.New("no daemon pid")
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procUsage{}, err
	}
	ut, st, err := parseProcStat(string(stat))
	if err != nil {
		return procUsage{}, err
	}
	st2, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procUsage{}, err
	}
	rss, anon, err := parseProcStatusRSS(string(st2))
	if err != nil {
		return procUsage{}, err
	}
	return procUsage{utime: ut, stime: st, rssKiB: rss, anonKiB: anon}, nil
}

// parseProcStat returns utime and stime (fields 14 and 15, clock ticks) of
// a /proc/PID/stat line. The command name (field 2) may contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseProcStat(s string) (utime, stime uint64, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("/proc stat: no command name")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc stat: %d fields after the command name, want at least 13", len(f))
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("/proc stat: utime: %w", err)
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("/proc stat: stime: %w", err)
	}
	return utime, stime, nil
}

// parseProcStatusRSS returns VmRSS and RssAnon (0 if the kernel does not
// report it) in KiB from /proc/PID/status.
func parseProcStatusRSS(s string) (rss, anon uint64, err error) {
	found := false
	for line := range strings.Lines(s) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "RssAnon") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc status: malformed %s line %q", name, strings.TrimSpace(line))
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc status: %s: %w", name, err)
		}
		if name == "VmRSS" {
			rss, found = v, true
		} else {
			anon = v
		}
	}
	if !found {
		return 0, 0, errors.New("/proc status: no VmRSS (a kernel thread or a zombie?)")
	}
	return rss, anon, nil
}

// parseProcMaxOpenFiles returns the soft "Max open files" of /proc/PID/limits.
func parseProcMaxOpenFiles(s string) (uint64, error) {
	for line := range strings.Lines(s) {
		rest, ok := strings.CutPrefix(line, "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 1 {
			break
		}
		if f[0] == "unlimited" {
			return math.MaxUint64, nil
		}
		return strconv.ParseUint(f[0], 10, 64)
	}
	return 0, errors.New("/proc limits: no Max open files line")
}

var clockTicks = sync.OnceValue(func() uint64 {
	if data, err := os.ReadFile("/proc/self/auxv"); err == nil {
		if t, ok := auxvClockTicks(data); ok {
			return t
		}
	}
	return 100 // USER_HZ on every Linux architecture Go supports
})

// auxvClockTicks finds AT_CLKTCK, the unit of /proc CPU times, in the
// auxiliary vector (pairs of native words).
func auxvClockTicks(auxv []byte) (uint64, bool) {
	const atClkTck = 17
	word := strconv.IntSize / 8
	for len(auxv) >= 2*word {
		var k, v uint64
		if word == 8 {
			k, v = binary.NativeEndian.Uint64(auxv), binary.NativeEndian.Uint64(auxv[8:])
		} else {
			k, v = uint64(binary.NativeEndian.Uint32(auxv)), uint64(binary.NativeEndian.Uint32(auxv[4:]))
		}
		if k == 0 {
			break
		}
		if k == atClkTck && v > 0 {
			return v, true
		}
		auxv = auxv[2*word:]
	}
	return 0, false
}

// findSocketOwner returns the pid of the process holding the listening
// Unix socket bound to path, from procRoot/net/unix and procRoot/*/fd.
func findSocketOwner(procRoot, path string) (int, error) {
	f, err := os.Open(filepath.Join(procRoot, "net", "unix"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	ino, err := listeningSocketInode(f, path)
	if err != nil {
		return 0, err
	}
	return findInodeOwner(procRoot, ino)
}

// listeningSocketInode finds, in the text of /proc/net/unix, the inode of
// the listening socket bound to path.
func listeningSocketInode(r io.Reader, path string) (uint64, error) {
	const acceptCon = 0x10000 // __SO_ACCEPTCON: listening
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	header := true
	for sc.Scan() {
		if header {
			header = false
			continue
		}
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&acceptCon == 0 {
			continue
		}
		if strings.Join(f[7:], " ") != path {
			continue
		}
		ino, err := strconv.ParseUint(f[6], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/net/unix: bad inode %q", f[6])
		}
		return ino, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no process listens on %s", path)
}

// findInodeOwner returns the lowest pid with an open descriptor on socket
// inode ino. Processes whose descriptors this user cannot read are skipped.
func findInodeOwner(procRoot string, ino uint64) (int, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return 0, err
	}
	want := fmt.Sprintf("socket:[%d]", ino)
	var pids []int
	for _, ent := range ents {
		if pid, err := strconv.Atoi(ent.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	for _, pid := range pids {
		fdDir := filepath.Join(procRoot, strconv.Itoa(pid), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && l == want {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no readable process holds socket inode %d (run as root or as the server's user)", ino)
}

// Latency statistics.

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method, or 0 for no samples.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// latencyStats summarizes durations, in milliseconds.
type latencyStats struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

func summarize(ns []int64) *latencyStats {
	if len(ns) == 0 {
		return nil
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	ms := func(v int64) float64 { return roundTo(float64(v)/1e6, 4) }
	return &latencyStats{
		N: len(s), Min: ms(s[0]), Mean: roundTo(sum/float64(len(s))/1e6, 4),
		P50: ms(percentile(s, 50)), P90: ms(percentile(s, 90)), P99: ms(percentile(s, 99)), Max: ms(s[len(s)-1]),
	}
}

func roundTo(v float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(v*p) / p
}

// Reports.

// benchReport is the result of a run; --json prints it as is.
type benchReport struct {
	Mode        string             `json:"mode"`
	Socket      string             `json:"socket"`
	Workers     int                `json:"workers"`
	UIDs        string             `json:"uids,omitempty"`
	DurationS   float64            `json:"duration_s"`
	ElapsedS    float64            `json:"elapsed_s,omitempty"`
	Calls       int                `json:"calls,omitempty"`
	CallsPerSec float64            `json:"calls_per_s,omitempty"`
	Errors      int                `json:"errors"`
	ErrorCodes  map[string]int     `json:"error_codes,omitempty"`
	FirstError  string             `json:"first_error,omitempty"`
	LatencyMS   *latencyStats      `json:"latency_ms,omitempty"`
	Streams     *streamReport      `json:"streams,omitempty"`
	Propagation *propagationReport `json:"propagation,omitempty"`
	Server      *serverReport      `json:"server,omitempty"`
	Host        *hostReport        `json:"host,omitempty"`
	Notes       []string           `json:"notes,omitempty"`
}

// serverReport is the daemon's resource use over the measured window.
type serverReport struct {
	PID          int     `json:"pid"`
	CPUMS        float64 `json:"cpu_ms"`
	CPUMSKernel  float64 `json:"cpu_ms_kernel"` // part of CPUMS spent in the kernel
	CPUMSPerCall float64 `json:"cpu_ms_per_call,omitempty"`
	RSSKiBBefore uint64  `json:"rss_kib_before"`
	RSSKiBAfter  uint64  `json:"rss_kib_after"`
	// The anonymous part of RSS: without the mmapped database, whose
	// pages count in RSS as bbolt touches them.
	RSSAnonKiBBefore uint64 `json:"rss_anon_kib_before"`
	RSSAnonKiBAfter  uint64 `json:"rss_anon_kib_after"`
}

// hostReport is the machine's CPU use over the measured window (for
// stream, the opening), in cores busy on average.
type hostReport struct {
	CPUs        int     `json:"cpus"`
	BusyCores   float64 `json:"busy_cores"`
	DaemonCores float64 `json:"daemon_cores"`
	BenchCores  float64 `json:"bench_cores"`
	OtherCores  float64 `json:"other_cores"`
}

// streamReport is the result of --mode stream.
type streamReport struct {
	Requested           int           `json:"requested"`
	Open                int           `json:"open"`
	OpenAllS            float64       `json:"open_all_s"`
	OpenLatencyMS       *latencyStats `json:"open_latency_ms,omitempty"`
	HoldS               float64       `json:"hold_s"`
	RSSKiBIdle          uint64        `json:"rss_kib_idle,omitempty"`
	RSSKiBOpen          uint64        `json:"rss_kib_open,omitempty"`
	RSSKiBHeld          uint64        `json:"rss_kib_held,omitempty"`
	RSSKiBClosed        uint64        `json:"rss_kib_closed,omitempty"`
	RSSKiBPerStream     float64       `json:"rss_kib_per_stream,omitempty"`
	RSSAnonKiBIdle      uint64        `json:"rss_anon_kib_idle,omitempty"`
	RSSAnonKiBHeld      uint64        `json:"rss_anon_kib_held,omitempty"`
	RSSAnonKiBPerStream float64       `json:"rss_anon_kib_per_stream,omitempty"`
	CPUMSOpen           float64       `json:"cpu_ms_open,omitempty"`
	CPUMSPerOpen        float64       `json:"cpu_ms_per_open,omitempty"`
	CPUMSHold           float64       `json:"cpu_ms_hold"`
}

// propagationReport is the result of --mode propagation, times in ms.
type propagationReport struct {
	Streams            int           `json:"streams"`
	Repetitions        int           `json:"repetitions"`
	FromCreateStartMS  *latencyStats `json:"from_create_start_ms,omitempty"`
	FromCreateReturnMS *latencyStats `json:"from_create_return_ms,omitempty"`
	CreateCallMS       *latencyStats `json:"create_call_ms,omitempty"`
	DeleteMS           *latencyStats `json:"delete_ms,omitempty"`
	Missed             int           `json:"missed"`
	MissedDelete       int           `json:"missed_delete"`
}

func (l *latencyStats) String() string {
	if l == nil {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  max %.3f ms  (n=%d)", l.P50, l.P90, l.P99, l.Max, l.N)
}

func mib(kib uint64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func (r *benchReport) print(w io.Writer) {
	who := "uid " + strconv.Itoa(os.Getuid())
	if r.UIDs != "" {
		who = "uids " + r.UIDs
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	switch r.Mode {
	case benchFetch, benchJWT:
		what := "FetchX509SVID on a fresh connection per call"
		if r.Mode == benchJWT {
			what = "FetchJWTSVID on one open connection per worker"
		}
		p("badge bench --mode %s: %d workers as %s, %s, %s", r.Mode, r.Workers, who, what, time.Duration(r.DurationS*float64(time.Second)))
		p("  calls:    %d in %.2f s = %.1f/s, errors: %d", r.Calls, r.ElapsedS, r.CallsPerSec, r.Errors)
		p("  latency:  %s", r.LatencyMS)
		if s := r.Server; s != nil {
			p("  daemon:   pid %d, CPU %.0f ms (%.0f%% in the kernel) = %.4f ms per call",
				s.PID, s.CPUMS, 100*s.CPUMSKernel/max(s.CPUMS, 1), s.CPUMSPerCall)
			p("  RSS:      %s → %s (anonymous %s → %s; the rest is mostly the mmapped database)",
				mib(s.RSSKiBBefore), mib(s.RSSKiBAfter), mib(s.RSSAnonKiBBefore), mib(s.RSSAnonKiBAfter))
		}
	case benchStream:
		s := r.Streams
		p("badge bench --mode stream: %d FetchX509SVID streams as %s, one connection each", s.Requested, who)
		p("  opened:   %d of %d in %.2f s; first SVID per stream: %s", s.Open, s.Requested, s.OpenAllS, s.OpenLatencyMS)
		if r.Server != nil {
			p("  daemon:   pid %d, CPU %.0f ms to open = %.4f ms per stream", r.Server.PID, s.CPUMSOpen, s.CPUMSPerOpen)
			p("  RSS:      idle %s, all open %s, after %.0f s held %s = %.1f KiB per stream; %s after close",
				mib(s.RSSKiBIdle), mib(s.RSSKiBOpen), s.HoldS, mib(s.RSSKiBHeld), s.RSSKiBPerStream, mib(s.RSSKiBClosed))
			p("            anonymous: idle %s, held %s = %.1f KiB per stream", mib(s.RSSAnonKiBIdle), mib(s.RSSAnonKiBHeld), s.RSSAnonKiBPerStream)
			p("  idle CPU: %.0f ms over %.0f s holding them (%.2f%% of one core)", s.CPUMSHold, s.HoldS, s.CPUMSHold/(s.HoldS*10))
		}
	case benchPropagation:
		s := r.Propagation
		p("badge bench --mode propagation: %d streams as %s, %d new entries one after another", s.Streams, who, s.Repetitions)
		p("  new entry reached the streams, from before the create call: %s", s.FromCreateStartMS)
		p("                                 from the create call's return: %s", s.FromCreateReturnMS)
		p("  create call:                                                  %s", s.CreateCallMS)
		p("  deleted entry left the streams, from before the delete call:  %s", s.DeleteMS)
		p("  missed (no update within the timeout): %d created, %d deleted, of %d", s.Missed, s.MissedDelete, s.Streams*s.Repetitions)
	}
	if h := r.Host; h != nil {
		p("  host:     %d CPUs, %.2f busy on average: daemon %.2f, bench %.2f, other processes %.2f",
			h.CPUs, h.BusyCores, h.DaemonCores, h.BenchCores, h.OtherCores)
	}
	if r.Errors > 0 {
		p("  errors:   %v; first: %s", r.ErrorCodes, r.FirstError)
	}
	for _, n := range r.Notes {
		p("  note: %s", n)
	}
}
