package main

// The end-to-end test of key rotation with overlap: a real daemon on an
// accelerated schedule rotates its intermediate, JWT key and root while
// real workloads keep using them, and nothing valid is ever refused.

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/sdk"
)

func init() {
	workloadModes["rotation-verifier"] = rotationVerifierMain
}

// The rotation verifier is configured by these variables.
const (
	envRotationJWKS = "ROTATION_JWKS" // the JWKS URL of the public listener
	rotationAud     = "spiffe://example.org/rotation-check"
)

// rotationEvent is one line the rotation verifier reports.
type rotationEvent struct {
	// Event is one of:
	//   ready       the sources are up
	//   bundle      go-spiffe's X509Source holds a new X.509 bundle: Roots
	//   token       the first token of a JWT key: ID (the kid)
	//   retired_ok  the first success of a check on a credential of a
	//               replaced key: Kind (x509 or jwt), ID
	//   refused     a valid credential was refused: Kind (x509, jwt-sdk,
	//               jwt-jose), ID, Error
	//   error       something else failed: Error
	//   summary     at exit: the counts
	Event string   `json:"event"`
	Roots []string `json:"roots,omitempty"` // keyFingerprint of each root, in bundle order
	Kind  string   `json:"kind,omitempty"`
	ID    string   `json:"id,omitempty"`
	Error string   `json:"error,omitempty"`

	X509Checks   int      `json:"x509_checks,omitempty"`
	JWTChecks    int      `json:"jwt_checks,omitempty"`
	Refused      int      `json:"refused,omitempty"`
	RetiredX509  int      `json:"retired_x509,omitempty"`
	RetiredJWT   int      `json:"retired_jwt,omitempty"`
	JWKSFetches  int      `json:"jwks_fetches,omitempty"`
	Kids         []string `json:"kids,omitempty"`
	Intermediate []string `json:"intermediates,omitempty"`
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// keyFingerprint is the fingerprint `badge keys list` shows of a CA's key.
func keyFingerprint(c *x509.Certificate) string {
	return "SHA256:" + fingerprint(c.RawSubjectPublicKeyInfo)
}

// joseVerifier is a generic JOSE verifier: it fetches the JWKS over HTTPS
// and keeps it as long as the Cache-Control max-age allows, like an API
// gateway would, and never refetches on an unknown kid (which would hide
// a key published too late).
type joseVerifier struct {
	url     string
	roots   func() *x509.CertPool
	set     gojose.JSONWebKeySet
	expires time.Time
	fetches int
}

func (v *joseVerifier) refresh(ctx context.Context) error {
	if time.Now().Before(v.expires) {
		return nil
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: v.roots()}}, Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", v.url, resp.Status)
	}
	var set gojose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return err
	}
	maxAge := 0
	for _, d := range strings.Split(resp.Header.Get("Cache-Control"), ",") {
		if n, ok := strings.CutPrefix(strings.TrimSpace(d), "max-age="); ok {
			maxAge, _ = strconv.Atoi(n)
		}
	}
	v.set, v.expires, v.fetches = set, time.Now().Add(time.Duration(maxAge)*time.Second), v.fetches+1
	return nil
}

func (v *joseVerifier) verify(token string) error {
	tok, err := jwt.ParseSigned(token, []gojose.SignatureAlgorithm{gojose.ES256})
	if err != nil {
		return err
	}
	if len(tok.Headers) != 1 {
		return errors.New("not one signature")
	}
	keys := v.set.Key(tok.Headers[0].KeyID)
	if len(keys) == 0 {
		return fmt.Errorf("kid %s is not in the cached JWKS", tok.Headers[0].KeyID)
	}
	var claims jwt.Claims
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		return err
	}
	return claims.ValidateWithLeeway(jwt.Expected{AnyAudience: []string{rotationAud}, Issuer: testIssuer, Time: time.Now()}, 0)
}

