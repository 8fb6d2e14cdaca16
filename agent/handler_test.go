package agent

// The agent's Source behind the real Workload API handler (ca/workload),
// on a real Unix socket with the real attestor: the caller is this test
// process.

import (
	"context"
	"crypto"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
	badgeworkload "github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/testclock"
)

// serveWorkload serves the Workload API from a's Source, as `badge agent`
// does, on a socket of the test, and returns a client of it; the server
// logs to log (nil: nowhere).
func serveWorkload(t *testing.T, a *testAgent, clock *testclock.Clock, log io.Writer) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	if log == nil {
		log = io.Discard
	}
	src := a.Source()
	srv, err := badgeworkload.New(badgeworkload.Config{Source: src, JWT: src, Attestor: attest.New(attest.Config{}), Time: clock.Now,
		Logger: slog.New(slog.NewTextHandler(log, nil)), Node: a.Node})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "workload.sock")
	l, err := badgeworkload.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

// withHeader is a context of the test with the Workload API's security
// header.
func withHeader(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true"), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fetchX509 opens a FetchX509SVID stream and returns its first answer.
func fetchX509(t *testing.T, api workload.SpiffeWorkloadAPIClient) (*workload.X509SVIDResponse, error) {
	stream, err := api.FetchX509SVID(withHeader(t), &workload.X509SVIDRequest{})
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}

func TestWorkloadAPIThroughAgent(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	self := "unix:uid:" + strconv.Itoa(os.Geteuid())
	f.addEntry("e1", "spiffe://example.org/me", self)
	a := connected(t, clock, f)

	api := serveWorkload(t, a, clock, nil)
	ctx := withHeader(t)
	stream, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Svids) != 1 || first.Svids[0].SpiffeId != "spiffe://example.org/me" {
		t.Fatalf("first response %v", first.Svids)
	}
	chain, err := x509.ParseCertificates(first.Svids[0].X509Svid)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	key, err := x509.ParsePKCS8PrivateKey(first.Svids[0].X509SvidKey)
	if err != nil || !publicKeyEqual(leaf.PublicKey, key.(crypto.Signer).Public()) {
		t.Fatalf("the key sent does not match the certificate (%v)", err)
	}

	// A new entry reaches the waiting stream.
	start := time.Now()
	f.addEntry("e2", "spiffe://example.org/me-too", self)
	second, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new entry to the stream behind the agent: %v", time.Since(start))
	if len(second.Svids) != 2 || second.Svids[0].SpiffeId != "spiffe://example.org/me" || second.Svids[1].SpiffeId != "spiffe://example.org/me-too" {
		t.Fatalf("after a new entry: %v", second.Svids)
	}
	if string(second.Svids[0].X509Svid) != string(first.Svids[0].X509Svid) {
		t.Error("the held default SVID was replaced by a new entry")
	}

	// A revocation reaches its crl, and the revoked SVID is replaced.
	f.revoke(leaf.SerialNumber.Text(16))
	third, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(third.Crl[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("crl after the revocation: %v", crl.RevokedCertificateEntries)
	}
	if string(third.Svids[0].X509Svid) == string(first.Svids[0].X509Svid) {
		t.Error("the revoked SVID was handed out again")
	}
}

// TestNoServerIsAWarning: an agent with no server yet answers every
// caller Unavailable, and logs that as a warning saying it has no server,
// at most once per interval, not as an error per call.
func TestNoServerIsAWarning(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	a, err := newTestAgent(t, dataDir(t), clock, f, nil) // never attests nor connects
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	api := serveWorkload(t, a, clock, &logs)
	calls := []struct {
		name string
		call func() error
	}{
		{"FetchX509SVID", func() error { _, err := fetchX509(t, api); return err }},
		{"FetchX509Bundles", func() error {
			s, err := api.FetchX509Bundles(withHeader(t), &workload.X509BundlesRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}},
		{"FetchJWTSVID", func() error {
			_, err := api.FetchJWTSVID(withHeader(t), &workload.JWTSVIDRequest{Audience: []string{"db"}})
			return err
		}},
	}
	for _, c := range calls {
		if err := c.call(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not connected to any badge server") {
			t.Errorf("%s with no server: %v, want Unavailable saying why", c.name, err)
		}
	}
	warnings := func() []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "the badge agent has no server yet") {
				out = append(out, l)
			}
		}
		return out
	}
	if w := warnings(); len(w) != 1 {
		t.Errorf("%d warnings about the missing server for %d calls, want 1:\n%s", len(w), len(calls), logs.String())
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("an agent with no server logs errors:\n%s", logs.String())
	}
	clock.Advance(badgeworkload.DefaultLogInterval)
	if _, err := fetchX509(t, api); status.Code(err) != codes.Unavailable {
		t.Fatalf("FetchX509SVID a minute later: %v", err)
	}
	if w := warnings(); len(w) != 2 || !strings.Contains(w[1], "refused_since_last_report=2") {
		t.Errorf("after an interval: warnings %q, want a second one counting the 2 calls not reported", w)
	}
}

// TestRefusalNamesTheNode: a workload behind an agent that matches no
// entry is told to register one for this node: an entry without --node
// never reaches the agent.
func TestRefusalNamesTheNode(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	f.addEntry("e1", "spiffe://example.org/other", "unix:uid:4242")
	a := connected(t, clock, f)
	_, err := fetchX509(t, serveWorkload(t, a, clock, nil))
	want := "an admin registers one with: badge entry create --id SPIFFE_ID --selector unix:uid:" + strconv.Itoa(os.Geteuid()) + " --node web-1"
	if status.Code(err) != codes.PermissionDenied || !strings.HasSuffix(status.Convert(err).Message(), want) {
		t.Errorf("unregistered caller behind the agent: %v, want PermissionDenied ending %q", err, want)
	}
}
