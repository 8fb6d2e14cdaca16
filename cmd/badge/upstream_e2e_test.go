package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/certificates/authority"
	stepserver "github.com/smallstep/certificates/ca"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.step.sm/crypto/jose"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/upstream/stepca"
	"github.com/badge-dev/badge/internal/testpki"
)

// The test binary is the daemon of the end-to-end tests: it has the
// step-ca upstream whether or not it was built with -tags stepca.
func init() {
	if newStepCAUpstream == nil {
		newStepCAUpstream = func(c stepCAConfig) (ca.Upstream, error) {
			return stepca.New(stepca.Config{URL: c.url, RootFile: c.rootFile, Provisioner: c.provisioner,
				PasswordFile: c.passwordFile, X5CCertFile: c.x5cCert, X5CKeyFile: c.x5cKey})
		}
	}
}

// svidChain returns the certificates of the first SVID of r.
func svidChain(t *testing.T, r workloadResult) []*x509.Certificate {
	t.Helper()
	if r.Error != "" || len(r.SVIDs) == 0 {
		t.Fatalf("workload got no SVID: %s %s", r.Code, r.Error)
	}
	var out []*x509.Certificate
	for _, der := range r.SVIDs[0].Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// checkUnderRoot checks that r's bundle is root alone and that its SVID
// carries badge's intermediate and the upstream's, and verifies against
// root alone; it returns badge's intermediate.
func checkUnderRoot(t *testing.T, r workloadResult, root, upInter *x509.Certificate, when string) *x509.Certificate {
	t.Helper()
	if len(r.Bundle) != 1 || string(r.Bundle[0]) != string(root.Raw) {
		t.Fatalf("%s: the Workload API bundle holds %d certificates, want the upstream root alone", when, len(r.Bundle))
	}
	chain := svidChain(t, r)
	if len(chain) != 3 || !chain[2].Equal(upInter) {
		t.Fatalf("%s: SVID chain of %d certificates, want leaf, badge's intermediate, the upstream's intermediate", when, len(chain))
	}
	onlyRoot := x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("example.org"), []*x509.Certificate{root})
	if _, _, err := x509svid.Verify(chain, onlyRoot); err != nil {
		t.Fatalf("%s: the SVID does not verify against the upstream root alone: %v", when, err)
	}
	return chain[1]
}

// TestE2EUpstreamDisk: `badge server --upstream disk` with an operator's
// intermediate and root on disk: the Workload API bundle is the
// operator's root alone, SVIDs carry both intermediates and verify
// against that root, a rotation of the intermediate asks the upstream
// again, and the root cannot be rotated by badge.
func TestE2EUpstreamDisk(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	root := testpki.NewCA(t, "operator root", nil, testpki.Options{})
	opInter := testpki.NewCA(t, "operator intermediate", root, testpki.Options{})
	certFile := testpki.WriteCerts(t, filepath.Join(dir, "ca.crt"), opInter.Cert, root.Cert)
	keyFile := testpki.WriteKey(t, filepath.Join(dir, "ca.key"), opInter.Key)
	d := startDaemon(t, "--upstream", "disk", "--upstream-cert", certFile, "--upstream-key", keyFile)
	d.createEntry("spiffe://example.org/w", "unix:uid:1001")
	first := checkUnderRoot(t, d.runWorkload(1001, 1001, "fetch"), root.Cert, opInter.Cert, "first intermediate")

	for _, line := range strings.Split(strings.TrimSpace(d.mustBadge("keys", "list")), "\n")[1:] {
		if f := strings.Fields(line); f[0] == "root" && f[2] != "upstream" {
			t.Errorf("badge keys list shows a root key of badge's own under an upstream: %s", line)
		}
	}
	d.mustBadge("keys", "rotate", "--kind", "intermediate")
	next := checkUnderRoot(t, d.runWorkload(1001, 1001, "fetch"), root.Cert, opInter.Cert, "after a rotation")
	if next.Equal(first) {
		t.Fatal("the intermediate did not change after badge keys rotate --kind intermediate")
	}
	if _, errOut, code := d.badge("keys", "rotate", "--kind", "root"); code == 0 || !strings.Contains(errOut, "upstream") {
		t.Fatalf("badge keys rotate --kind root under an upstream: exit %d, %q; want a refusal naming the upstream", code, errOut)
	}
}