// rotationVerifierMain keeps checking, every 50ms until its stdin closes,
// every credential it has been handed that has not expired: its X.509-SVIDs
// (from go-spiffe's X509Source) against the current bundle, and its
// JWT-SVIDs (fetched every time with go-spiffe's client) with the badge
// SDK's JWTSource and with a generic JOSE verifier. It
// reports every bundle go-spiffe's X509Source holds, and every refusal.
func rotationVerifierMain(ctx context.Context, addr string) int {
	enc := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	emit := func(e rotationEvent) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(e)
	}
	fail := func(err error) int {
		emit(rotationEvent{Event: "error", Error: err.Error()})
		return 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	x509src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		return fail(err)
	}
	defer x509src.Close()
	jwtsrc, err := sdk.NewJWTSource(ctx, sdk.WithAddress(addr))
	if err != nil {
		return fail(err)
	}
	defer jwtsrc.Close()
	// Tokens are fetched with go-spiffe's client, which caches none: a
	// token of a new key is checked as soon as the daemon signs with it.
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return fail(err)
	}
	defer client.Close()

	var (
		smu     sync.Mutex
		held    []*x509svid.SVID
		bundles int
	)
	roots := func() *x509.CertPool {
		pool := x509.NewCertPool()
		if b, err := x509src.GetX509BundleForTrustDomain(td); err == nil {
			for _, c := range b.X509Authorities() {
				pool.AddCert(c)
			}
		}
		return pool
	}
	// observe takes what the X509Source holds now: a new SVID is kept for
	// checking, a new bundle reported.
	var lastRoots []string
	observe := func() {
		smu.Lock()
		defer smu.Unlock()
		if s, err := x509src.GetX509SVID(); err == nil && !slices.ContainsFunc(held, func(h *x509svid.SVID) bool {
			return h.Certificates[0].Equal(s.Certificates[0])
		}) {
			held = append(held, s)
		}
		b, err := x509src.GetX509BundleForTrustDomain(td)
		if err != nil {
			return
		}
		var fps []string
		for _, c := range b.X509Authorities() {
			fps = append(fps, keyFingerprint(c))
		}
		if !slices.Equal(fps, lastRoots) {
			lastRoots = fps
			bundles++
			emit(rotationEvent{Event: "bundle", Roots: fps})
		}
	}
	observe()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-x509src.Updated():
				observe()
			}
		}
	}()
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stop) }()

	jose := &joseVerifier{url: os.Getenv(envRotationJWKS), roots: roots}
	var (
		sum       = rotationEvent{Event: "summary"}
		tokens    []*jwtsvid.SVID
		kids      []string
		inters    []string
		firstJWT  = true
		firstX509 = true
	)
	refused := func(kind, id string, err error) {
		sum.Refused++
		emit(rotationEvent{Event: "refused", Kind: kind, ID: id, Error: err.Error()})
	}
	emit(rotationEvent{Event: "ready"})
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			sum.Kids, sum.Intermediate, sum.JWKSFetches = kids, inters, jose.fetches
			emit(sum)
			return 0
		case <-tick.C:
		}
		// Credentials within a second of expiry are left alone: a check
		// and its clock may straddle the instant.
		margin := time.Now().Add(time.Second)

		// X.509: every SVID held, against the bundle now.
		smu.Lock()
		svids := slices.Clone(held)
		smu.Unlock()
		b, err := x509src.GetX509BundleForTrustDomain(td)
		if err != nil {
			return fail(err)
		}
		newest := ""
		if len(svids) > 0 {
			newest = fingerprint(svids[len(svids)-1].Certificates[1].Raw)
		}
		for _, s := range svids {
			if !s.Certificates[0].NotAfter.After(margin) {
				continue
			}
			inter := fingerprint(s.Certificates[1].Raw)
			if !slices.Contains(inters, inter) {
				inters = append(inters, inter)
			}
			sum.X509Checks++
			if _, _, err := x509svid.Verify(s.Certificates, b); err != nil {
				refused("x509", s.ID.String(), err)
				continue
			}
			if inter != newest {
				sum.RetiredX509++
				if firstX509 {
					firstX509 = false
					emit(rotationEvent{Event: "retired_ok", Kind: "x509", ID: inter})
				}
			}
		}

		// JWT: a token fetched now (the daemon hands out the token it
		// signed for this audience until half its life, or until another
		// key signs), then every token held.
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		tok, err := client.FetchJWTSVID(fctx, jwtsvid.Params{Audience: rotationAud})
		fcancel()
		if err != nil {
			emit(rotationEvent{Event: "error", Error: "FetchJWTSVID: " + err.Error()})
		} else if !slices.ContainsFunc(tokens, func(t *jwtsvid.SVID) bool { return t.Marshal() == tok.Marshal() }) {
			tokens = append(tokens, tok)
		}
		if err := jose.refresh(ctx); err != nil {
			emit(rotationEvent{Event: "error", Error: "JWKS: " + err.Error()})
		}
		tokens = slices.DeleteFunc(tokens, func(t *jwtsvid.SVID) bool { return !t.Expiry.After(margin) })
		latest := ""
		for _, t := range tokens {
			kid := jwtKid(t.Marshal())
			if !slices.Contains(kids, kid) {
				kids = append(kids, kid)
				emit(rotationEvent{Event: "token", ID: kid})
			}
			latest = kid
		}
		for _, t := range tokens {
			kid := jwtKid(t.Marshal())
			sum.JWTChecks++
			ok := true
			if _, err := jwtsrc.ValidateJWTSVID(t.Marshal(), rotationAud); err != nil {
				refused("jwt-sdk", kid, err)
				ok = false
			}
			if err := jose.verify(t.Marshal()); err != nil {
				refused("jwt-jose", kid, err)
				ok = false
			}
			if ok && kid != latest {
				sum.RetiredJWT++
				if firstJWT {
					firstJWT = false
					emit(rotationEvent{Event: "retired_ok", Kind: "jwt", ID: kid})
				}
			}
		}
	}
}

