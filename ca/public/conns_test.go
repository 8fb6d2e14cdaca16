package public

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// closedByServer reports whether the server closes c within d without
// sending anything (a refused connection, or one whose handshake expired).
func closedByServer(t *testing.T, c net.Conn, d time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 1))
	return n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(errString(err), "reset"))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestConnectionsPerAddress(t *testing.T) {
	f := start(t, "", func(c *Config) { c.MaxConnsPerAddr = 3; c.HandshakeTimeout = time.Minute })
	addr := strings.TrimPrefix(f.url, "https://")
	// Three idle connections from 127.0.0.1: its limit.
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	over, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if !closedByServer(t, over, 5*time.Second) {
		t.Error("a fourth connection from 127.0.0.1 was not closed by the server")
	}

	// Another address still gets answers.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	tr := f.client(nil).Transport.(*http.Transport)
	tr.DialContext = d.DialContext
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get(f.url + "/healthz")
	if err != nil {
		t.Fatalf("127.0.0.2 refused while 127.0.0.1 is at its limit: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz from 127.0.0.2: %s", resp.Status)
	}
}

func TestHandshakeDeadline(t *testing.T) {
	f := start(t, "", func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp", strings.TrimPrefix(f.url, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	// The server answers a silent client with nothing and closes it once
	// the handshake deadline passes.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("connection without a TLS handshake still open: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %s, want about 300ms", d)
	}
}