// TestE2ELeavingUpstreamKeepsItsRoot: a server started with `--upstream
// disk`, restarted without it, signs under a root of its own, and keeps
// the upstream's root in the Workload API bundle (shown by `badge keys
// list`, and across a further restart), so that an SVID issued under the
// upstream, as its holder and its peers hold it, still verifies against
// the bundle peers fetch. (Its removal once the upstream's intermediate
// has expired: ca's TestLeavingUpstreamKeepsItsRoots.)
func TestE2ELeavingUpstreamKeepsItsRoot(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	root := testpki.NewCA(t, "operator root", nil, testpki.Options{})
	certFile := testpki.WriteCerts(t, filepath.Join(dir, "ca.crt"), root.Cert)
	keyFile := testpki.WriteKey(t, filepath.Join(dir, "ca.key"), root.Key)
	d := startDaemon(t, "--upstream", "disk", "--upstream-cert", certFile, "--upstream-key", keyFile)
	d.createEntry("spiffe://example.org/w", "unix:uid:1001")
	old := svidChain(t, d.runWorkload(1001, 1001, "fetch"))

	d.args = nil
	for _, when := range []string{"after leaving the upstream", "after a restart"} {
		d.restart()
		r := d.runWorkload(1001, 1001, "fetch")
		bundle, err := x509.ParseCertificates(bytes.Join(r.Bundle, nil))
		if err != nil {
			t.Fatalf("%s: the Workload API bundle: %v", when, err)
		}
		if !slices.ContainsFunc(bundle, root.Cert.Equal) || len(bundle) != 2 {
			t.Fatalf("%s: the Workload API bundle holds %d certificates; want badge's own root and the upstream's", when, len(bundle))
		}
		b := x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("example.org"), bundle)
		if _, _, err := x509svid.Verify(old, b); err != nil {
			t.Fatalf("%s: the SVID issued under the upstream does not verify against the bundle: %v", when, err)
		}
		chain := svidChain(t, r)
		if len(chain) != 2 || chain[1].CheckSignatureFrom(root.Cert) == nil {
			t.Fatalf("%s: a new SVID chain of %d certificates, or still under the upstream; want leaf and badge's own intermediate", when, len(chain))
		}
		if _, _, err := x509svid.Verify(chain, b); err != nil {
			t.Fatalf("%s: a new SVID does not verify against the bundle: %v", when, err)
		}
		upstreamListed := false
		for _, line := range strings.Split(strings.TrimSpace(d.mustBadge("keys", "list")), "\n")[1:] {
			if f := strings.Fields(line); f[0] == "root" && f[2] == "upstream" {
				upstreamListed = true
			}
		}
		if !upstreamListed {
			t.Errorf("%s: badge keys list shows no upstream root", when)
		}
	}
}

// stepCA is a real step-ca (smallstep/certificates' ca and authority
// packages) run in the test process on 127.0.0.1, with a JWK provisioner
// "badge" and an X5C provisioner "badge-x5c" (trusting a CA of the test's
// own, which issued x5cCert) whose templates sign intermediate CAs.
type stepCA struct {
	t               *testing.T
	config          string // ca.json
	url             string
	rootFile        string
	passwordFile    string
	x5cCert, x5cKey string // files of a certificate the X5C provisioner trusts, and its key
	root, inter     *x509.Certificate
	srv             *stepserver.CA
	done            chan error
}

// stepCATemplate is the provisioner's X.509 template: an intermediate CA
// for the request's subject and SANs.
const stepCATemplate = `{"subject": {{ toJson .Subject }}, "sans": {{ toJson .SANs }}, ` +
	`"keyUsage": ["certSign", "crlSign"], "basicConstraints": {"isCA": true, "maxPathLen": 0}}`

