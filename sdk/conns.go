package sdk

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// A ConnWatcher closes established connections whose peer has been
// revoked since its handshake. TLS checks a peer once, when the
// connection is set up; a long-lived connection (HTTP/2, gRPC) would
// otherwise outlive the revocation of its peer.
//
// Register connections with Track (or WatchHTTPServer, or sdkgrpc's
// WatchConns), then call Sweep after each change of the revocation state,
// or let Run do it:
//
//	w := sdk.NewConnWatcher(src)
//	go w.Run(ctx, src.Changed)
//
// Only revocation is re-checked, not the chain or the authorizer.
type ConnWatcher struct {
	rc RevocationChecker

	mu    sync.Mutex
	conns map[net.Conn]watchedConn
}

type watchedConn struct {
	id   spiffeid.ID
	leaf *x509.Certificate
}

// NewConnWatcher returns a watcher that checks connections against rc,
// typically an *X509Source.
func NewConnWatcher(rc RevocationChecker) *ConnWatcher {
	return &ConnWatcher{rc: rc, conns: make(map[net.Conn]watchedConn)}
}

// Track watches conn, whose completed handshake is described by cs, until
// untrack is called or Sweep closes it. Connections without a peer
// certificate carrying a SPIFFE ID are not tracked. Closing a *tls.Conn
// closes its underlying connection, so a blocked write cannot delay it.
func (w *ConnWatcher) Track(conn net.Conn, cs tls.ConnectionState) (untrack func()) {
	if len(cs.PeerCertificates) == 0 {
		return func() {}
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return func() {}
	}
	w.mu.Lock()
	w.conns[conn] = watchedConn{id: id, leaf: cs.PeerCertificates[0]}
	w.mu.Unlock()
	return func() { w.untrack(conn) }
}

func (w *ConnWatcher) untrack(conn net.Conn) {
	w.mu.Lock()
	delete(w.conns, conn)
	w.mu.Unlock()
}

// Len returns the number of connections being watched.
func (w *ConnWatcher) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.conns)
}

// Sweep checks every tracked connection against the current revocation
// state, closes and forgets those whose peer is refused, and returns how
// many it closed.
func (w *ConnWatcher) Sweep() int {
	var refused []net.Conn
	w.mu.Lock()
	for c, p := range w.conns {
		if w.rc.CheckRevocation(p.id, p.leaf) != nil {
			refused = append(refused, c)
			delete(w.conns, c)
		}
	}
	w.mu.Unlock()
	for _, c := range refused {
		if tc, ok := c.(*tls.Conn); ok {
			c = tc.NetConn()
		}
		c.Close()
	}
	return len(refused)
}

// Run calls Sweep now and after every close of the channel that changed
// returns, until ctx is done. Pass the method value src.Changed of an
// X509Source.
func (w *ConnWatcher) Run(ctx context.Context, changed func() <-chan struct{}) {
	for {
		ch := changed()
		w.Sweep()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// WatchHTTPServer tracks the TLS connections of srv from their first
// request until they close or are hijacked. It chains any ConnState hook
// already set; call it before the server starts.
func (w *ConnWatcher) WatchHTTPServer(srv *http.Server) {
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, state http.ConnState) {
		switch state {
		case http.StateActive:
			if tc, ok := c.(*tls.Conn); ok {
				w.mu.Lock()
				_, known := w.conns[c]
				w.mu.Unlock()
				if !known {
					w.Track(c, tc.ConnectionState())
				}
			}
		case http.StateClosed, http.StateHijacked:
			w.untrack(c)
		}
		if prev != nil {
			prev(c, state)
		}
	}
}
