package sdk

import (
	"crypto/x509"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// NewHTTPClient returns an HTTP client that presents src's current
// X509-SVID and talks only to servers that authz accepts (see
// ClientConfig). Use https:// URLs; the host name is used to connect, not
// to identify the server. The client's transport is a clone of
// http.DefaultTransport (proxy settings from the environment included),
// with HTTP/2 enabled.
func NewHTTPClient(src Source, authz Authorizer, opts ...ConfigOption) *http.Client {
	t := &http.Transport{}
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		t = dt.Clone()
	}
	t.TLSClientConfig = ClientConfig(src, authz, opts...)
	t.ForceAttemptHTTP2 = true
	return &http.Client{Transport: t}
}

// NewHTTPServer returns an HTTP server for addr whose TLS configuration is
// ServerConfig(src, authz, opts...): every connection is authenticated
// with mutual TLS and authz admits callers at the connection level. Start
// it with ListenAndServeTLS("", "") or ServeTLS(l, "", ""), and narrow
// access per route with RequirePeer. The server sets a ReadHeaderTimeout of
// 10s; other fields are left for the caller.
func NewHTTPServer(addr string, h http.Handler, src Source, authz Authorizer, opts ...ConfigOption) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		TLSConfig:         ServerConfig(src, authz, opts...),
		ReadHeaderTimeout: 10 * time.Second,
	}
}

// PeerID returns the SPIFFE ID of the client that sent r, as verified
// during the TLS handshake, and false if r did not come over TLS with a
// client certificate carrying a SPIFFE ID. It is trustworthy only on
// servers configured with ServerConfig or NewHTTPServer, which refuse
// clients whose certificate does not verify.
func PeerID(r *http.Request) (spiffeid.ID, bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return spiffeid.ID{}, false
	}
	id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, false
	}
	return id, true
}

// RequirePeer is middleware that passes a request to next only if its
// client's SPIFFE ID (see PeerID) is accepted by authz. It answers 401
// Unauthorized when the request carries no SPIFFE ID and 403 Forbidden
// when authz refuses it; the response does not say why, so that the
// policy is not disclosed. Wrap individual routes to give them different
// policies. authz receives the certificates the client presented, leaf
// first, as its only chain: they were verified during the handshake.
func RequirePeer(authz Authorizer, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := PeerID(r)
		if !ok {
			http.Error(w, "client SPIFFE ID required", http.StatusUnauthorized)
			return
		}
		if authz == nil || authz(id, [][]*x509.Certificate{r.TLS.PeerCertificates}) != nil {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
