package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage/etcd/etcdtest"
)

// introspect asks d's /introspect about token, authenticated by the
// X.509-SVID of uid, and returns whether it says active.
func (d *daemon) introspect(cert *tls.Certificate, token string) bool {
	d.t.Helper()
	resp, err := d.httpsClient(cert).PostForm(d.publicURL()+"/introspect", url.Values{"token": {token}})
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		d.t.Fatalf("introspect on %s: %s %v", d.dataDir, resp.Status, err)
	}
	return out["active"] == true
}

// svidCert returns uid's X.509-SVID from d as a TLS certificate.
func (d *daemon) svidCert(uid uint32) (*tls.Certificate, []byte) {
	d.t.Helper()
	x := d.runWorkload(uid, uid, "fetch")
	if x.Error != "" {
		d.t.Fatalf("fetch uid %d: %s: %s", uid, x.Code, x.Error)
	}
	key, err := x509.ParsePKCS8PrivateKey(x.SVIDs[0].Key)
	if err != nil {
		d.t.Fatal(err)
	}
	return &tls.Certificate{Certificate: x.SVIDs[0].Chain, PrivateKey: key}, x.SVIDs[0].Chain[1]
}

// pollUntil polls cond every 20 ms until it holds or timeout passes (there
// is no event to wait on across processes), and returns how long it took.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestE2EEtcdReplicasShareTrust: three real servers on one etcd, each
// with its own data dir, replica id and intermediate, sharing the root
// sealed in etcd under one --root-kek file, all behind their public
// listeners as behind a load balancer. A JWT-SVID from A validates with
// B's JWT bundle and is introspected active by C; a revocation made on
// B makes C's /introspect say inactive within 1 s; a forced intermediate
// rotation on A leaves B signing with its own intermediate; B restarts
// after A rotated and issues again.
func TestE2EEtcdReplicasShareTrust(t *testing.T) {
	requireRoot(t)
	srv := etcdtest.Start(t, nil)
	args := []string{"--storage", "etcd://" + srv.Endpoint, "--root-kek", writeKEK(t, t.TempDir()),
		"--listen", "127.0.0.1:0", "--listen-dns", "127.0.0.1", "--jwt-issuer", testIssuer}
	a := etcdReplica(t, args...)
	b := etcdReplica(t, args...)
	c := etcdReplica(t, args...)
	a.createEntry("spiffe://example.org/payments", "unix:uid:1001")
	a.createEntry("spiffe://example.org/orders", "unix:uid:1002")
	for _, d := range []*daemon{b, c} {
		pollUntil(t, 5*time.Second, "entries on every replica", func() bool {
			return strings.Contains(d.mustBadge("entry", "list"), "spiffe://example.org/orders")
		})
	}
	bundle := a.mustBadge("bundle", "show")
	for _, d := range []*daemon{b, c} {
		if got := d.mustBadge("bundle", "show"); got != bundle {
			t.Fatalf("bundles differ between replicas:\nA %s\nother %s", bundle, got)
		}
	}
	_, interA := a.svidCert(1002)
	_, interB := b.svidCert(1002)
	if bytes.Equal(interA, interB) {
		t.Fatal("A and B sign with the same intermediate; want one each")
	}

	// A JWT-SVID from A: B's FetchJWTBundles validates it (the SDK,
	// locally), B's JWKS carries its key, C introspects it active.
	tok := a.fetchJWT(1001, "spiffe://example.org/orders").Token
	r := b.runJWT(1002, "jwt-sdk", jwtRequest{Validate: []jwtCheck{{Token: tok, Audience: "spiffe://example.org/orders"}}})
	if r.Error != "" || len(r.Checks) != 1 || r.Checks[0].ID != "spiffe://example.org/payments" {
		t.Fatalf("the SDK on B validating A's token: %+v", r)
	}
	resp, err := b.httpsClient(nil).Get(b.publicURL() + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct{ Keys []struct{ Kid string } }
	json.NewDecoder(resp.Body).Decode(&jwks)
	resp.Body.Close()
	if len(jwks.Keys) < 3 {
		t.Errorf("B's JWKS has %d keys, want every replica's (3)", len(jwks.Keys))
	}
	certC, _ := c.svidCert(1002)
	if !c.introspect(certC, tok) {
		t.Fatal("C's /introspect says A's token is inactive")
	}

	// A revocation on B reaches C's /introspect within a second.
	b.mustBadge("revoke", "--id", "spiffe://example.org/payments", "--reason", "test")
	took := pollUntil(t, 3*time.Second, "C's /introspect after the revocation on B", func() bool { return !c.introspect(certC, tok) })
	t.Logf("revocation on B honoured by C's /introspect after %s", took)
	if took > time.Second {
		t.Errorf("revocation on B reached C's /introspect after %s, want within 1s", took)
	}

	// A rotates its intermediate: B keeps its own and issues.
	a.mustBadge("keys", "rotate", "--kind", "intermediate")
	if _, inter := a.svidCert(1002); bytes.Equal(inter, interA) {
		t.Error("A's intermediate did not change")
	}
	if _, inter := b.svidCert(1002); !bytes.Equal(inter, interB) {
		t.Error("B's intermediate changed when A rotated its own")
	}
	// B restarts after A rotated: same intermediate, issuance works.
	b.restart()
	if _, inter := b.svidCert(1002); !bytes.Equal(inter, interB) {
		t.Error("B signs with another intermediate after its restart")
	}
	if got := b.mustBadge("bundle", "show"); got != bundle {
		t.Error("the bundle changed across B's restart")
	}
}

// TestE2EEtcdLost: a server whose etcd stops keeps serving what it holds
// (an open stream keeps its SVID and bundle) and refuses new issuance
// with Unavailable naming etcd, rather than issue what it cannot record;
// when etcd is back, issuance resumes by itself.
func TestE2EEtcdLost(t *testing.T) {
	requireRoot(t)
	srv := etcdtest.Start(t, nil)
	d := etcdReplica(t, "--storage", "etcd://"+srv.Endpoint, "--root-kek", writeKEK(t, t.TempDir()))
	d.createEntry("spiffe://example.org/payments", "unix:uid:1001")
	w := d.startStream(1001, 1001)
	first := w.next(t, 10*time.Second)
	if len(first.SVIDs) != 1 {
		t.Fatalf("first update: %v %s", ids(first), first.Error)
	}

	srv.Stop()
	// New issuance: refused with Unavailable once what was reserved
	// before is used (each fetch from a new process takes a serial).
	var refused workloadResult
	pollUntil(t, 60*time.Second, "a fetch refused with Unavailable", func() bool {
		refused = d.runWorkload(1001, 1001, "fetch")
		return refused.Error != ""
	})
	if refused.Code != "Unavailable" || !strings.Contains(refused.Error, "etcd") && !strings.Contains(refused.Error, "store") {
		t.Errorf("fetch with etcd down: %s: %s; want Unavailable naming the store", refused.Code, refused.Error)
	}
	t.Logf("fetch with etcd down: %s: %s", refused.Code, refused.Error)
	// The open stream still holds its SVID: nothing was pushed that
	// takes it away.
	select {
	case r, ok := <-w.updates:
		if !ok || r.Error != "" || len(r.SVIDs) != 1 {
			t.Errorf("the open stream got %v %s while etcd was down", ids(r), r.Error)
		}
	default:
	}
	if !strings.Contains(d.mustBadge("bundle", "show"), "BEGIN CERTIFICATE") {
		t.Error("bundle show failed while etcd was down")
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "a fetch after etcd came back", func() bool {
		return d.runWorkload(1001, 1001, "fetch").Error == ""
	})
}

// TestE2EEtcdReplicaKilled: while entries and revocations are made on A
// and workloads fetch from B, A is killed with SIGKILL. Every entry and
// revocation A acknowledged is on B, and B kept issuing throughout.
func TestE2EEtcdReplicaKilled(t *testing.T) {
	requireRoot(t)
	srv := etcdtest.Start(t, nil)
	args := []string{"--storage", "etcd://" + srv.Endpoint, "--root-kek", writeKEK(t, t.TempDir())}
	a := etcdReplica(t, args...)
	b := etcdReplica(t, args...)
	b.createEntry("spiffe://example.org/payments", "unix:uid:1001")

	var (
		mu      sync.Mutex
		entries []string // ids of entries A acknowledged
		revoked []string // SPIFFE IDs A acknowledged revoking
	)
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("spiffe://example.org/load/%d", i)
			out, _, code := a.badge("entry", "create", "--id", id, "--selector", fmt.Sprintf("unix:uid:%d", 5000+i))
			if code == 0 {
				mu.Lock()
				entries = append(entries, strings.TrimSpace(out))
				mu.Unlock()
			}
			if _, _, code := a.badge("revoke", "--id", id, "--reason", "load"); code == 0 {
				mu.Lock()
				revoked = append(revoked, id)
				mu.Unlock()
			}
		}
	}()
	fetches := make(chan workloadResult, 64)
	go func() {
		defer close(fetches)
		for {
			select {
			case <-stop:
				return
			default:
			}
			fetches <- b.runWorkload(1001, 1001, "fetch")
		}
	}()

	pollUntil(t, 30*time.Second, "A acknowledged some writes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(revoked) >= 20
	})
	a.signal(syscall.SIGKILL)
	close(stop)
	<-writerDone
	failed := 0
	n := 0
	for r := range fetches {
		n++
		if r.Error != "" {
			failed++
			t.Errorf("fetch on B: %s: %s", r.Code, r.Error)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("A acknowledged %d entries and %d revocations before SIGKILL; B served %d fetches, %d failed", len(entries), len(revoked), n, failed)

	list := b.mustBadge("entry", "list", "--json")
	for _, id := range entries {
		if !strings.Contains(list, id) {
			t.Errorf("entry %s, acknowledged by A, is not on B", id)
		}
	}
	revs := b.mustBadge("revocations", "list", "--json")
	for _, id := range revoked {
		if !strings.Contains(revs, `"`+id+`"`) {
			t.Errorf("revocation of %s, acknowledged by A, is not on B", id)
		}
	}
}

// TestE2EEtcdAgentFailover: an agent given two servers of one etcd store
// (--server A,B) moves to B when A is killed, and an SDK client and
// server behind it, on a new connection for every request, see no failed
// handshake: before, during and after the move, through a rotation of
// their SVIDs signed by B.
func TestE2EEtcdAgentFailover(t *testing.T) {
	requireRoot(t)
	const ttl = 20 * time.Second
	srv := etcdtest.Start(t, nil)
	args := []string{"--storage", "etcd://" + srv.Endpoint, "--root-kek", writeKEK(t, t.TempDir()), "--svid-ttl", ttl.String()}
	f := startFleet(t, args...)
	addrB := freeAddr(t)
	etcdReplica(t, append(args, "--agent-listen", addrB)...)
	a := f.startAgent(t, "--join-token", f.token("node-a"), "--server", f.agentAddr+","+addrB)
	f.mustBadge("entry", "create", "--id", sdkOrdersID, "--selector", "unix:uid:1001", "--node", "node-a")
	f.mustBadge("entry", "create", "--id", sdkPaymentsID, "--selector", "unix:uid:1002", "--node", "node-a")
	server, l := startSDKServer(t, a, "payments", 1002, envSDKProto+"=http", envSDKAuthz+"="+sdkOrdersID)
	client := startSDK(t, a, "orders", 1001, "sdk-client", envSDKProto+"=http", envSDKAuthz+"="+sdkPaymentsID,
		envSDKAddr+"="+l.Addr, envSDKCount+"=0", envSDKInterval+"=10ms")
	client.next(time.Now().Add(30*time.Second), 0, "response")
	serverSerials := distinctValues(server.snapshot(), "request", serialOfEvent)
	clientSerials := distinctValues(client.snapshot(), "response", serialOfEvent)
	nServer, nClient := len(server.snapshot()), len(client.snapshot())

	f.signal(syscall.SIGKILL)
	killed := time.Now()
	a.waitLogCount(t, 2, "connected to server")
	t.Logf("the agent reconnected %s after A was killed", time.Since(killed))
	deadline := time.Now().Add(ttl + 15*time.Second)
	client.waitResponsesAfter(deadline, killed, 50, "after A was killed")
	server.waitFor(deadline, "a client serial issued after the move", func(evs []sdkEvent) bool {
		return len(newSerials(evs[nServer:], "request", serverSerials)) >= 1
	})
	client.waitFor(deadline, "a server serial issued after the move", func(evs []sdkEvent) bool {
		return len(newSerials(evs[nClient:], "response", clientSerials)) >= 1
	})
	cs, ss := client.stop(), server.stop()
	if cs.Failures != 0 || cs.Refused != 0 || ss.Refused != 0 || cs.Handshakes != cs.Requests {
		t.Errorf("%d of %d requests failed, %d handshakes (client refused %d, server %d):\n%s",
			cs.Failures, cs.Requests, cs.Handshakes, cs.Refused, ss.Refused, describeEvents(eventsOf(client.snapshot(), "error")))
	}
	t.Logf("%d requests behind an agent that moved from A to B, each on a new connection; %d failed", cs.Requests, cs.Failures)
}
