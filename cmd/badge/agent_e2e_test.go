package main

// End-to-end tests of `badge agent`: the real server and real agents as
// child processes on this machine, each agent with its own socket and data
// dir, and workloads as other uids through the Workload API.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.step.sm/crypto/minica"
	"go.step.sm/crypto/pemutil"

	"github.com/badge-dev/badge/agent"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/sdk"
)

// nodeSVIDOf reads the node SVID an agent keeps in its data dir.
func nodeSVIDOf(t *testing.T, dataDir string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, agent.IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		SVID [][]byte `json:"svid"`
	}
	if err := json.Unmarshal(data, &f); err != nil || len(f.SVID) == 0 {
		t.Fatalf("%s: %v", agent.IdentityFile, err)
	}
	c, err := x509.ParseCertificate(f.SVID[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fleet is a server with an agent listener, and what agents need to join.
type fleet struct {
	*daemon
	agentAddr string
	bundle    string // the trust bundle, PEM
}

// freeAddr returns a 127.0.0.1 address no one listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startFleet starts a server with an agent listener.
func startFleet(t *testing.T, args ...string) *fleet {
	t.Helper()
	addr := freeAddr(t)
	d := startDaemon(t, append([]string{"--agent-listen", addr}, args...)...)
	f := &fleet{daemon: d, agentAddr: addr, bundle: filepath.Join(d.dir, "bundle.pem")}
	if err := os.WriteFile(f.bundle, []byte(d.mustBadge("bundle", "show")), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// token makes a join token for node.
func (f *fleet) token(node string) string {
	f.t.Helper()
	return strings.TrimSpace(f.mustBadge("token", "create", "--node", node))
}

// agentArgs are the flags that join an agent to f.
func (f *fleet) agentArgs(args ...string) []string {
	return append([]string{"--server", f.agentAddr, "--trust-bundle", f.bundle, "--log-level", "debug"}, args...)
}

// startAgent starts `badge agent` joined to f, in its own directory, and
// waits until it has the node's state from the server.
func (f *fleet) startAgent(t *testing.T, args ...string) *daemon {
	t.Helper()
	dir := worldReadableTempDir(t)
	a := &daemon{t: t, dir: dir, dataDir: filepath.Join(dir, "data"), socket: filepath.Join(dir, "sock", "workload.sock"),
		admin: f.admin, agent: true, args: f.agentArgs(args...)}
	a.start()
	t.Cleanup(a.stop)
	a.waitLog(t, "connected to server")
	return a
}

// runAgentToEnd runs `badge agent` that is expected to exit, and returns
// its stderr and exit code.
func (f *fleet) runAgentToEnd(t *testing.T, dataDir string, args ...string) (string, int) {
	t.Helper()
	dir := worldReadableTempDir(t)
	if dataDir == "" {
		dataDir = filepath.Join(dir, "data")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testBinary, append([]string{"agent", "--data-dir", dataDir, "--socket",
		filepath.Join(dir, "sock", "workload.sock")}, f.agentArgs(args...)...)...)
	cmd.Env = append(os.Environ(), "BADGE_E2E_ROLE=badge", noRaceExitPause)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("badge agent still running after 20s:\n%s", errOut.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return errOut.String(), code
}

// lastLine is the last line of a process's stderr: the one-line cause.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// waitLogCount waits until the log has n lines containing every one of want.
func (d *daemon) waitLogCount(t *testing.T, n int, want ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		got := 0
	lines:
		for _, l := range strings.Split(d.logs(), "\n") {
			for _, w := range want {
				if !strings.Contains(l, w) {
					continue lines
				}
			}
			got++
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d log lines with %q after 15s:\n%s", n, want, d.logs())
		}
		<-tick.C
	}
}

// nextRaw waits for the next stream update for which ok holds, skipping
// others, and fails on an error update.
func nextRaw(t *testing.T, w *lineWorkload[rawUpdate], what string, ok func(rawUpdate) bool) rawUpdate {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		u := w.next(t, time.Until(deadline))
		if u.Error != "" {
			t.Fatalf("stream ended waiting for %s: %s %s", what, u.Code, u.Error)
		}
		if ok(u) {
			return u
		}
	}
}

// TestE2EAgentFleet: one server and two agents. Each agent serves the
// entries scoped to its node and no other; a new entry reaches a stream
// behind an agent, and so does a revocation; while the server is down a
// stream keeps its SVID and new callers are told why they get none, and
// once it is back the stream is renewed; an evicted node's agent stops.
func TestE2EAgentFleet(t *testing.T) {
	f := startFleet(t, "--svid-ttl", "20s")
	a := f.startAgent(t, "--join-token", f.token("node-a"))
	b := f.startAgent(t, "--join-token", f.token("node-b"))
	f.mustBadge("entry", "create", "--id", "spiffe://example.org/a", "--selector", "unix:uid:1001", "--node", "node-a")
	f.mustBadge("entry", "create", "--id", "spiffe://example.org/b", "--selector", "unix:uid:1001", "--node", "node-b")
	f.mustBadge("entry", "create", "--id", "spiffe://example.org/all", "--selector", "unix:uid:1002", "--node", "*")

	for _, tc := range []struct {
		d    *daemon
		uid  uint32
		want string
	}{{a, 1001, "spiffe://example.org/a"}, {b, 1001, "spiffe://example.org/b"}, {a, 1002, "spiffe://example.org/all"}, {b, 1002, "spiffe://example.org/all"}} {
		r := tc.d.runWorkload(tc.uid, tc.uid, "fetch")
		if r.Error != "" || len(r.SVIDs) != 1 || r.SVIDs[0].ID != tc.want {
			t.Errorf("uid %d behind %s: %+v, want %s alone", tc.uid, tc.d.dir, r, tc.want)
		}
	}
	if r := f.runWorkload(1001, 1001, "fetch"); r.Code != "PermissionDenied" {
		t.Errorf("the server's own socket served an entry scoped to nodes: %+v", r)
	}
	// A workload behind an agent that matches no entry is told to
	// register one for the agent's node.
	if r := a.runWorkload(1003, 1003, "fetch"); r.Code != "PermissionDenied" ||
		!strings.Contains(r.Error, "badge entry create --id SPIFFE_ID --selector unix:uid:1003 --node node-a") {
		t.Errorf("unregistered workload behind an agent: %+v, want the hint to name --node node-a", r)
	}

	// badge healthcheck with only the agent's socket.
	healthcheck := func(want int) {
		t.Helper()
		var out, errOut bytes.Buffer
		hc := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
		if _, err := os.Lstat("/run/badge/admin.sock"); err == nil {
			t.Log("a badge server runs on this host: healthcheck --socket alone not checked")
		} else if code := hc.dispatch(context.Background(), []string{"healthcheck", "--socket", a.socket}); code != want {
			t.Errorf("healthcheck --socket of an agent: exit %d, want %d: %q %q", code, want, out.String(), errOut.String())
		}
	}
	healthcheck(0)

	// A new entry reaches a stream waiting behind an agent.
	w := a.startRawStream(1001, 1001)
	first := nextRaw(t, w, "the first SVID", func(u rawUpdate) bool { return len(u.IDs) == 1 })
	start := time.Now()
	f.mustBadge("entry", "create", "--id", "spiffe://example.org/a2", "--selector", "unix:uid:1001", "--node", "node-a")
	u := nextRaw(t, w, "the new entry", func(u rawUpdate) bool { return len(u.IDs) == 2 })
	took := u.At.Sub(start)
	t.Logf("entry created → update on a stream behind an agent: %v", took)
	if took > 2*time.Second || u.Serials[0] != first.Serials[0] {
		t.Errorf("new entry reached the stream in %v (want < 2s), serials %v after %v", took, u.Serials, first.Serials)
	}

	// A revocation reaches the stream's crl.
	start = time.Now()
	f.mustBadge("revoke", "--id", "spiffe://example.org/a")
	u = nextRaw(t, w, "the revocation", func(u rawUpdate) bool {
		crl, err := x509.ParseRevocationList(u.CRLs[0])
		return err == nil && slices.Contains(crlSerials(crl), first.Serials[0])
	})
	took = u.At.Sub(start)
	t.Logf("badge revoke → crl of a stream behind an agent: %v", took)
	if took > 2*time.Second || u.Serials[0] == first.Serials[0] {
		t.Errorf("revocation reached the stream in %v (want < 1s, bound 2s); SVID %s kept", took, u.Serials[0])
	}
	held := u.Serials[0]

	// The server stops: the stream keeps its SVID, a new caller is told.
	f.signal(syscall.SIGTERM)
	a.waitLog(t, "lost the channel to the server")
	if r := a.runWorkload(1001, 1001, "fetch"); r.Code != "Unavailable" || !strings.Contains(r.Error, "not connected to any badge server") {
		t.Errorf("fetch behind an agent whose server is down: %+v", r)
	}
	// An expected state: a warning that the agent has no server, not an
	// error per call.
	a.waitLog(t, "WARN", "the badge agent has no server yet")
	if logs := a.logs(); strings.Contains(logs, "checking the caller failed") || strings.Contains(logs, "signing X.509-SVID failed") {
		t.Errorf("the agent logs an error for a caller while it has no server:\n%s", logs)
	}
	select {
	case u := <-w.updates:
		t.Fatalf("the stream got %+v while the server was down", u)
	default:
	}
	healthcheck(exitFailure)
	// It is back: the agent reconnects and the stream gets a fresh SVID
	// (at half its life: 10s of --svid-ttl 20s).
	f.start()
	a.waitLogCount(t, 2, "connected to server")
	u = nextRaw(t, w, "a fresh SVID after the restart", func(u rawUpdate) bool { return u.Serials[0] != held })

	// An evicted node's agent loses its channel and stops.
	f.mustBadge("node", "evict", "node-b")
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("agent of an evicted node still runs:\n%s", b.logs())
	}
	if code := b.cmd.ProcessState.ExitCode(); code != exitFailure || !strings.Contains(lastLine(b.logs()), "a new join token is needed") {
		t.Errorf("agent of an evicted node: exit %d, last line %q", code, lastLine(b.logs()))
	}
	b.cmd = nil
	if r := b.runWorkload(1001, 1001, "fetch"); r.Error == "" {
		t.Errorf("a workload behind an evicted node's agent got %+v", r.SVIDs)
	}
	// Restarted, its unexpired node SVID is refused in the handshake: it
	// stops at once, asking for a new token; with one it comes back.
	errOut, code := f.runAgentToEnd(t, b.dataDir)
	if code != exitFailure || !strings.Contains(lastLine(errOut), "a new join token is needed") || !strings.Contains(lastLine(errOut), "refused") {
		t.Errorf("evicted agent restarted: exit %d, %q", code, lastLine(errOut))
	}
	b.args = f.agentArgs("--join-token", f.token("node-b"))
	b.start()
	b.waitLogCount(t, 2, "node attested")
	b.waitLogCount(t, 2, "connected to server")
	if r := b.runWorkload(1001, 1001, "fetch"); r.Error != "" || r.SVIDs[0].ID != "spiffe://example.org/b" {
		t.Errorf("fetch behind a node back with a new token: %+v", r)
	}
}

// TestE2EAgentTokens: a join token is used once. A reused or unknown token,
// and a restart with an expired node SVID and only the used token, are
// refused with a one-line error, and the token is never logged.
func TestE2EAgentTokens(t *testing.T) {
	f := startFleet(t)
	tok := f.token("web-1")
	a := f.startAgent(t, "--join-token", tok)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"reused token", []string{"--join-token", tok}, "node attestation refused"},
		{"unknown token", []string{"--join-token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, "node attestation refused"},
		{"no proof", nil, "no node identity and no proof"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errOut, code := f.runAgentToEnd(t, "", tc.args...)
			if code != exitFailure || !strings.HasPrefix(lastLine(errOut), "badge agent: ") || !strings.Contains(lastLine(errOut), tc.want) {
				t.Errorf("exit %d, last line %q; want 1 with %q", code, lastLine(errOut), tc.want)
			}
			if strings.Contains(errOut, tok) {
				t.Error("the join token is in the agent's output")
			}
		})
	}
	if strings.Contains(a.logs(), tok) || strings.Contains(f.logs(), tok) {
		t.Error("the join token is in a log")
	}
	// Restarted with its data dir, the agent reconnects without new proof.
	a.restart()
	a.waitLogCount(t, 2, "connected to server")
	if !strings.Contains(a.logs(), "node SVID loaded") {
		t.Error("the restarted agent did not use its node SVID")
	}
}

// TestE2EAgentX509PoP: an agent attests with the host's certificate, and
// when its node SVID expired while it was down, it comes back by itself.
// A certificate of another CA is refused.
func TestE2EAgentX509PoP(t *testing.T) {
	requireRoot(t)
	t.Parallel() // it waits a minute for a node SVID to expire
	dir := worldReadableTempDir(t)
	hostCA, err := minica.New(minica.WithName("host pki"))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "node-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hostCA.Root.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	hostCert := func(ca *minica.CA, name string) []string {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ca.Sign(&x509.Certificate{PublicKey: key.Public(), DNSNames: []string{name},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		certPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Intermediate.Raw})...)
		if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := pemutil.Serialize(key, pemutil.WithFilename(keyFile)); err != nil {
			t.Fatal(err)
		}
		return []string{"--node-cert", certFile, "--node-key", keyFile}
	}
	f := startFleet(t, "--node-ca", caFile, "--node-svid-ttl", "1m")
	a := f.startAgent(t, hostCert(hostCA, "db-1")...)
	f.mustBadge("entry", "create", "--id", "spiffe://example.org/db", "--selector", "unix:uid:1001", "--node", "db-1")
	if r := a.runWorkload(1001, 1001, "fetch"); r.Error != "" || r.SVIDs[0].ID != "spiffe://example.org/db" {
		t.Fatalf("fetch behind an x509pop agent: %+v", r)
	}
	a.signal(syscall.SIGTERM)
	// Down until its node SVID expired.
	leaf := nodeSVIDOf(t, a.dataDir)
	wait := time.Until(leaf.NotAfter) + time.Second
	t.Logf("waiting %v for the node SVID to expire", wait.Round(time.Second))
	time.Sleep(wait) // the expiry of a certificate has no event
	a.start()
	a.waitLog(t, "node attested", "method=x509pop")
	a.waitLog(t, "connected to server")
	if r := a.runWorkload(1001, 1001, "fetch"); r.Error != "" || r.SVIDs[0].ID != "spiffe://example.org/db" {
		t.Fatalf("fetch behind an x509pop agent after re-attesting: %+v", r)
	}

	other, err := minica.New(minica.WithName("other pki"))
	if err != nil {
		t.Fatal(err)
	}
	errOut, code := f.runAgentToEnd(t, "", hostCert(other, "db-2")...)
	if code != exitFailure || !strings.Contains(lastLine(errOut), "node attestation refused") {
		t.Errorf("agent with a host certificate of another CA: exit %d, %q", code, lastLine(errOut))
	}
}

