package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/jsonout"
)

func runBench(ctx context.Context, e *env, args []string) error {
	c, err := e.parseBench(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b := &bench{cfg: c, e: e}
	if c.mode == benchFleet {
		rep, err := b.runFleet(ctx)
		if err != nil {
			return err
		}
		if c.asJSON {
			return jsonout.Write(e.stdout, rep)
		}
		rep.print(e.stdout)
		return nil
	}
	var samples *os.File
	if c.samples != "" { // before the run, so that a bad path does not waste one
		if samples, err = os.Create(c.samples); err != nil {
			return fmt.Errorf("--samples: %w", err)
		}
		defer samples.Close()
	}
	rep, err := b.run(ctx)
	if err != nil {
		return err
	}
	if samples != nil {
		if err := writeSamples(samples, b.raw); err != nil {
			return fmt.Errorf("--samples: writing %s: %w", c.samples, err)
		}
		if err := samples.Close(); err != nil {
			return fmt.Errorf("--samples: writing %s: %w", c.samples, err)
		}
		rep.SamplesFile, rep.SamplesWritten = c.samples, len(b.raw)
	}
	if c.asJSON {
		return jsonout.Write(e.stdout, rep)
	}
	rep.print(e.stdout)
	return nil
}

// bench runs one benchmark.
type bench struct {
	cfg benchConfig
	e   *env
	// pids are the daemons: of each socket in order (0 if unknown), or
	// for fleet the server's.
	pids   []int
	groups []group  // all workers, one group per uid
	notes  []string // warnings printed with the summary
	admin  *admin.Client
	raw    []rawSample // every sample, for --samples
}

func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

func (b *bench) run(ctx context.Context) (*benchReport, error) {
	c := b.cfg
	for _, sock := range c.sockets {
		if fi, err := os.Stat(sock); err != nil {
			return nil, fmt.Errorf("no Workload API socket at %s: is the server running? (%v)", sock, err)
		} else if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s is not a socket", sock)
		}
	}
	if c.uids.set && os.Geteuid() != 0 {
		return nil, fmt.Errorf("--uids needs root: badge-bench runs one child per uid with that uid's credentials (this process runs as uid %d)", os.Geteuid())
	}
	if c.serverPIDs != nil {
		for _, pid := range c.serverPIDs {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid)); err != nil {
				return nil, fmt.Errorf("--server-pid %d: no such process", pid)
			}
		}
		b.pids = c.serverPIDs
	} else {
		for _, sock := range c.sockets {
			pid, err := listenerPID(ctx, sock)
			if err != nil {
				b.note("daemon CPU and RSS not reported: %v; pass --server-pid", err)
			} else if pid == 1 {
				b.note("pid 1 listens on %s: if that is systemd (socket activation) rather than the daemon, pass --server-pid", sock)
			}
			b.pids = append(b.pids, pid)
		}
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
		Mode: c.mode, Socket: strings.Join(c.sockets, ","), Workers: c.workers, DurationS: c.duration.Seconds(),
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

// nodes is the scope of the entries badge-bench creates: --node, or none
// (the server's own socket).
func (b *bench) nodes() []string {
	if b.cfg.node == "" {
		return nil
	}
	return []string{b.cfg.node}
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
	spec := benchSpec{Mode: c.mode, Sockets: c.sockets, Duration: c.duration, Timeout: c.timeout, Audience: c.audience, Raw: c.samples != "",
		WaitEntry: c.setup && c.node != ""}
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
		for i, pid := range b.pids {
			b.checkServerNoFile(pid, uint64(workersOf(c.workers, len(c.sockets), i)))
		}
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
	// The children share a file as is; anything else is written to by one
	// copying goroutine per child.
	stderr := b.e.stderr
	if _, ok := stderr.(*os.File); !ok {
		stderr = &lockedWriter{w: stderr}
	}
	for i, uid := range uids {
		s := spec
		s.Workers = share(i)
		g, err := startChild(ctx, exe, uid, s, stderr)
		if err != nil {
			b.closeGroups()
			return fmt.Errorf("starting the worker for uid %d: %w", uid, err)
		}
		b.groups = append(b.groups, g)
		spec.First += s.Workers
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
	if n := len(b.cfg.sockets); n > 1 {
		all.bySocket = make([]socketSamples, n)
		for i := range all.bySocket {
			all.bySocket[i].errors = map[string]int{}
		}
	}
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
	for i, r := range res {
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
		for j, k := range r.SampleSockets {
			all.bySocket[k].ns = append(all.bySocket[k].ns, r.Samples[j])
		}
		for k, m := range r.SocketErrors {
			for code, v := range m {
				all.bySocket[k].errors[code] += v
			}
		}
		for _, s := range r.Raw {
			b.raw = append(b.raw, rawSample{sample: s, uid: b.groups[i].UID()})
		}
	}
	return all, nil
}

// benchSamples is what all groups measured together.
type benchSamples struct {
	ns       []int64
	errors   map[string]int
	firstErr string
	firstIDs []string
	opened   []int           // per group: successful calls or open streams
	bySocket []socketSamples // with several sockets, each one's part
}

// socketSamples is what the workers of one socket measured.
type socketSamples struct {
	ns     []int64
	errors map[string]int
}

func (s benchSamples) errorCount() int { return countErrors(s.errors) }

func countErrors(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// workersOf returns how many of n workers take socket i of sockets, in
// turn.
func workersOf(n, sockets, i int) int {
	w := n / sockets
	if i < n%sockets {
		w++
	}
	return w
}

// fatalError explains a failure that ends the run.
func (b *bench) fatalError(uid uint32, r groupResult) error {
	api := "the Workload API"
	if len(b.cfg.sockets) > 1 && r.FatalSocket != "" {
		api += " at " + r.FatalSocket
	}
	switch r.FatalCode {
	case codes.PermissionDenied.String():
		return fmt.Errorf("%s refused uid %d (PermissionDenied: %s); if no entry matches that uid, register one "+
			"(badge: `badge entry create --id spiffe://<trust-domain>/bench/uid-%d --selector unix:uid:%d`, or rerun with --setup; "+
			"SPIRE: an entry with the selector unix:uid:%d)", api, uid, r.Fatal, uid, uid, uid)
	case codes.Unimplemented.String():
		if b.cfg.mode == benchJWT {
			return fmt.Errorf("the server does not implement FetchJWTSVID (Unimplemented: %s)", r.Fatal)
		}
	case codes.Unavailable.String():
		sock := r.FatalSocket
		if sock == "" {
			sock = strings.Join(b.cfg.sockets, " or ")
		}
		return fmt.Errorf("no Workload API answers on %s (uid %d): %s", sock, uid, r.Fatal)
	}
	return fmt.Errorf("uid %d: %s: %s", uid, r.FatalCode, r.Fatal)
}

// runCalls measures fetch or jwt: the workers call for --duration.
func (b *bench) runCalls(ctx context.Context, rep *benchReport) error {
	before, eachBefore, berr := b.usage()
	hostBefore := b.sampleHost()
	start := time.Now()
	s, err := b.runAll(ctx)
	elapsed := time.Since(start)
	after, eachAfter, aerr := b.usage()
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
	measured := len(b.daemons()) > 0 && berr == nil && aerr == nil
	if measured {
		rep.Server = b.serverReport(before, after, rep.Calls)
	} else if len(b.daemons()) > 0 {
		b.note("reading /proc: %v", errors.Join(berr, aerr))
	}
	for i, ss := range s.bySocket {
		sr := b.socketReport(i, ss)
		if pid := b.pids[i]; measured && pid != 0 {
			sr.Server = serverReportOf([]int{pid}, eachBefore[pid], eachAfter[pid], sr.Count)
		}
		rep.Sockets = append(rep.Sockets, sr)
	}
	return nil
}

// socketReport is socket i's part of the run, without its daemon.
func (b *bench) socketReport(i int, ss socketSamples) socketReport {
	return socketReport{
		Socket: b.cfg.sockets[i], Workers: workersOf(b.cfg.workers, len(b.cfg.sockets), i),
		Count: len(ss.ns), Errors: countErrors(ss.errors), ErrorCodes: ss.errors, LatencyMS: summarize(ss.ns),
	}
}

// serverReport is the daemons' use between before and after (summed),
// over calls calls.
func (b *bench) serverReport(before, after procUsage, calls int) *serverReport {
	return serverReportOf(b.daemons(), before, after, calls)
}

// serverReportOf is the use between before and after of the daemons
// pids, over calls calls: with one, its pid; with several, their sum.
func serverReportOf(pids []int, before, after procUsage, calls int) *serverReport {
	cpu := after.cpuMS() - before.cpuMS()
	r := &serverReport{
		CPUMS: cpu, CPUMSKernel: ticksMS(after.stime - before.stime),
		RSSKiBBefore: before.rssKiB, RSSKiBAfter: after.rssKiB,
		RSSAnonKiBBefore: before.anonKiB, RSSAnonKiBAfter: after.anonKiB,
	}
	if len(pids) == 1 {
		r.PID = pids[0]
	} else {
		r.PIDs = pids
	}
	if calls > 0 {
		r.CPUMSPerCall = roundTo(cpu/float64(calls), 4)
	}
	return r
}

// runStreams opens the streams, holds them idle for --duration, closes them.
func (b *bench) runStreams(ctx context.Context, rep *benchReport) error {
	idle, _, ierr := b.usage()
	hostBefore := b.sampleHost()
	start := time.Now()
	s, err := b.runAll(ctx)
	openTime := time.Since(start)
	if err != nil {
		return err
	}
	opened, _, _ := b.usage()
	rep.Host = b.hostReport(hostBefore, b.sampleHost(), idle, opened, openTime)
	sr := &streamReport{
		Requested: b.cfg.workers, Open: len(s.ns), OpenAllS: openTime.Seconds(),
		OpenLatencyMS: summarize(s.ns), HoldS: b.cfg.duration.Seconds(),
	}
	rep.Streams = sr
	rep.Errors, rep.ErrorCodes, rep.FirstError = s.errorCount(), s.errors, s.firstErr
	for i, ss := range s.bySocket {
		rep.Sockets = append(rep.Sockets, b.socketReport(i, ss))
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.cfg.duration):
	}
	held, _, herr := b.usage()
	b.closeGroups()
	time.Sleep(time.Second) // let the daemon notice the closed connections
	closed, _, cerr := b.usage()
	if len(b.daemons()) == 0 {
		return nil
	}
	if err := errors.Join(ierr, herr, cerr); err != nil {
		b.note("reading /proc: %v", err)
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
	rep.Server = b.serverReport(idle, held, 0)
	return nil
}

// runPropagation opens the streams, then --count times creates an entry
// that matches them and times its arrival on every stream, and deletes it.
func (b *bench) runPropagation(ctx context.Context, rep *benchReport) error {
	s, err := b.runAll(ctx)
	if err != nil {
		return err
	}
	b.raw = nil // the samples of this mode are the propagations, not the openings
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
	for i, ss := range s.bySocket {
		rep.Sockets = append(rep.Sockets, b.socketReport(i, ss))
	}
	var fromStart, fromReturn, createCall, deleted []int64
	created := map[string]string{} // entry id → SPIFFE ID, deleted on the way out
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for id := range created {
			if err := b.admin.DeleteEntry(dctx, id); err != nil {
				b.note("could not delete entry %s (%s) that badge-bench created: %v", id, created[id], err)
			}
		}
	}()
	// record adds the arrivals (or departures) on group i's streams of
	// what was asked at monotonic time t0, wall time wall, to the samples.
	record := func(i int, arrivals []int64, t0, wall int64, what string) {
		for _, t := range arrivals {
			b.raw = append(b.raw, rawSample{sample: sample{Start: wall, NS: t - t0, Code: what}, uid: b.groups[i].UID()})
		}
	}
	for k := 1; k <= b.cfg.count; k++ {
		type made struct{ entryID, spiffeID string }
		ents := make([]made, len(b.groups))
		t0 := make([]int64, len(b.groups))
		t1 := make([]int64, len(b.groups))
		wall := make([]int64, len(b.groups))
		for i, g := range b.groups {
			id := fmt.Sprintf("spiffe://%s/bench/prop-%d-%d", td.Name(), os.Getpid(), k)
			if len(b.groups) > 1 {
				id += fmt.Sprintf("-uid%d", g.UID())
			}
			wall[i], t0[i] = time.Now().UnixNano(), monoNow()
			ent, err := b.admin.CreateEntry(ctx, admin.EntryRequest{SPIFFEID: id, Selectors: []string{fmt.Sprintf("unix:uid:%d", g.UID())}, Nodes: b.nodes()})
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
			record(i, a, t0[i], wall[i], sampleCreate)
			pr.Missed += s.opened[i] - len(a)
		}
		td0 := make([]int64, len(b.groups))
		for i := range b.groups {
			wall[i], td0[i] = time.Now().UnixNano(), monoNow()
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
			record(i, a, td0[i], wall[i], sampleDelete)
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

// trustDomainOf picks the trust domain of entries badge-bench creates: the
// flag, else that of the SPIFFE IDs the workloads hold, else that of an
// existing entry, else example.org.
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
				fmt.Fprintf(b.e.stderr, "badge-bench: could not delete entry %s that --setup created: %v\n", id, err)
			}
		}
	}
	es, err := b.admin.ListEntries(ctx)
	if err != nil {
		return cleanup, fmt.Errorf("--setup: %w", err)
	}
	have := map[string]bool{}
	for _, en := range es {
		if len(en.Selectors) == 1 && slices.Equal(en.Nodes, b.nodes()) {
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
			SPIFFEID: fmt.Sprintf("spiffe://%s/bench/uid-%d", td.Name(), uid), Selectors: []string{sel}, Nodes: b.nodes(),
		})
		if err != nil {
			return cleanup, fmt.Errorf("--setup: creating an entry for uid %d: %w", uid, err)
		}
		created = append(created, ent.ID)
	}
	return cleanup, nil
}

// checkServerNoFile notes when the open-file limit of the daemon pid is
// too low for the streams it is to hold: a socket per connection (and a
// pidfd as well on kernels without SO_PEERPIDFD, counted here to be safe).
func (b *bench) checkServerNoFile(pid int, streams uint64) {
	if pid == 0 {
		return
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return
	}
	soft, err := parseProcMaxOpenFiles(string(data))
	if err != nil || soft >= streams+64 {
		return
	}
	b.note("the daemon (pid %d) may open %d files, and %d streams need at least %d (a socket each, and a pidfd each on kernels before 6.5): "+
		"start it under a higher `ulimit -n` (LimitNOFILE= in systemd)", pid, soft, streams, streams+64)
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
