// Package sdk lets a Go service authenticate its callers, and the services
// it calls, by SPIFFE ID over mutual TLS, with certificates that a badge
// server rotates every few minutes. It imports nothing else from badge.
//
// # Model
//
// A workload does not hold keys or configure certificates. It connects to
// the Workload API on a local Unix socket, where the badge server
// recognises the process and streams it an X509-SVID (a short-lived
// certificate whose URI SAN is the workload's SPIFFE ID, such as
// spiffe://example.org/payments), the trust bundles to verify peers with,
// and the current certificate revocation lists. Before a certificate is
// half-way to expiry, the next one arrives on the same stream.
//
// The sources talk only to a Workload API server run by root, by the
// caller's own uid or by the uid named with WithServerUID (or
// BADGE_SERVER_UID). They read that uid from the connected socket
// (SO_PEERCRED), so another local user who puts a socket of their own at
// the path, to hand out their own trust bundle, is refused with an
// *UntrustedServerError (ErrUntrustedServer).
//
// X509Source keeps the newest of these in memory. The tls.Config values
// returned by ServerConfig and ClientConfig read the source on every
// handshake, so a rotation takes effect at the next handshake without
// rebuilding a listener, server or client. If the server goes away the
// source keeps presenting its last certificate until it expires and
// reconnects with backoff; Status reports the state.
//
// A peer is accepted when, on that handshake:
//
//  1. it presents an X509-SVID whose chain verifies against the bundle of
//     its own trust domain (TLS 1.3, both sides authenticate);
//  2. its certificate is not revoked: its serial is not on a verified CRL
//     of its trust domain, and its SPIFFE ID is not blocked since before
//     the certificate was issued (RevocationList, an O(1) lookup);
//  3. the Authorizer accepts its SPIFFE ID: one ID (AuthorizeID), one of
//     several (AuthorizeOneOf), a trust domain (AuthorizeMemberOf), anyone
//     (AuthorizeAny) or a function (AuthorizeFunc).
//
// Host names play no part. A refusal is an *AuthorizationError naming the
// peer and the Reason.
//
// # Security invariant
//
// All three checks run in tls.Config.VerifyConnection, which crypto/tls
// also calls when a session is resumed. VerifyPeerCertificate, where
// go-spiffe's tlsconfig runs its authorizers, is skipped on resumption, so
// a peer revoked or de-authorized after its first handshake could come
// back with a session ticket. Do not move these checks, and do not
// replace VerifyConnection on a returned configuration.
//
// A handshake is a point in time: an established connection outlives a
// later revocation. ConnWatcher closes such connections.
//
// # Usage
//
// A service that only orders may call:
//
//	src, err := sdk.NewX509Source(ctx) // SPIFFE_ENDPOINT_SOCKET, BADGE_SOCKET or /run/badge/workload.sock
//	if err != nil {
//		return err
//	}
//	defer src.Close()
//
//	orders := spiffeid.RequireFromString("spiffe://example.org/orders")
//	mux := http.NewServeMux()
//	mux.Handle("POST /pay", sdk.RequirePeer(sdk.AuthorizeID(orders), payHandler))
//	srv := sdk.NewHTTPServer(":8443", mux, src, sdk.AuthorizeMemberOf(orders.TrustDomain()))
//	return srv.ListenAndServeTLS("", "")
//
// And its client, which talks only to payments:
//
//	payments := spiffeid.RequireFromString("spiffe://example.org/payments")
//	client := sdk.NewHTTPClient(src, sdk.AuthorizeID(payments))
//	resp, err := client.Post("https://payments.internal:8443/pay", "application/json", body)
//
// Handlers learn the caller with PeerID. For gRPC, see package
// github.com/badge-dev/badge/sdk/sdkgrpc. ServerConfig and ClientConfig
// serve any other protocol over TLS. Runnable programs are in
// sdk/examples/orders and sdk/examples/payments.
//
// # JWT-SVIDs
//
// Where a proxy or a queue terminates TLS, the caller proves itself with a
// short-lived token instead: NewJWTSource fetches JWT-SVIDs (cached per
// audience until half their life) and validates them locally against the
// JWT bundles it follows (go-spiffe's jwtsvid.ParseAndValidate; each valid
// token cached until it expires). RequireJWT guards an HTTP handler with a
// bearer token for an audience and an Authorizer on its subject;
// NewJWTTransport adds the token to outgoing requests. Local validation
// cannot see revocations of SPIFFE IDs; the Workload API's ValidateJWTSVID
// and the server's introspection endpoint can, and a token lives at most
// five minutes.
//
// # Observability
//
// The SDK does not log unless given a logger (WithLogger). WithTrace
// installs hooks called on every handshake; Status and Changed expose the
// source's state.
//
// # Interoperability
//
// X509Source implements go-spiffe's x509svid.Source and x509bundle.Source,
// so it also works with go-spiffe's spiffetls and tlsconfig packages
// (without the resumption guarantee above). Authorizer has the same
// underlying type as tlsconfig.Authorizer. Any Source works with
// ServerConfig and ClientConfig, go-spiffe's workloadapi.X509Source
// included; if it also implements RevocationChecker, it is consulted.
package sdk
