package agent

// The agent's Source behind the real Workload API handler (ca/workload),
// on a real Unix socket with the real attestor: the caller is this test
// process.

import (
	"context"
	"crypto"
	"crypto/x509"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/badge-dev/badge/attest"
	badgeworkload "github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/testclock"
)

func TestWorkloadAPIThroughAgent(t *testing.T) {
	clock := testclock.New(time.Now())
	f := newFakeServer(t, clock.Now)
	self := "unix:uid:" + strconv.Itoa(os.Geteuid())
	f.addEntry("e1", "spiffe://example.org/me", self)
	a := connected(t, clock, f)

	src := a.Source()
	srv, err := badgeworkload.New(badgeworkload.Config{Source: src, JWT: src, Attestor: attest.New(attest.Config{}), Time: clock.Now})
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
	defer conn.Close()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true"), 20*time.Second)
	defer cancel()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
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