func startStepCA(t *testing.T) *stepCA {
	t.Helper()
	dir := t.TempDir()
	root := testpki.NewCA(t, "step-ca root", nil, testpki.Options{})
	inter := testpki.NewCA(t, "step-ca intermediate", root, testpki.Options{})
	password := []byte("provisioner password")
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := jose.EncryptJWK(jwk, password)
	if err != nil {
		t.Fatal(err)
	}
	encKey, err := enc.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	pub := jwk.Public()
	// The X5C provisioner trusts x5cCA, which issued the client
	// certificate badge signs its requests with.
	x5cCA := testpki.NewCA(t, "x5c provisioner CA", nil, testpki.Options{})
	x5cLeaf := testpki.NewClient(t, "badge", x5cCA, testpki.Options{})
	// A free port, kept across restarts of the step-ca.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &stepCA{t: t, url: "https://" + addr, root: root.Cert, inter: inter.Cert,
		rootFile:     testpki.WriteCerts(t, filepath.Join(dir, "root.crt"), root.Cert),
		passwordFile: filepath.Join(dir, "password"),
		x5cCert:      testpki.WriteCerts(t, filepath.Join(dir, "x5c.crt"), x5cLeaf.Cert),
		x5cKey:       testpki.WriteKey(t, filepath.Join(dir, "x5c.key"), x5cLeaf.Key),
		config:       filepath.Join(dir, "ca.json")}
	if err := os.WriteFile(s.passwordFile, append(password, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"root": s.rootFile, "crt": testpki.WriteCerts(t, filepath.Join(dir, "inter.crt"), inter.Cert),
		"key":     testpki.WriteKey(t, filepath.Join(dir, "inter.Key"), inter.Key),
		"address": addr, "dnsNames": []string{"127.0.0.1"},
		"logger": map[string]any{"format": "text"},
		"authority": map[string]any{
			"provisioners": []any{map[string]any{
				"type": "JWK", "name": "badge", "key": &pub, "encryptedKey": encKey,
				"claims":  map[string]any{"minTLSCertDuration": "10s", "maxTLSCertDuration": "24h", "defaultTLSCertDuration": "1h"},
				"options": map[string]any{"x509": map[string]any{"template": stepCATemplate}},
			}, map[string]any{
				"type": "X5C", "name": "badge-x5c",
				"roots":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x5cCA.Cert.Raw}),
				"claims":  map[string]any{"minTLSCertDuration": "10s", "maxTLSCertDuration": "24h", "defaultTLSCertDuration": "1h"},
				"options": map[string]any{"x509": map[string]any{"template": stepCATemplate}},
			}},
		},
		"tls": map[string]any{"minVersion": 1.2, "maxVersion": 1.3, "renegotiation": false,
			"cipherSuites": []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"}},
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// start runs the step-ca and waits until it accepts connections.
func (s *stepCA) start() {
	s.t.Helper()
	cfg, err := authority.LoadConfiguration(s.config)
	if err != nil {
		s.t.Fatalf("step-ca configuration: %v", err)
	}
	srv, err := stepserver.New(cfg, stepserver.WithQuiet(true))
	if err != nil {
		s.t.Fatalf("step-ca: %v", err)
	}
	s.srv, s.done = srv, make(chan error, 1)
	go func() { s.done <- srv.Run() }()
	addr := strings.TrimPrefix(s.url, "https://")
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-s.done:
			s.t.Fatalf("step-ca exited: %v", err)
		case <-time.After(20 * time.Millisecond): // no event to wait on: the listener is step-ca's
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("step-ca not listening on %s after 10s: %v", addr, err)
		}
	}
}

// stop stops the step-ca, if it runs, and waits for it.
func (s *stepCA) stop() {
	if s.srv == nil {
		return
	}
	s.srv.Stop()
	<-s.done
	s.srv = nil
}

// retryDelays are the retry_in values of the daemon's warnings about the
// upstream, in order.
func retryDelays(d *daemon) []string {
	var out []string
	for _, line := range strings.Split(d.logs(), "\n") {
		if f := slogFields(line); strings.HasPrefix(f["msg"], "the upstream authority did not sign") && f["retry_in"] != "" {
			out = append(out, f["retry_in"])
		}
	}
	return out
}

