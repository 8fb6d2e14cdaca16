package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/sdk"
)

// rawUpdate is one FetchX509SVID message as the raw Workload API client
// saw it, CRL included (go-spiffe's X509Context does not carry CRLs).
type rawUpdate struct {
	Code    string    `json:"code,omitempty"`
	Error   string    `json:"error,omitempty"`
	IDs     []string  `json:"ids,omitempty"`
	Serials []string  `json:"serials,omitempty"`
	Chain   [][]byte  `json:"chain,omitempty"` // of the first SVID
	Key     []byte    `json:"key,omitempty"`
	Bundle  []byte    `json:"bundle,omitempty"`
	CRLs    [][]byte  `json:"crls,omitempty"`
	At      time.Time `json:"at"`
}

func init() {
	// rawstream holds a FetchX509SVID stream and prints every message as
	// a JSON line until stdin closes or the stream ends.
	workloadModes["rawstream"] = func(ctx context.Context, addr string) int {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
		enc := json.NewEncoder(os.Stdout)
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			enc.Encode(rawUpdate{Error: err.Error(), At: time.Now()})
			return 0
		}
		defer conn.Close()
		ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
		stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		for err == nil {
			var resp *workload.X509SVIDResponse
			if resp, err = stream.Recv(); err != nil {
				break
			}
			u := rawUpdate{CRLs: resp.Crl, At: time.Now()}
			for i, s := range resp.Svids {
				certs, perr := x509.ParseCertificates(s.X509Svid)
				if perr != nil {
					u.Error = perr.Error()
					break
				}
				u.IDs = append(u.IDs, s.SpiffeId)
				u.Serials = append(u.Serials, certs[0].SerialNumber.Text(16))
				if i == 0 {
					for _, c := range certs {
						u.Chain = append(u.Chain, c.Raw)
					}
					u.Key, u.Bundle = s.X509SvidKey, s.Bundle
				}
			}
			enc.Encode(u)
		}
		if ctx.Err() == nil {
			enc.Encode(rawUpdate{Code: status.Code(err).String(), Error: err.Error(), At: time.Now()})
		}
		return 0
	}
}

// startRawStream runs a rawstream workload as uid/gid.
func (d *daemon) startRawStream(uid, gid uint32) *lineWorkload[rawUpdate] {
	return startLines[rawUpdate](d, uid, gid, "rawstream")
}

// verifiedCRL parses the CRL of an update and checks its signature against
// the intermediate in the update's chain, which must chain to the bundle.
func verifiedCRL(t *testing.T, u rawUpdate) *x509.RevocationList {
	t.Helper()
	if len(u.CRLs) != 1 {
		t.Fatalf("update carries %d CRLs, want 1", len(u.CRLs))
	}
	crl, err := x509.ParseRevocationList(u.CRLs[0])
	if err != nil {
		t.Fatalf("CRL does not parse: %v", err)
	}
	inter, err := x509.ParseCertificate(u.Chain[len(u.Chain)-1])
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(u.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Fatalf("intermediate does not chain to the bundle: %v", err)
	}
	if err := crl.CheckSignatureFrom(inter); err != nil {
		t.Fatalf("CRL is not signed by the authority: %v", err)
	}
	if time.Now().After(crl.NextUpdate) {
		t.Fatalf("CRL NextUpdate %s already passed", crl.NextUpdate)
	}
	return crl
}

func crlSerials(crl *x509.RevocationList) []string {
	var out []string
	for _, e := range crl.RevokedCertificateEntries {
		out = append(out, e.SerialNumber.Text(16))
	}
	return out
}