// jwtKid is the kid in a token's header.
func jwtKid(token string) string {
	tok, err := jwt.ParseSigned(token, []gojose.SignatureAlgorithm{gojose.ES256})
	if err != nil || len(tok.Headers) != 1 {
		return ""
	}
	return tok.Headers[0].KeyID
}

// rotationProc is the rotation verifier running as another uid.
type rotationProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
}

func (p *rotationProc) events() []rotationEvent {
	var out []rotationEvent
	for _, line := range strings.Split(strings.TrimSpace(p.out.String()), "\n") {
		var e rotationEvent
		if line != "" && json.Unmarshal([]byte(line), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// until polls (the verifier reports on a pipe, and the daemon in its log:
// neither signals) until cond holds, or fails the test at the deadline.
func until(t *testing.T, deadline time.Time, what string, cond func() bool, explain func() string) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s by the deadline:\n%s", what, explain())
		}
		<-tick.C
	}
}

// keyLogs counts the daemon's log lines of key steps by action and kind,
// such as "rotate intermediate".
func keyLogs(d *daemon) map[string]int {
	out := map[string]int{}
	for _, line := range strings.Split(d.logs(), "\n") {
		f := slogFields(line)
		if action, ok := strings.CutPrefix(f["msg"], "signing key "); ok {
			out[action+" "+f["kind"]]++
		}
	}
	return out
}

