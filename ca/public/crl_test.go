package public

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/badge-dev/badge/ca"
)

// TestCRLOverHTTP: non-Go verifiers fetch the revocation list from the
// public listener; it is the one on the Workload API streams, and it
// changes when a certificate is revoked.
func TestCRLOverHTTP(t *testing.T) {
	f := start(t, "", nil)
	fetch := func() *x509.RevocationList {
		t.Helper()
		resp, body := get(t, f.client(nil), f.url+"/crl")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" {
			t.Fatalf("/crl: %s %s", resp.Status, resp.Header.Get("Content-Type"))
		}
		crl, err := x509.ParseRevocationList(body)
		if err != nil {
			t.Fatalf("/crl does not parse: %v", err)
		}
		return crl
	}
	before := fetch()
	want, _ := f.auth.Snapshot().CRL()
	if string(before.Raw) != string(want) {
		t.Fatal("/crl differs from the snapshot's revocation list")
	}
	if _, err := f.auth.RevokeID(context.Background(), ca.RevokeRequest{SPIFFEID: "spiffe://example.org/gone"}); err != nil {
		t.Fatal(err)
	}
	after := fetch()
	if after.Number.Cmp(before.Number) <= 0 {
		t.Fatalf("CRL number %s did not grow past %s after a revocation", after.Number, before.Number)
	}
}
