package nodeapi_test

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/minica"
)

// TestRefusedHandshakeSaysWhy: in TLS 1.3 a client finishes its side of
// the handshake before the server checks the client's certificate, and
// writes at once (gRPC sends its preface). A refused client must still
// read the alert that says why: an agent that sees "bad certificate" stops
// with "node attestation refused", one that sees a reset connection takes
// the server for down and retries for ever.
func TestRefusedHandshakeSaysWhy(t *testing.T) {
	f := newFixture(t, nil)
	other, err := minica.New(minica.WithName("other pki"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.clientTLS(f.hostCert(other, "db-9", nil, time.Time{}))
	preface := make([]byte, 4<<10) // gRPC's preface and first frames are smaller
	for i := range 1 {
		raw, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn := tls.Client(raw, cfg)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		err = conn.Handshake()
		if err == nil {
			_, err = conn.Write(preface)
		}
		// gRPC writes again once the server has judged the certificate;
		// a server that closed at once answers that with a reset.
		for deadline := time.Now().Add(5 * time.Second); err == nil && len(f.logs.lines("agent handshake refused")) <= i; {
			if time.Now().After(deadline) {
				t.Fatalf("attempt %d: the refusal was not logged", i)
			}
			time.Sleep(time.Millisecond)
		}
		if err == nil {
			time.Sleep(10 * time.Millisecond) // the server's close, if it closes, reaches the client
			_, err = conn.Write(preface)
		}
		if err == nil {
			_, err = conn.Read(make([]byte, 1))
		}
		conn.Close()
		if err == nil || !strings.Contains(err.Error(), "remote error: tls: bad certificate") {
			t.Fatalf("attempt %d: a client of an untrusted CA got %v, want the server's bad certificate alert", i, err)
		}
	}
}