// TestE2EAgentExpiredToken: a join token past its TTL is refused with a
// one-line error.
func TestE2EAgentExpiredToken(t *testing.T) {
	requireRoot(t)
	t.Parallel() // it waits a minute for the token to expire
	f := startFleet(t)
	var tok admin.JoinToken
	if err := json.Unmarshal([]byte(f.mustBadge("token", "create", "--node", "late-1", "--ttl", "1m", "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	wait := time.Until(tok.ExpiresAt) + time.Second
	t.Logf("waiting %v for the token to expire", wait.Round(time.Second))
	time.Sleep(wait) // the expiry of a token has no event
	errOut, code := f.runAgentToEnd(t, "", "--join-token", tok.Token)
	if code != exitFailure || !strings.Contains(lastLine(errOut), "node attestation refused") || strings.Contains(errOut, tok.Token) {
		t.Errorf("agent with an expired token: exit %d, %q", code, lastLine(errOut))
	}
}

// TestE2EAgentSDKServerRestart: an SDK server and client behind an agent
// keep making mutual-TLS connections while the badge server is down (the
// agent keeps what they hold), and once it is back the agent reconnects
// and rotation resumes: not one handshake fails.
func TestE2EAgentSDKServerRestart(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	const ttl = 20 * time.Second
	f := startFleet(t, "--svid-ttl", ttl.String())
	a := f.startAgent(t, "--join-token", f.token("node-a"))
	f.mustBadge("entry", "create", "--id", sdkOrdersID, "--selector", "unix:uid:1001", "--node", "node-a")
	f.mustBadge("entry", "create", "--id", sdkPaymentsID, "--selector", "unix:uid:1002", "--node", "node-a")
	server, l := startSDKServer(t, a, "payments", 1002, envSDKProto+"=http", envSDKAuthz+"="+sdkOrdersID)
	client := startSDK(t, a, "orders", 1001, "sdk-client", envSDKProto+"=http", envSDKAuthz+"="+sdkPaymentsID,
		envSDKAddr+"="+l.Addr, envSDKCount+"=0", envSDKInterval+"=10ms")
	client.next(time.Now().Add(30*time.Second), 0, "response")

	deadline := time.Now().Add(30 * time.Second)
	f.signal(syscall.SIGTERM)
	a.waitLog(t, "lost the channel to the server")
	lost := time.Now()
	client.waitResponsesAfter(deadline, lost, 50, "while the server is down")
	serverSerials := distinctValues(server.snapshot(), "request", serialOfEvent)
	clientSerials := distinctValues(client.snapshot(), "response", serialOfEvent)
	nServer, nClient := len(server.snapshot()), len(client.snapshot())
	f.start()
	a.waitLogCount(t, 2, "connected to server")

	// Rotation resumes: each side sees a serial of the other issued after
	// the restart.
	deadline = time.Now().Add(ttl + 10*time.Second)
	server.waitFor(deadline, "a client serial issued after the restart", func(evs []sdkEvent) bool {
		return len(newSerials(evs[nServer:], "request", serverSerials)) >= 1
	})
	client.waitFor(deadline, "a server serial issued after the restart", func(evs []sdkEvent) bool {
		return len(newSerials(evs[nClient:], "response", clientSerials)) >= 1
	})
	cs, ss := client.stop(), server.stop()
	if cs.Failures != 0 || cs.Refused != 0 || ss.Refused != 0 || cs.Handshakes != cs.Requests {
		t.Errorf("%d of %d requests failed, %d handshakes (client refused %d, server %d):\n%s",
			cs.Failures, cs.Requests, cs.Handshakes, cs.Refused, ss.Refused, describeEvents(eventsOf(client.snapshot(), "error")))
	}
	t.Logf("%d requests behind an agent across a server restart, each on a new connection; %d failed", cs.Requests, cs.Failures)
}

// TestE2EAgentSDKRefusesRevoked: an SDK server behind one agent refuses a
// client behind another agent that still presents its certificate after
// `badge revoke --id`, within a second of the command returning: a client
// whose ID is also blocked (its source keeps the last SVID it got), and
// one that holds a copy of its certificate while its ID is reissued, also
// right after the intermediate rotated. The server learns of the
// revocation only from the CRL its agent streams. A client that is not
// revoked, and a fresh one of the reissued ID, still get through.
func TestE2EAgentSDKRefusesRevoked(t *testing.T) {
	requireRoot(t)
	f := startFleet(t)
	a := f.startAgent(t, "--join-token", f.token("node-a"))
	b := f.startAgent(t, "--join-token", f.token("node-b"))
	f.mustBadge("entry", "create", "--id", sdkOrdersID, "--selector", "unix:uid:1001", "--node", "node-a")
	f.mustBadge("entry", "create", "--id", sdkPaymentsID, "--selector", "unix:uid:1002", "--node", "node-b")
	f.mustBadge("entry", "create", "--id", sdkInventoryID, "--selector", "unix:uid:1003", "--node", "node-b")
	server, l := startSDKServer(t, a, "orders", 1001, envSDKProto+"=http", envSDKAuthz+"="+sdkPaymentsID+","+sdkInventoryID)
	if l.ID != sdkOrdersID {
		t.Fatalf("the server behind agent A runs as %s, want %s", l.ID, sdkOrdersID)
	}
	clientEnv := func(env ...string) []string {
		return append([]string{envSDKProto + "=http", envSDKAuthz + "=" + sdkOrdersID, envSDKAddr + "=" + l.Addr}, env...)
	}
	// fresh makes one call as payments from a new process behind agent B,
	// which must get through with a certificate other than revoked.
	fresh := func(revoked string) {
		t.Helper()
		n := len(server.snapshot())
		resp := onlyEvent(t, runSDK(t, b, "payments", 1002, "sdk-client", clientEnv(envSDKCount+"=1")...), "response")
		req := server.next(time.Now().Add(10*time.Second), n, "request")
		if req.Peer != sdkPaymentsID || req.Serial != resp.Own || resp.Own == revoked {
			t.Errorf("a client that is not revoked: server saw %s serial %s, client presented %s (revoked: %s)", req.Peer, req.Serial, resp.Own, revoked)
		}
	}

	for _, tc := range []struct {
		name   string
		uid    uint32
		id     string
		block  bool // revoke with --block; else the client holds its first SVID
		rotate bool // rotate the intermediate before revoking
	}{
		{"blocked ID", 1003, sdkInventoryID, true, false},
		{"held copy of a reissued ID", 1002, sdkPaymentsID, false, false},
		// The server's SVID predates the rotation; the CRLs that follow
		// are signed by the new intermediate.
		{"held copy, after an intermediate rotation", 1002, sdkPaymentsID, false, true},
	} {
		env := clientEnv(envSDKCount+"=0", envSDKInterval+"=20ms")
		if !tc.block {
			env = append(env, envSDKHold+"=1")
		}
		before := len(server.snapshot())
		client := startSDK(t, b, tc.name, tc.uid, "sdk-client", env...)
		deadline := time.Now().Add(20 * time.Second)
		held := client.next(deadline, 0, "response").Own
		n := len(server.snapshot())
		if refused := eventsOf(server.snapshot()[before:], "refused"); len(refused) > 0 {
			t.Fatalf("%s: the server refused clients before any revocation:\n%s", tc.name, describeEvents(refused))
		}

		if tc.rotate {
			f.mustBadge("keys", "rotate", "--kind", "intermediate")
		}
		args := []string{"revoke", "--id", tc.id}
		if tc.block {
			args = append(args, "--block")
		}
		f.mustBadge(args...)
		returned := time.Now()
		ref := server.next(returned.Add(10*time.Second), n, "refused")
		took := ref.At.Sub(returned)
		t.Logf("%s: badge revoke returned → SDK server behind another agent refused the revoked certificate: %v", tc.name, took.Round(time.Millisecond))
		if ref.Peer != tc.id || ref.Serial != held || ref.Reason != sdk.ReasonRevoked.String() {
			t.Errorf("%s: the server refused %s serial %s for %q (%s), want %s serial %s for %q",
				tc.name, ref.Peer, ref.Serial, ref.Reason, ref.Error, tc.id, held, sdk.ReasonRevoked)
		}
		if took > 2*time.Second {
			t.Errorf("%s: the SDK server refused the revoked certificate %v after badge revoke returned, want < 1s (bound 2s)", tc.name, took)
		}
		if !tc.block {
			// The client's own source was reissued a fresh SVID: only the
			// copy it holds is revoked.
			client.waitFor(deadline, "a fresh SVID in the client's source", func(evs []sdkEvent) bool {
				return slices.ContainsFunc(eventsOf(evs, "svid"), func(e sdkEvent) bool { return e.Own != held })
			})
		}
		// The client keeps trying: once refused, it is never let in again.
		server.waitFor(deadline, "five refusals", func(evs []sdkEvent) bool { return len(eventsOf(evs[n:], "refused")) >= 5 })
		cs := client.stop()
		evs := server.snapshot()
		after := evs[n+slices.IndexFunc(evs[n:], eventIs("refused")):]
		for _, e := range after {
			if e.Event == "request" && e.Peer == tc.id || e.Event == "refused" && e.Serial != held {
				t.Errorf("%s: after refusing serial %s the server saw: %+v", tc.name, held, e)
			}
		}
		if cs.Failures == 0 || cs.Refused != 0 {
			t.Errorf("%s: client summary %+v: want failed requests, and no server refused by the client", tc.name, cs)
		}
		fresh(held)
	}
}
