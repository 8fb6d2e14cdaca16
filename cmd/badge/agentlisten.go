package main

// The agent listener of `badge server` (--agent-listen): where `badge
// agent` on other hosts attests and gets its workloads' SVIDs signed
// (package ca/nodeapi).

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/nodeapi"
	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/internal/logkey"
)

// agentFlags are the server's flags of the agent listener.
type agentFlags struct {
	listen        string
	nodeCA        string
	nodeSVIDTTL   time.Duration
	maxPerAddr    int
	nodeStreams   int
	nodeCalls     int
	nodeSignRate  float64
	nodeSignBurst int

	// nodeCAs are the certificates of nodeCA, read by check.
	nodeCAs []*x509.Certificate
}

func (a *agentFlags) register(fs *flag.FlagSet) {
	*a = agentFlags{
		nodeSVIDTTL: ca.DefaultNodeSVIDTTL, maxPerAddr: nodeapi.DefaultMaxConnsPerAddr, nodeStreams: nodeapi.DefaultStreamsPerNode,
		nodeCalls: nodeapi.DefaultCallsPerNode, nodeSignRate: nodeapi.DefaultSignRate, nodeSignBurst: nodeapi.DefaultSignBurst,
	}
	fs.StringVar(&a.listen, "agent-listen", "", "`address` (HOST:PORT) where badge agents attest and fetch their SVIDs: gRPC over mutual TLS 1.3 (off unless set)")
	fs.StringVar(&a.nodeCA, "node-ca", "", "PEM `file` of the CAs whose host certificates attest nodes (x509pop); owned by root or the server's uid (default: join tokens only)")
	fs.Var(durationFlag{&a.nodeSVIDTTL}, "node-svid-ttl", fmt.Sprintf("lifetime of a node SVID (%s to %s); agents renew at half of it", ca.MinNodeSVIDTTL, ca.MaxNodeSVIDTTL))
	fs.IntVar(&a.maxPerAddr, "agent-max-conns-per-addr", a.maxPerAddr, "connections one client IP address may hold to --agent-listen (0: no limit)")
	fs.IntVar(&a.nodeStreams, "node-max-streams", a.nodeStreams, "Sync streams one node may hold open (0: no limit)")
	fs.IntVar(&a.nodeCalls, "node-max-calls", a.nodeCalls, "calls of one node in progress at once (0: no limit)")
	fs.Float64Var(&a.nodeSignRate, "node-sign-rate", a.nodeSignRate, "SVIDs and tokens signed per second for one node, on average (0: no limit)")
	fs.IntVar(&a.nodeSignBurst, "node-sign-burst", a.nodeSignBurst, "SVIDs and tokens signed at once for one node before --node-sign-rate applies")
}

// check returns a problem for every agent listener setting the server
// would refuse, and reads the node CA file.
func (a *agentFlags) check() []problem {
	var probs []problem
	add := func(key string, value any, format string, args ...any) {
		probs = append(probs, problem{key: key, value: fmt.Sprint(value), msg: fmt.Sprintf(format, args...)})
	}
	if a.listen != "" {
		if _, _, err := net.SplitHostPort(a.listen); err != nil {
			add("agent-listen", a.listen, "want HOST:PORT or :PORT (%v)", err)
		}
	}
	if a.nodeSVIDTTL < ca.MinNodeSVIDTTL || a.nodeSVIDTTL > ca.MaxNodeSVIDTTL {
		add("node-svid-ttl", a.nodeSVIDTTL, "want between %s and %s", ca.MinNodeSVIDTTL, ca.MaxNodeSVIDTTL)
	}
	if a.maxPerAddr < 0 {
		add("agent-max-conns-per-addr", a.maxPerAddr, "want 0 (no limit) or more")
	}
	if a.nodeStreams < 0 {
		add("node-max-streams", a.nodeStreams, "want 0 (no limit) or more")
	}
	if a.nodeCalls < 0 {
		add("node-max-calls", a.nodeCalls, "want 0 (no limit) or more")
	}
	if a.nodeSignRate < 0 {
		add("node-sign-rate", a.nodeSignRate, "want 0 (no limit) or more")
	}
	if a.nodeSignBurst < 1 {
		add("node-sign-burst", a.nodeSignBurst, "want 1 or more")
	}
	a.nodeCAs = nil
	if a.nodeCA != "" {
		if a.listen == "" {
			add("node-ca", a.nodeCA, "has no use without agent-listen")
		}
		cas, err := readNodeCAs(a.nodeCA)
		if err != nil {
			add("node-ca", a.nodeCA, "%v", err)
		}
		a.nodeCAs = cas
	}
	return probs
}