func TestE2ERevokeIDReissuesAndPublishesCRL(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/payments", "unix:uid:1001")
	s := d.startRawStream(1001, 1001)
	first := s.next(t, 10*time.Second)
	if len(first.Serials) != 1 {
		t.Fatalf("first message: %+v", first)
	}
	if crl := verifiedCRL(t, first); len(crl.RevokedCertificateEntries) != 0 {
		t.Fatalf("fresh authority publishes %d revoked serials", len(crl.RevokedCertificateEntries))
	}

	start := time.Now()
	out := d.mustBadge("revoke", "--id", "spiffe://example.org/payments", "--reason", "key leaked in a log")
	if strings.TrimSpace(out) != "1 certificate revoked" {
		t.Fatalf("badge revoke printed %q", out)
	}
	u := s.next(t, time.Second)
	took := u.At.Sub(start)
	t.Logf("revocation reached the holder's stream %s after the command started", took)
	if took > time.Second {
		t.Fatalf("revocation took %s to reach the stream, want < 1s", took)
	}
	if len(u.Serials) != 1 || u.Serials[0] == first.Serials[0] {
		t.Fatalf("after revoke the holder got %v, want a fresh serial (old %s)", u.Serials, first.Serials[0])
	}
	if bytes.Equal(u.Key, first.Key) {
		t.Fatal("the fresh SVID reuses the revoked key")
	}
	crl := verifiedCRL(t, u)
	if got := crlSerials(crl); !slices.Equal(got, first.Serials) {
		t.Fatalf("CRL lists %v, want exactly the revoked %v", got, first.Serials)
	}

	var revs admin.Revocations
	if err := json.Unmarshal([]byte(d.mustBadge("revocations", "list", "--json")), &revs); err != nil {
		t.Fatal(err)
	}
	if len(revs.IDs) != 1 || revs.IDs[0].Reason != "key leaked in a log" || revs.IDs[0].Blocked ||
		len(revs.Serials) != 1 || revs.Serials[0].Serial != first.Serials[0] {
		t.Fatalf("revocations list: %+v", revs)
	}
	if !strings.Contains(d.logs(), "audit=true") || !strings.Contains(d.logs(), "SPIFFE ID revoked") {
		t.Fatal("no audit record of the revocation in the daemon log")
	}

	// Revoking again revokes only the fresh certificate; the first keeps
	// its revocation time and reason, and is counted apart.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"revoke", "--id", "spiffe://example.org/payments", "--reason", "again"}, "1 certificate revoked (1 already revoked)"},
		{[]string{"revoke", "--serial", first.Serials[0], "--reason", "once more"}, "0 certificates revoked (1 already revoked)"},
	} {
		if out := d.mustBadge(tc.args...); strings.TrimSpace(out) != tc.want {
			t.Fatalf("badge %s printed %q, want %q", strings.Join(tc.args, " "), out, tc.want)
		}
	}
	var again admin.Revocations
	if err := json.Unmarshal([]byte(d.mustBadge("revocations", "list", "--json")), &again); err != nil {
		t.Fatal(err)
	}
	for _, r := range again.Serials {
		if r.Serial == first.Serials[0] && (!r.RevokedAt.Equal(revs.Serials[0].RevokedAt) || r.Reason != "key leaked in a log") {
			t.Fatalf("the first revocation was rewritten: %+v, was %+v", r, revs.Serials[0])
		}
	}
}

