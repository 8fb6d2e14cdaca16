package sdk_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/badge-dev/badge/sdk"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	orders   = spiffeid.RequireFromString("spiffe://example.org/orders")
	payments = spiffeid.RequireFromString("spiffe://example.org/payments")
)

func ExampleNewX509Source() {
	// Wait at most 30 seconds for the first SVID; the source then follows
	// rotations until Close.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := sdk.NewX509Source(ctx,
		sdk.WithAddress("unix:///run/badge/workload.sock"), // default: SPIFFE_ENDPOINT_SOCKET, then BADGE_SOCKET
		sdk.WithLogger(slog.Default()),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	svid, err := src.GetX509SVID()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("I am", svid.ID)
}

func ExampleWithSVIDID() {
	// A process registered under several IDs picks the one it serves.
	src, err := sdk.NewX509Source(context.Background(), sdk.WithSVIDID(payments))
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
}

func ExampleWithSVIDHint() {
	// Or by the operator's hint on the registration entry.
	src, err := sdk.NewX509Source(context.Background(), sdk.WithSVIDHint("internal"))
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
}

func ExampleX509Source_Status() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	// A health endpoint can report whether certificates still rotate.
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := src.Status()
		if !st.Connected {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "Workload API lost since %s (%v); certificate valid until %s\n", st.Since, st.Err, st.SVIDExpiresAt)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

func ExampleX509Source_Changed() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	// React to every rotation, e.g. to write the certificate for a
	// sidecar. Take the channel before reading the state.
	for ch := src.Changed(); ; ch = src.Changed() {
		if svid, err := src.GetX509SVID(); err == nil {
			fmt.Println("serving serial", svid.Certificates[0].SerialNumber)
		}
		<-ch
	}
}

func ExampleServerConfig() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	// Any net.Listener becomes a mutual TLS listener that admits only
	// orders. Rotation needs nothing more: each handshake reads src.
	l, err := tls.Listen("tcp", ":8443", sdk.ServerConfig(src, sdk.AuthorizeID(orders)))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
}

func ExampleClientConfig() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	conn, err := tls.Dial("tcp", "payments.internal:8443", sdk.ClientConfig(src, sdk.AuthorizeID(payments)))
	var refused *sdk.AuthorizationError
	if errors.As(err, &refused) {
		log.Fatalf("%s is not the payments service: %s", refused.ID, refused.Reason)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
}

func ExampleWithTrace() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	trace := sdk.Trace{VerifiedPeer: func(i sdk.VerifiedPeerInfo) {
		if i.Err != nil {
			slog.Warn("refused peer", "id", i.ID.String(), "resumed", i.DidResume, "error", i.Err)
		}
	}}
	_ = sdk.ServerConfig(src, sdk.AuthorizeID(orders), sdk.WithTrace(trace))
}

func ExampleWithRevocationChecker() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	// Refuse every certificate of inventory issued before now. For this
	// configuration the list replaces the source's own revocation list.
	blocked := sdk.NewRevocationList(nil, []sdk.BlockedID{{
		ID:        spiffeid.RequireFromString("spiffe://example.org/inventory"),
		RevokedAt: time.Now(),
	}})
	_ = sdk.ServerConfig(src, sdk.AuthorizeAny(), sdk.WithRevocationChecker(blocked))
}

func ExampleAuthorizeID() {
	authz := sdk.AuthorizeID(orders)
	fmt.Println(authz(orders, nil))
	fmt.Println(authz(payments, nil))
	// Output:
	// <nil>
	// sdk: peer spiffe://example.org/payments refused: not authorized: not spiffe://example.org/orders
}

func ExampleAuthorizeOneOf() {
	authz := sdk.AuthorizeOneOf(orders, payments)
	fmt.Println(authz(payments, nil))
	fmt.Println(authz(spiffeid.RequireFromString("spiffe://example.org/inventory"), nil))
	// Output:
	// <nil>
	// sdk: peer spiffe://example.org/inventory refused: not authorized: not one of [spiffe://example.org/orders spiffe://example.org/payments]
}

func ExampleAuthorizeMemberOf() {
	authz := sdk.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString("example.org"))
	fmt.Println(authz(orders, nil))
	fmt.Println(authz(spiffeid.RequireFromString("spiffe://partner.example/orders"), nil))
	// Output:
	// <nil>
	// sdk: peer spiffe://partner.example/orders refused: not authorized: not a member of trust domain example.org
}

func ExampleAuthorizeAny() {
	// Any verified, unrevoked peer: identity is then checked per request,
	// for example with RequirePeer.
	fmt.Println(sdk.AuthorizeAny()(orders, nil))
	// Output: <nil>
}