// TestE2EUpstreamStepCA: `badge server --upstream stepca` under a real
// step-ca with a JWK provisioner: badge's intermediate chains to the
// step-ca's intermediate and root, and SVIDs verify against that root
// alone. With the step-ca stopped when the intermediate is due to rotate,
// badge keeps serving (an open stream gets renewed SVIDs, a new fetch
// gets one), warns, and asks again with growing delays; with the step-ca
// back, the next try rotates the intermediate.
func TestE2EUpstreamStepCA(t *testing.T) {
	requireRoot(t)
	s := startStepCA(t)
	d := startDaemon(t, "--svid-ttl", "10s", "--max-svid-ttl", "10s", "--intermediate-ttl", "40s",
		"--upstream", "stepca", "--upstream-url", s.url, "--upstream-root", s.rootFile,
		"--upstream-provisioner", "badge", "--upstream-password-file", s.passwordFile)
	d.createEntry("spiffe://example.org/w", "unix:uid:1001")
	first := checkUnderRoot(t, d.runWorkload(1001, 1001, "fetch"), s.root, s.inter, "first intermediate")
	stream := d.startStream(1001, 1001)
	checkUnderRoot(t, stream.next(t, 10*time.Second), s.root, s.inter, "stream")

	s.stop()
	// The intermediate (40s) is due at half its life; the first tries
	// come 2.5s apart, then 5s.
	until(t, time.Now().Add(45*time.Second), "two warnings about the upstream", func() bool { return len(retryDelays(d)) >= 2 }, d.logs)
	if got := retryDelays(d)[:2]; got[0] != "2.5s" || got[1] != "5s" {
		t.Errorf("retry delays %v, want 2.5s then 5s", got)
	}
	stopped := time.Now()
	cur := checkUnderRoot(t, d.runWorkload(1001, 1001, "fetch"), s.root, s.inter, "new fetch with the step-ca down")
	if !cur.Equal(first) {
		t.Fatal("the intermediate changed while the step-ca was down")
	}
	for {
		r := stream.next(t, 15*time.Second)
		if r.At.After(stopped) {
			checkUnderRoot(t, r, s.root, s.inter, "stream renewal with the step-ca down")
			break
		}
	}

	s.start()
	until(t, time.Now().Add(20*time.Second), "rotation of the intermediate once the step-ca is back",
		func() bool { return keyLogs(d)["rotate intermediate"] >= 1 }, d.logs)
	next := checkUnderRoot(t, d.runWorkload(1001, 1001, "fetch"), s.root, s.inter, "after the step-ca came back")
	if next.Equal(first) {
		t.Fatal("the intermediate did not change once the step-ca was back")
	}
}

// TestE2EUpstreamStepCAX5C: `badge server --upstream stepca` under a real
// step-ca with an X5C provisioner (trusting a CA of the test's own, which
// issued badge's client certificate): badge's intermediate is signed
// through it, chains to the step-ca's intermediate and root, and SVIDs
// verify against that root alone; a rotation signs the next intermediate
// the same way. With a certificate from a CA the provisioner does not
// trust, the step-ca refuses and the server does not start.
func TestE2EUpstreamStepCAX5C(t *testing.T) {
	requireRoot(t)
	s := startStepCA(t)
	up := func(cert, key string) []string {
		return []string{"--upstream", "stepca", "--upstream-url", s.url, "--upstream-root", s.rootFile,
			"--upstream-provisioner", "badge-x5c", "--upstream-x5c-cert", cert, "--upstream-x5c-key", key}
	}
	d := startDaemon(t, up(s.x5cCert, s.x5cKey)...)
	d.createEntry("spiffe://example.org/w", "unix:uid:1001")
	first := checkUnderRoot(t, d.runWorkload(1001, 1001, "fetch"), s.root, s.inter, "first intermediate")
	d.mustBadge("keys", "rotate", "--kind", "intermediate")
	next := checkUnderRoot(t, d.runWorkload(1001, 1001, "fetch"), s.root, s.inter, "after a rotation")
	if next.Equal(first) {
		t.Fatal("the intermediate did not change after badge keys rotate --kind intermediate")
	}

	// A client certificate the provisioner does not trust.
	dir := t.TempDir()
	rogue := testpki.NewClient(t, "badge", testpki.NewCA(t, "another CA", nil, testpki.Options{}), testpki.Options{})
	cert, key := testpki.WriteCerts(t, filepath.Join(dir, "rogue.crt"), rogue.Cert), testpki.WriteKey(t, filepath.Join(dir, "rogue.Key"), rogue.Key)
	args := append([]string{"--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "w.sock"), "--admin-socket", filepath.Join(dir, "a.sock")}, up(cert, key)...)
	if code, errOut := runServerOnce(t, args...); code == 0 || !strings.Contains(errOut, "upstream authority") || !strings.Contains(errOut, "authorization") {
		t.Errorf("badge server with a certificate the X5C provisioner does not trust: exit %d, %q; want a failure naming the upstream's refusal", code, errOut)
	}
}