// TestE2ESDKRefusesRevokedCertificate: an SDK server in this process,
// fed by the real daemon, refuses the revoked certificate of a workload and
// accepts its fresh one, and closes a connection that was open before the
// revocation.
func TestE2ESDKRefusesRevokedCertificate(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/server", "unix:uid:0")
	d.createEntry("spiffe://example.org/orders", "unix:uid:1001")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := sdk.NewX509Source(ctx, sdk.WithAddress("unix://"+d.socket))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	orders := spiffeid.RequireFromString("spiffe://example.org/orders")
	srv := sdk.NewHTTPServer("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := sdk.PeerID(r)
		fmt.Fprint(w, id)
	}), src, sdk.AuthorizeID(orders))
	watcher := sdk.NewConnWatcher(src)
	watcher.WatchHTTPServer(srv)
	go watcher.Run(ctx, src.Changed)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(l, "", "")
	defer srv.Close()

	s := d.startRawStream(1001, 1001)
	old := s.next(t, 10*time.Second)
	call := func(u rawUpdate) error {
		cert := tls.Certificate{PrivateKey: mustPKCS8(t, u.Key)}
		cert.Certificate = u.Chain
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		}}}
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://" + l.Addr().String() + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if string(body) != orders.String() {
			return fmt.Errorf("handler saw %q", body)
		}
		return nil
	}
	// A connection opened before the revocation and kept open: one request
	// answered, then a read that only ends when the server closes it.
	if err := call(old); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	cert := tls.Certificate{Certificate: old.Chain, PrivateKey: mustPKCS8(t, old.Key)}
	live, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	fmt.Fprint(live, "GET / HTTP/1.1\r\nHost: badge\r\n\r\n")
	br := bufio.NewReader(live)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("request on the live connection: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	closed := make(chan time.Time, 1)
	go func() {
		br.ReadByte() // the server sends nothing more; returns when it closes
		closed <- time.Now()
	}()

	start := time.Now()
	d.mustBadge("revoke", "--serial", old.Serials[0], "--reason", "stolen")
	fresh := s.next(t, time.Second)
	// The server's source learns of the revocation from its own stream.
	deadline := time.After(time.Second)
	for !src.Revocations().IsRevoked(spiffeid.RequireTrustDomainFromString("example.org"), mustSerial(t, old.Serials[0])) {
		select {
		case <-src.Changed():
		case <-deadline:
			t.Fatal("the SDK source did not receive the revocation within 1s")
		}
	}
	select {
	case at := <-closed:
		t.Logf("connection of the revoked peer closed %s after the revoke command started", at.Sub(start))
		if at.Sub(start) > time.Second {
			t.Fatalf("live connection closed after %s, want < 1s", at.Sub(start))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the live connection of the revoked peer stayed open")
	}
	if err := call(old); err == nil {
		t.Fatal("the SDK server accepted the revoked certificate on a new connection")
	}
	if err := call(fresh); err != nil {
		t.Fatalf("the SDK server refused the fresh certificate: %v", err)
	}
}

func mustPKCS8(t *testing.T, der []byte) any {
	t.Helper()
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSerial(t *testing.T, hex string) *big.Int {
	t.Helper()
	n, ok := new(big.Int).SetString(hex, 16)
	if !ok {
		t.Fatalf("bad serial %q", hex)
	}
	return n
}

func TestE2EBlockUntilUnblock(t *testing.T) {
	d := startDaemon(t)
	d.createEntry("spiffe://example.org/compromised", "unix:uid:1001")
	d.createEntry("spiffe://example.org/bystander", "unix:uid:1002")
	s := d.startRawStream(1001, 1001)
	first := s.next(t, 10*time.Second)
	bystander := d.startRawStream(1002, 1002)
	bystander.next(t, 10*time.Second)

	out := d.mustBadge("revoke", "--id", "spiffe://example.org/compromised", "--block", "--reason", "host owned")
	if !strings.HasPrefix(out, "1 certificate revoked") {
		t.Fatalf("badge revoke --block printed %q", out)
	}
	// The blocked workload's stream ends with PermissionDenied and no new SVID.
	end := s.next(t, time.Second)
	if end.Code != "PermissionDenied" {
		t.Fatalf("blocked stream got %+v, want PermissionDenied", end)
	}
	// The bystander's stream gets the new CRL, listing the blocked serial.
	u := bystander.next(t, time.Second)
	if got := crlSerials(verifiedCRL(t, u)); !slices.Equal(got, first.Serials) {
		t.Fatalf("bystander's CRL lists %v, want %v", got, first.Serials)
	}
	if r := d.runWorkload(1001, 1001, "fetch"); r.Code != "PermissionDenied" {
		t.Fatalf("fresh fetch of a blocked ID: %s %s", r.Code, r.Error)
	}

	// The block survives a SIGKILL. The restart may add the serials
	// reserved and never bound (the rest of the daemon's serial block),
	// with no SPIFFE ID; nothing else changes.
	var before, after admin.Revocations
	if err := json.Unmarshal([]byte(d.mustBadge("revocations", "list", "--json")), &before); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGKILL)
	d.start()
	if err := json.Unmarshal([]byte(d.mustBadge("revocations", "list", "--json")), &after); err != nil {
		t.Fatal(err)
	}
	kept := slices.DeleteFunc(slices.Clone(after.Serials), func(r admin.RevokedSerial) bool {
		return r.Reason == ca.UnboundReason && r.SPIFFEID == "" && !slices.Contains(first.Serials, r.Serial)
	})
	if !reflect.DeepEqual(before.IDs, after.IDs) || !reflect.DeepEqual(before.Serials, kept) {
		t.Fatalf("revocations changed across SIGKILL:\n%+v\n%+v", before, after)
	}
	if extra := len(after.Serials) - len(kept); extra > 2*16 {
		t.Errorf("a quiet daemon's crash revoked %d unused reserved serials, want at most two blocks of 16", extra)
	}
	if r := d.runWorkload(1001, 1001, "fetch"); r.Code != "PermissionDenied" {
		t.Fatalf("after restart, blocked ID fetched: %s %v", r.Code, ids(r))
	}
	d.restart()
	if r := d.runWorkload(1001, 1001, "fetch"); r.Code != "PermissionDenied" {
		t.Fatalf("after a clean restart, blocked ID fetched: %s %v", r.Code, ids(r))
	}

	if out := d.mustBadge("unblock", "--id", "spiffe://example.org/compromised"); !strings.Contains(out, "unblocked") {
		t.Fatalf("badge unblock printed %q", out)
	}
	r := d.runWorkload(1001, 1001, "fetch")
	if !slices.Equal(ids(r), []string{"spiffe://example.org/compromised"}) {
		t.Fatalf("after unblock: %v %s", ids(r), r.Error)
	}
	if _, errOut, code := d.badge("unblock", "--id", "spiffe://example.org/compromised"); code != exitFailure || !strings.Contains(errOut, "not blocked") {
		t.Fatalf("second unblock: exit %d %q", code, errOut)
	}
}

func TestE2ERevokeInput(t *testing.T) {
	d := startDaemon(t)
	if out := d.mustBadge("revoke", "--id", "spiffe://example.org/never-issued"); strings.TrimSpace(out) != "0 certificates revoked" {
		t.Fatalf("revoking an ID without certificates printed %q", out)
	}
	var revs admin.Revocations
	if err := json.Unmarshal([]byte(d.mustBadge("revocations", "list", "--json")), &revs); err != nil || len(revs.IDs) != 1 {
		t.Fatalf("the revocation of an ID without certificates was not recorded: %+v %v", revs, err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"malformed id", []string{"revoke", "--id", "spiffe://example.org/a/../b"}, exitFailure, "spiffe_id"},
		{"other trust domain", []string{"revoke", "--id", "spiffe://evil.org/a"}, exitFailure, "not in trust domain"},
		{"serial not hex", []string{"revoke", "--serial", "xyz"}, exitFailure, "hexadecimal"},
		{"serial zero", []string{"revoke", "--serial", "00"}, exitFailure, "positive"},
		{"serial too long", []string{"revoke", "--serial", strings.Repeat("f", 41)}, exitFailure, "serial"},
		{"unknown serial", []string{"revoke", "--serial", "abcdef0123"}, exitFailure, "no unexpired certificate"},
		{"both", []string{"revoke", "--id", "spiffe://example.org/a", "--serial", "01"}, exitUsage, "exclude"},
		{"neither", []string{"revoke"}, exitUsage, "--id or --serial"},
		{"block serial", []string{"revoke", "--serial", "01", "--block"}, exitUsage, "--block"},
		{"control char reason", []string{"revoke", "--id", "spiffe://example.org/a", "--reason", "a\x1b[2Jb"}, exitFailure, "control character"},
		{"unblock unknown", []string{"unblock", "--id", "spiffe://example.org/never"}, exitFailure, "not blocked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := d.badge(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d (want %d), stderr %q (want it to contain %q)", code, tc.code, errOut, tc.want)
			}
		})
	}
	if _, errOut, code := d.badge("healthcheck"); code != 0 {
		t.Fatalf("daemon not serving after bad input: %s", errOut)
	}
}