func ExampleAuthorizeFunc() {
	// Services under /billing/ may call, and go-spiffe matchers fit too:
	// sdk.AuthorizeFunc(spiffeid.MatchIDPrefix(...)).
	billing := spiffeid.RequireFromString("spiffe://example.org/billing")
	authz := sdk.AuthorizeFunc(spiffeid.MatchIDPrefix(billing))
	fmt.Println(authz(spiffeid.RequireFromString("spiffe://example.org/billing/invoices"), nil))

	err := authz(orders, nil)
	var refused *sdk.AuthorizationError
	if errors.As(err, &refused) {
		fmt.Println(refused.ID, refused.Reason)
	}
	// Output:
	// <nil>
	// spiffe://example.org/orders not authorized
}

func ExampleAuthorizationError() {
	err := sdk.AuthorizeID(orders)(payments, nil)

	var refused *sdk.AuthorizationError
	if errors.As(err, &refused) {
		switch refused.Reason {
		case sdk.ReasonRevoked, sdk.ReasonBlocked:
			fmt.Println("revoked:", refused.ID)
		case sdk.ReasonNotAuthorized:
			fmt.Println("not allowed:", refused.ID)
		}
	}
	// Output: not allowed: spiffe://example.org/payments
}

func ExampleNewRevocationList() {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	inventory := spiffeid.RequireFromString("spiffe://example.org/inventory")
	blockedAt := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	l := sdk.NewRevocationList(
		[]sdk.RevokedSerial{{TrustDomain: td, Serial: big.NewInt(0x2a)}},
		[]sdk.BlockedID{{ID: inventory, RevokedAt: blockedAt}},
	)

	fmt.Println(l.CheckRevocation(orders, &x509.Certificate{SerialNumber: big.NewInt(0x2a)}))
	fmt.Println(l.CheckRevocation(inventory, &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: blockedAt.Add(-time.Minute)}))
	fmt.Println(l.CheckRevocation(inventory, &x509.Certificate{SerialNumber: big.NewInt(8), NotBefore: blockedAt.Add(time.Minute)}))
	// Output:
	// sdk: peer spiffe://example.org/orders refused: revoked: serial 2a is revoked
	// sdk: peer spiffe://example.org/inventory refused: blocked: blocked since 2026-05-01T12:00:00Z
	// <nil>
}

func ExampleNewHTTPServer() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	mux := http.NewServeMux()
	mux.Handle("POST /pay", sdk.RequirePeer(sdk.AuthorizeID(orders), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, _ := sdk.PeerID(r)
		fmt.Fprintln(w, "accepted from", caller)
	})))
	td := spiffeid.RequireTrustDomainFromString("example.org")
	srv := sdk.NewHTTPServer(":8443", mux, src, sdk.AuthorizeMemberOf(td))
	log.Fatal(srv.ListenAndServeTLS("", ""))
}

func ExampleNewHTTPClient() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	client := sdk.NewHTTPClient(src, sdk.AuthorizeID(payments))
	resp, err := client.Post("https://payments.internal:8443/pay", "application/json", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status)
}

func ExamplePeerID() {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := sdk.PeerID(r); ok {
			fmt.Println("called by", id)
		}
	})

	// What a mutual TLS server hands the handler:
	r := httptest.NewRequest("GET", "/", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{orders.URL()}}}}
	handler.ServeHTTP(httptest.NewRecorder(), r)
	// Output: called by spiffe://example.org/orders
}

func ExampleRequirePeer() {
	pay := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "paid") })
	h := sdk.RequirePeer(sdk.AuthorizeID(orders), pay)

	for _, caller := range []spiffeid.ID{orders, payments} {
		r := httptest.NewRequest("POST", "/pay", nil)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{caller.URL()}}}}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		fmt.Println(caller, rec.Code)
	}
	// Output:
	// spiffe://example.org/orders 200
	// spiffe://example.org/payments 403
}

func ExampleNewConnWatcher() {
	ctx := context.Background()
	src, err := sdk.NewX509Source(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	srv := sdk.NewHTTPServer(":8443", http.NotFoundHandler(), src, sdk.AuthorizeAny())
	// Close the open connections of callers revoked after they connected,
	// as soon as the revocation reaches src.
	w := sdk.NewConnWatcher(src)
	w.WatchHTTPServer(srv)
	go w.Run(ctx, src.Changed)
	log.Fatal(srv.ListenAndServeTLS("", ""))
}

func ExampleConnWatcher_Track() {
	ctx := context.Background()
	src, err := sdk.NewX509Source(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	w := sdk.NewConnWatcher(src)
	go w.Run(ctx, src.Changed)

	// A server of its own protocol registers each connection after the
	// handshake.
	l, err := tls.Listen("tcp", ":9000", sdk.ServerConfig(src, sdk.AuthorizeID(orders)))
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			conn := c.(*tls.Conn)
			defer conn.Close()
			if err := conn.HandshakeContext(ctx); err != nil {
				return
			}
			untrack := w.Track(conn, conn.ConnectionState())
			defer untrack()
			// ... serve the connection ...
		}()
	}
}

func ExampleX509Source_Revocations() {
	src, err := sdk.NewX509Source(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	fmt.Println(src.Revocations().Len(), "revoked serials and blocked IDs")
}