// TestE2EKeyRotation: on an accelerated schedule (an intermediate every
// 5s, a JWT key every 10s published 10s ahead, a root every 20s published
// 8s ahead), while an SDK client makes a new mutual-TLS connection to an
// SDK server every 20ms and a verifier keeps checking its X.509-SVIDs and
// fresh JWT-SVIDs (with the SDK, and with a generic JOSE verifier that
// caches the JWKS fetched over HTTPS as long as it is told to), the
// intermediate rotates at least three times, the JWT key twice and the
// root once on schedule and once more by `badge keys rotate`: no handshake
// fails, no valid credential is refused, credentials of replaced keys
// still verify, and go-spiffe's X509Source sees every bundle the daemon
// published.
func TestE2EKeyRotation(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--listen", "127.0.0.1:0", "--listen-dns", "127.0.0.1", "--jwt-issuer", testIssuer,
		"--svid-ttl", "10s", "--max-svid-ttl", "10s", "--intermediate-ttl", "40s",
		"--root-ttl", "60s", "--root-prepare-lead", "8s",
		"--jwt-ttl", "10s", "--jwt-key-ttl", "10s", "--jwt-prepare-lead", "10s")
	start := time.Now()
	d.createEntry(sdkOrdersID, "unix:uid:1001")
	d.createEntry(sdkPaymentsID, "unix:uid:1002")
	d.createEntry(sdkInventoryID, "unix:uid:1003")

	// The verifier, as inventory.
	v := &rotationProc{out: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	v.cmd = d.workloadCmd(1003, 1003, "rotation-verifier", envRotationJWKS+"="+d.publicURL()+"/.well-known/jwks.json")
	v.cmd.Stdout, v.cmd.Stderr = v.out, v.stderr
	var err error
	if v.stdin, err = v.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.cmd.Wait(); close(v.done) }()
	t.Cleanup(func() {
		v.stdin.Close()
		select {
		case <-v.done:
		case <-time.After(10 * time.Second):
			v.cmd.Process.Kill()
			<-v.done
		}
		if t.Failed() {
			t.Logf("verifier stderr:\n%s", v.stderr.String())
		}
	})
	explainV := func() string { return v.out.String() + v.stderr.String() }
	until(t, start.Add(20*time.Second), "ready verifier", func() bool {
		return slices.ContainsFunc(v.events(), func(e rotationEvent) bool { return e.Event == "ready" })
	}, explainV)

	// The SDK pair: payments serves, orders calls on a new connection
	// every 20ms.
	server, l := startSDKServer(t, d, "payments", 1002, envSDKProto+"=http", envSDKAuthz+"="+sdkOrdersID)
	client := startSDK(t, d, "orders", 1001, "sdk-client", envSDKProto+"=http", envSDKAuthz+"="+sdkPaymentsID,
		envSDKAddr+"="+l.Addr, envSDKCount+"=0", envSDKInterval+"=20ms")

	// The scheduled rotations: the root activates 20s after the start.
	deadline := start.Add(40 * time.Second)
	until(t, deadline, "scheduled root rotation", func() bool { return keyLogs(d)["rotate root"] >= 1 }, d.logs)
	// And one forced by the operator.
	out := d.mustBadge("keys", "rotate", "--kind", "root", "--json")
	var forced ca.KeyRotation
	if err := json.Unmarshal([]byte(out), &forced); err != nil || forced.Active.State != "active" || forced.Retired == nil {
		t.Fatalf("badge keys rotate --kind root --json printed %q (%v)", out, err)
	}
	until(t, deadline, "3 intermediate and 2 JWT rotations", func() bool {
		k := keyLogs(d)
		return k["rotate intermediate"] >= 3 && k["rotate jwt"] >= 2
	}, func() string { return fmt.Sprint(keyLogs(d)) })
	// The verifier has checked credentials of replaced keys, and holds
	// the bundle with the forced root.
	// The verifier has checked credentials of replaced keys, holds the
	// bundle with the forced root, and has checked tokens of the three
	// JWT keys.
	until(t, deadline, "credentials of replaced keys checked, tokens of 3 JWT keys, and the forced root in the verifier's bundle", func() bool {
		evs := v.events()
		retired := map[string]bool{}
		last, kids := []string(nil), 0
		for _, e := range evs {
			switch e.Event {
			case "retired_ok":
				retired[e.Kind] = true
			case "bundle":
				last = e.Roots
			case "token":
				kids++
			}
		}
		return retired["x509"] && retired["jwt"] && len(last) == 3 && kids >= 3
	}, explainV)
	cs := client.stop()
	ss := server.stop()
	v.stdin.Close()
	select {
	case <-v.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the verifier did not exit within 15s of its stdin closing")
	}
	elapsed := time.Since(start)

	// No handshake failed, on either side.
	if cs.Failures != 0 || cs.Refused != 0 || ss.Refused != 0 || cs.Requests == 0 {
		t.Errorf("%d of %d requests failed; the client refused %d handshakes, the server %d:\n%s",
			cs.Failures, cs.Requests, cs.Refused, ss.Refused, describeEvents(eventsOf(client.snapshot(), "error")))
	}
	if cs.Handshakes != cs.Requests || ss.Handshakes != cs.Requests {
		t.Errorf("%d requests, but %d client and %d server handshakes: not one new connection each", cs.Requests, cs.Handshakes, ss.Handshakes)
	}
	clientSerials := distinctValues(server.snapshot(), "request", serialOfEvent)

	// No valid credential was refused; credentials of replaced keys
	// verified.
	evs := v.events()
	var sum rotationEvent
	var bundles [][]string
	for _, e := range evs {
		switch e.Event {
		case "summary":
			sum = e
		case "bundle":
			bundles = append(bundles, e.Roots)
		case "refused", "error":
			t.Errorf("verifier: %s %s %s: %s", e.Event, e.Kind, e.ID, e.Error)
		}
	}
	if sum.Event != "summary" {
		t.Fatalf("the verifier printed no summary:\n%s", explainV())
	}
	if sum.Refused != 0 || sum.RetiredX509 == 0 || sum.RetiredJWT == 0 || sum.JWTChecks == 0 || sum.X509Checks == 0 {
		t.Errorf("verifier summary %+v: want no refusal, and checks of credentials of replaced keys", sum)
	}
	if len(sum.Kids) < 3 || len(sum.Intermediate) < 3 {
		t.Errorf("the verifier held tokens of %d JWT keys and SVIDs of %d intermediates; want 3 or more of each", len(sum.Kids), len(sum.Intermediate))
	}

	// The keys as the daemon lists them: the roots in creation order are
	// the bundles go-spiffe's X509Source saw, one more each time.
	var keys []ca.KeyStatus
	if err := json.Unmarshal([]byte(d.mustBadge("keys", "list", "--json")), &keys); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	var roots []string
	for _, k := range keys {
		count[k.Kind]++
		if k.Kind == ca.RotateRoot {
			roots = append(roots, k.Fingerprint)
		}
		if k.Kind != ca.RotateJWT && !strings.HasPrefix(k.PrivateKey, d.dataDir) {
			t.Errorf("key %s: private key at %q, want a file in the data dir", k.ID, k.PrivateKey)
		}
	}
	var want [][]string
	for i := range roots {
		want = append(want, roots[:i+1])
	}
	if !slices.EqualFunc(bundles, want, slices.Equal) {
		t.Errorf("go-spiffe's X509Source saw the bundles\n%v\nwant one more root each time:\n%v", bundles, want)
	}
	k := keyLogs(d)
	if k["rotate intermediate"] < 3 || k["rotate jwt"] < 2 || k["rotate root"] < 2 || count[ca.RotateRoot] != 3 {
		t.Errorf("rotations %v, root records %d; want at least 3 intermediate, 2 JWT and 2 root rotations, 3 roots", k, count[ca.RotateRoot])
	}
	t.Logf("in %s: %d handshakes (%d client serials), %d X.509 and %d JWT checks (%d and %d of credentials of replaced keys), "+
		"%d JWKS fetches, %d bundles; rotations %v",
		elapsed.Round(100*time.Millisecond), cs.Handshakes, len(clientSerials), sum.X509Checks, sum.JWTChecks,
		sum.RetiredX509, sum.RetiredJWT, sum.JWKSFetches, len(bundles), k)
}