// TestE2ESDKRefusesRevokedAfterIntermediateRotation: after `badge keys
// rotate --kind intermediate`, an SDK server whose SVID the old
// intermediate issued still learns of a revocation within a second.
func TestE2ESDKRefusesRevokedAfterIntermediateRotation(t *testing.T) {
	d := sdkDaemon(t)
	server, l := startSDKServer(t, d, "payments", 1002, envSDKProto+"=http", envSDKAuthz+"="+sdkOrdersID)
	client := startSDK(t, d, "orders", 1001, "sdk-client", envSDKProto+"=http", envSDKAuthz+"="+sdkPaymentsID,
		envSDKAddr+"="+l.Addr, envSDKCount+"=0", envSDKInterval+"=20ms", envSDKHold+"=1")
	deadline := time.Now().Add(20 * time.Second)
	held := client.next(deadline, 0, "response").Own
	d.mustBadge("keys", "rotate", "--kind", "intermediate")
	n := len(server.snapshot())
	d.mustBadge("revoke", "--id", sdkOrdersID)
	returned := time.Now()
	ref := server.next(returned.Add(10*time.Second), n, "refused")
	took := ref.At.Sub(returned)
	t.Logf("badge revoke returned → SDK server refused the revoked certificate: %v", took.Round(time.Millisecond))
	if ref.Serial != held || ref.Reason != sdk.ReasonRevoked.String() || took > 2*time.Second {
		t.Errorf("the server refused serial %s for %q after %v, want %s for %q within 2s", ref.Serial, ref.Reason, took, held, sdk.ReasonRevoked)
	}
	client.stop()
}