// readNodeCAs reads a --node-ca file, which must be one that only root or
// the server's uid can change: whoever can write it can attest as any node.
func readNodeCAs(path string) ([]*x509.Certificate, error) {
	if err := localtrust.CheckPath(path, uint32(os.Geteuid()), localtrust.RootOrUID); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return nodeapi.ParseNodeCAs(data)
}

// limits are the agent listener's limits, with maxConns connections in
// all.
func (a *agentFlags) limits(maxConns int, handshake time.Duration) nodeapi.Limits {
	neg := func(v int) int {
		if v == 0 {
			return -1
		}
		return v
	}
	lim := nodeapi.Limits{
		MaxConns: maxConns, MaxConnsPerAddr: neg(a.maxPerAddr), StreamsPerNode: neg(a.nodeStreams), CallsPerNode: neg(a.nodeCalls),
		SignRate: a.nodeSignRate, SignBurst: a.nodeSignBurst, HandshakeTimeout: handshake,
	}
	if lim.SignRate == 0 {
		lim.SignRate = -1
	}
	return lim
}

// startAgents starts the agent listener (package ca/nodeapi) on
// --agent-listen. Its certificate is the server's SVID with the hosts of
// the public listener's (agents check its SPIFFE ID, not a host name).
func startAgents(ctx context.Context, c serverConfig, auth *ca.Authority, o *ops, log *slog.Logger, errc chan<- error, maxConns int) (*nodeapi.Server, error) {
	var hosts []string
	if h, _, err := net.SplitHostPort(c.agents.listen); err == nil && h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			hosts = append(hosts, h)
		}
	}
	srv, err := nodeapi.New(ctx, nodeapi.Config{Authority: auth, NodeCAs: c.agents.nodeCAs, NodeSVIDTTL: c.agents.nodeSVIDTTL,
		Hosts: hosts, Limits: c.agents.limits(maxConns, c.limits.handshake), Metrics: o.metrics, Logger: log})
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", c.agents.listen)
	if err != nil {
		return nil, fmt.Errorf("--agent-listen %s: %w", c.agents.listen, err)
	}
	go func() {
		if err := srv.Serve(l); err != nil {
			errc <- fmt.Errorf("agent listener: %w", err)
		}
	}()
	o.metrics.SetAgentListener(l.Addr().String(), srv.ConnectedNodes)
	o.agents.Store(srv)
	log.Info("agent listener ready", slog.String("address", l.Addr().String()), slog.Int("node_cas", len(c.agents.nodeCAs)),
		slog.Duration("node_svid_ttl", c.agents.nodeSVIDTTL))
	return srv, nil
}

// reloadNodeCAs returns the serverConfig.onReload of the agent listener:
// the node CA file is read again on every SIGHUP (its path may be the same
// and its content new), and a changed set of CAs applies to attestations
// from then on.
func reloadNodeCAs(srv *nodeapi.Server, running []*x509.Certificate, log *slog.Logger) func(*serverSettings) {
	return func(next *serverSettings) {
		cas := next.c.agents.nodeCAs
		if slices.EqualFunc(cas, running, (*x509.Certificate).Equal) {
			return
		}
		srv.SetNodeCAs(cas)
		running = cas
		log.Info("node CAs reloaded", slog.String("node_ca", next.c.agents.nodeCA), slog.Int("node_cas", len(cas)), slog.Bool(logkey.Audit, true))
	}
}
