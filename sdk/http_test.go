package sdk

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// startHTTPServer serves srv with TLS on 127.0.0.1 and returns its base URL.
func startHTTPServer(t testing.TB, srv *http.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeTLS(l, "", ""); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "https://" + l.Addr().String()
}

// whoami answers with the caller's SPIFFE ID.
var whoami = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	id, ok := PeerID(r)
	if !ok {
		http.Error(w, "no peer ID", http.StatusInternalServerError)
		return
	}
	fmt.Fprint(w, id)
})

func get(t testing.TB, c *http.Client, url string) (int, string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 {
		t.Errorf("%s: served over HTTP/%d, want HTTP/2", url, resp.ProtoMajor)
	}
	return resp.StatusCode, string(body), err
}

func TestHTTP(t *testing.T) {
	ca := newTestCA(t, td)
	payments := newStaticSource(ca.svid(t, paymentID), ca.bundle())
	mux := http.NewServeMux()
	mux.Handle("/pay", RequirePeer(AuthorizeID(ordersID), whoami))
	mux.Handle("/stock", RequirePeer(AuthorizeOneOf(ordersID, invID), whoami))
	mux.Handle("/whoami", whoami)
	base := startHTTPServer(t, NewHTTPServer("", mux, payments, AuthorizeMemberOf(td)))

	orders := NewHTTPClient(newStaticSource(ca.svid(t, ordersID), ca.bundle()), AuthorizeID(paymentID))
	inventory := NewHTTPClient(newStaticSource(ca.svid(t, invID), ca.bundle()), AuthorizeID(paymentID))
	for _, tc := range []struct {
		name     string
		client   *http.Client
		path     string
		wantCode int
		wantBody string
	}{
		{"orders may pay", orders, "/pay", http.StatusOK, ordersID.String()},
		{"inventory may not pay", inventory, "/pay", http.StatusForbidden, "forbidden\n"},
		{"both may read stock", inventory, "/stock", http.StatusOK, invID.String()},
		{"PeerID names the caller", inventory, "/whoami", http.StatusOK, invID.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, err := get(t, tc.client, base+tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode || body != tc.wantBody {
				t.Errorf("GET %s = %d %q, want %d %q", tc.path, code, body, tc.wantCode, tc.wantBody)
			}
		})
	}

	t.Run("client refuses a server with another ID", func(t *testing.T) {
		wrong := NewHTTPClient(newStaticSource(ca.svid(t, ordersID), ca.bundle()), AuthorizeID(invID))
		_, err := wrong.Get(base + "/whoami")
		wantAuthError(t, "client", err, paymentID, ReasonNotAuthorized)
	})
}

func TestRequirePeerWithoutIdentity(t *testing.T) {
	h := RequirePeer(AuthorizeAny(), whoami)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("plain HTTP request: %d, want 401", rec.Code)
	}

	ca := newTestCA(t, td)
	r := httptest.NewRequest("GET", "/", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: ca.svid(t, ordersID).Certificates}
	if id, ok := PeerID(r); !ok || id != ordersID {
		t.Errorf("PeerID = %s, %v; want %s", id, ok, ordersID)
	}
	rec = httptest.NewRecorder()
	RequirePeer(nil, whoami).ServeHTTP(rec, r)
	if rec.Code != http.StatusForbidden {
		t.Errorf("nil authorizer: %d, want 403", rec.Code)
	}
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}
	if id, ok := PeerID(r); ok {
		t.Errorf("PeerID of a certificate without a URI SAN = %s, want false", id)
	}
}

// closedConns counts connections a server reports closed.
type closedConns struct {
	mu      sync.Mutex
	n       int
	changed chan struct{}
}

func newClosedConns() *closedConns { return &closedConns{changed: make(chan struct{})} }

func (c *closedConns) hook(_ net.Conn, s http.ConnState) {
	if s != http.StateClosed {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *closedConns) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func (c *closedConns) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func TestConnWatcherSweep(t *testing.T) {
	ca := newTestCA(t, td)
	orders := ca.svid(t, ordersID)
	rc := &mutableRevocations{}
	srv := NewHTTPServer("", whoami, newStaticSource(ca.svid(t, paymentID), ca.bundle()), AuthorizeAny(), WithRevocationChecker(rc))
	closed := newClosedConns()
	srv.ConnState = closed.hook
	w := NewConnWatcher(rc)
	w.WatchHTTPServer(srv)
	base := startHTTPServer(t, srv)
	client := NewHTTPClient(newStaticSource(orders, ca.bundle()), AuthorizeID(paymentID))

	if _, _, err := get(t, client, base); err != nil {
		t.Fatal(err)
	}
	if w.Len() != 1 {
		t.Fatalf("watching %d connections, want 1", w.Len())
	}
	if n := w.Sweep(); n != 0 {
		t.Fatalf("Sweep closed %d connections before any revocation", n)
	}

	rc.set(NewRevocationList([]RevokedSerial{{TrustDomain: td, Serial: orders.Certificates[0].SerialNumber}}, nil))
	if n := w.Sweep(); n != 1 {
		t.Fatalf("Sweep closed %d connections, want 1", n)
	}
	waitFor(t, closed.Changed, "the server to close the connection", func() bool { return closed.count() == 1 })
	if w.Len() != 0 {
		t.Errorf("still watching %d connections", w.Len())
	}
	// A new connection is refused at the handshake.
	if _, _, err := get(t, client, base); err == nil {
		t.Error("the revoked client connected again")
	}
}

// TestConnWatcherRun revokes a connected client through the Workload API:
// the open HTTP/2 connection is closed without any other action.
func TestConnWatcherRun(t *testing.T) {
	ca := newTestCA(t, td)
	api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
	payments, orders := ca.svid(t, paymentID), ca.svid(t, ordersID)
	api.Push(ca.response(t, []*x509svid.SVID{payments}))
	src := newSource(t, api)

	srv := NewHTTPServer("", whoami, src, AuthorizeAny())
	closed := newClosedConns()
	srv.ConnState = closed.hook
	w := NewConnWatcher(src)
	w.WatchHTTPServer(srv)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		w.Run(ctx, src.Changed)
	}()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})
	base := startHTTPServer(t, srv)
	client := NewHTTPClient(newStaticSource(orders, ca.bundle()), AuthorizeID(paymentID))
	if _, _, err := get(t, client, base); err != nil {
		t.Fatal(err)
	}

	api.Push(ca.response(t, []*x509svid.SVID{payments}, ca.crl(t, false, orders.Certificates[0].SerialNumber)))
	waitFor(t, closed.Changed, "the revoked client's connection to close", func() bool { return closed.count() == 1 })
}
