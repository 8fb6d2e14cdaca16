// Package public serves the public TCP listener of badge (--listen): what
// parties off the Workload API socket need to work with JWT-SVIDs.
//
//	GET  /healthz                           "ok": the process serves (liveness)
//	GET  /readyz                            200 when ready, else 503, one line per check (Config.Readyz)
//	GET  /metrics                           Prometheus metrics (Config.Metrics)
//	GET  /.well-known/openid-configuration  OpenID Connect discovery (when an issuer is configured)
//	GET  /.well-known/jwks.json             the JWT bundle (RFC 7517 JWK Set)
//	GET  /crl                               the X.509 revocation list, DER (RFC 5280)
//	POST /introspect                        RFC 7662 token introspection; mutual TLS with an X.509-SVID
//	POST /oauth2/token                      RFC 6749 §4.4 client credentials; a JWT-SVID for the audience
//
// The listener speaks only HTTPS. Its certificate is an X.509-SVID the
// authority issues to itself, spiffe://TRUST_DOMAIN/badge/server, with the
// configured DNS names and IP addresses, renewed at half its life like any
// SVID; clients verify it with the trust bundle (badge bundle show).
// Verifiers that need a publicly trusted certificate (a cloud IAM
// federation) reach the discovery document and JWKS through a proxy or a
// copy that carries one; both documents are public and static between key
// changes.
//
// Client certificates are requested but optional: discovery, the JWKS, the
// token endpoint and health are public. A client that presents one must
// present a valid, unrevoked X.509-SVID of the trust domain, checked in
// tls.Config.VerifyConnection on every handshake (resumed ones included);
// /introspect requires one and checks it again, with revocation, on every
// request.
//
// Security invariants: the client secret is checked only against its slow
// hash, at a bounded rate: per (address, client) and per address a delay
// that doubles with each failure, a budget of checks per address, and an
// overall budget for addresses that have failed, so that neither guessing
// nor random client IDs can burn the CPU, and a guesser elsewhere can
// neither lock out nor starve a client that presents its secret. Every
// issued token is an audit record; refusals are audit records aggregated
// per (address, client) and interval, with a count.
package public

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/internal/selfcert"
	"github.com/badge-dev/badge/internal/connlimit"
	"github.com/badge-dev/badge/internal/jsonout"
	"github.com/badge-dev/badge/storage"
)

// Authority is what the public listener serves from: *ca.Authority.
type Authority interface {
	// Snapshot returns the current bundles and revocations.
	Snapshot() *ca.Snapshot
	// JWTIssuer is the iss of the tokens and the OpenID Connect issuer;
	// empty when none is configured.
	JWTIssuer() string
	// ValidateJWTSVID checks a token (audience "" skips the aud check).
	ValidateJWTSVID(s *ca.Snapshot, token, audience string) (*ca.JWTClaims, error)
	// ServerEntry and SignX509SVID give the listener its certificate.
	ServerEntry(hosts []string) (*ca.Entry, error)
	SignX509SVID(ctx context.Context, s *ca.Snapshot, e *ca.Entry) (*ca.X509SVID, error)
}

// Clients authenticates OAuth clients and signs their tokens:
// *ca.Authority.
type Clients interface {
	// AuthenticateClient fails with ca.ErrClientAuth for an unknown client
	// or a wrong secret.
	AuthenticateClient(ctx context.Context, id, secret string) (storage.Client, error)
	// SignClientJWTSVID fails with ca.ErrBlocked for a blocked ID and with
	// a *ca.InvalidError for an unacceptable audience.
	SignClientJWTSVID(ctx context.Context, s *ca.Snapshot, c storage.Client, audience []string) (*ca.JWTSVID, error)
}

// Config configures a Server.
type Config struct {
	// Authority signs the listener's certificate and validates tokens.
	// Required.
	Authority Authority
	// Clients serves the token endpoint. Nil: /oauth2/token answers 404.
	Clients Clients
	// JWKSMaxAge is how long verifiers may cache the JWKS (its
	// Cache-Control max-age, whole seconds, at least 1). It must be
	// shorter than the time a new JWT key is published before it signs
	// (ca.Config.JWTPrepareLead), so that a cached copy holds the key
	// before any token it signs. Zero: DefaultJWKSMaxAge.
	JWKSMaxAge time.Duration
	// Hosts are the DNS names and IP addresses put in the listener's
	// certificate. Clients identify the server by its SPIFFE ID; generic
	// HTTPS clients need the host name they dial here.
	Hosts []string
	// SecretChecksPerSecond and SecretCheckBurst bound the rate of client
	// secret checks (each an argon2id hash) for requests from addresses
	// with a recent failure, over all of them. Addresses without failures
	// do not draw on this budget. Defaults 10 and 20.
	SecretChecksPerSecond float64
	SecretCheckBurst      int
	// AddressChecksPerSecond and AddressCheckBurst bound the rate of
	// secret checks from one address (an IPv4 address, or an IPv6 /64).
	// Defaults 2 and 10.
	AddressChecksPerSecond float64
	AddressCheckBurst      int
	// AuditInterval is the interval over which refused token requests of
	// one (address, client) are counted into one audit line. Default 1m.
	AuditInterval time.Duration
	// MaxConns bounds the connections the listener holds in all, and
	// MaxConnsPerAddr those of one client IP address (0: no limit and
	// DefaultMaxConnsPerAddr; negative: no limit). Over a limit a
	// connection is closed at once.
	MaxConns        int
	MaxConnsPerAddr int
	// HandshakeTimeout bounds the TLS handshake and the reading of a
	// request's header. 0: 10s.
	HandshakeTimeout time.Duration
	// Time returns the current time (rate limits, token lifetimes).
	// Default time.Now.
	Time func() time.Time
	// Logger receives the audit trail and errors. Nil discards them.
	Logger *slog.Logger
	// Readyz serves GET /readyz (internal/metrics). Nil: /readyz answers
	// like /healthz.
	Readyz http.Handler
	// Metrics serves GET /metrics (internal/metrics). Nil: 404.
	Metrics http.Handler
}

// Limits of requests to the public listener.
const (
	// DefaultMaxConnsPerAddr is the connections one client address may hold.
	DefaultMaxConnsPerAddr = 64
	maxBodyBytes           = 64 << 10
	// DefaultJWKSMaxAge is how long verifiers may cache the JWKS by
	// default. A new key must be published longer than this before it
	// signs.
	DefaultJWKSMaxAge = time.Minute
)

// Server is the public HTTPS listener.
type Server struct {
	auth    Authority
	clients Clients
	log     *slog.Logger
	now     func() time.Time
	entry   *ca.Entry
	http    *http.Server

	discovery  []byte // nil without an issuer
	jwksMaxAge int    // seconds

	cert *selfcert.Source

	lim      *limiter
	audit    *auditLog
	checking chan struct{} // semaphore: secret checks running at once

	stop     chan struct{} // closed by Shutdown: ends the audit flusher
	stopOnce sync.Once
	conns    connlimit.Config
}

// New returns a Server with its first certificate signed.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Authority == nil {
		return nil, errors.New("public: Config.Authority is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Time
	if now == nil {
		now = time.Now
	}
	entry, err := cfg.Authority.ServerEntry(cfg.Hosts)
	if err != nil {
		return nil, fmt.Errorf("public: listener identity: %w", err)
	}
	rate, burst := cfg.SecretChecksPerSecond, cfg.SecretCheckBurst
	if rate <= 0 {
		rate = 10
	}
	if burst <= 0 {
		burst = 20
	}
	addrRate, addrBurst := cfg.AddressChecksPerSecond, cfg.AddressCheckBurst
	if addrRate <= 0 {
		addrRate = 2
	}
	if addrBurst <= 0 {
		addrBurst = 10
	}
	interval := cfg.AuditInterval
	if interval <= 0 {
		interval = time.Minute
	}
	s := &Server{
		auth: cfg.Authority, clients: cfg.Clients, log: log, now: now, entry: entry,
		lim:      newLimiter(now, rate, float64(burst), addrRate, float64(addrBurst)),
		audit:    newAuditLog(log, interval, now()),
		checking: make(chan struct{}, min(runtime.GOMAXPROCS(0), 4)),
		stop:     make(chan struct{}),
		conns:    connlimit.Config{Max: cfg.MaxConns, MaxPerAddr: cfg.MaxConnsPerAddr, Name: "public", Logger: log},
	}
	s.jwksMaxAge = max(int(cmp.Or(cfg.JWKSMaxAge, DefaultJWKSMaxAge)/time.Second), 1)
	if s.conns.MaxPerAddr == 0 {
		s.conns.MaxPerAddr = DefaultMaxConnsPerAddr
	}
	handshake := cfg.HandshakeTimeout
	if handshake <= 0 {
		handshake = 10 * time.Second
	}
	if iss := cfg.Authority.JWTIssuer(); iss != "" {
		if s.discovery, err = json.MarshalIndent(s.discoveryDoc(iss), "", "  "); err != nil {
			return nil, err
		}
	}
	if s.cert, err = selfcert.New(ctx, selfcert.Config{Signer: cfg.Authority, Entry: entry, Name: "public", Time: now, Logger: log}); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	if cfg.Readyz != nil {
		mux.Handle("GET /readyz", cfg.Readyz)
	} else {
		mux.HandleFunc("GET /readyz", s.healthz)
	}
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	mux.HandleFunc("GET /.well-known/openid-configuration", s.openidConfiguration)
	mux.HandleFunc("GET /.well-known/jwks.json", s.jwks)
	mux.HandleFunc("GET /crl", s.crl)
	mux.HandleFunc("POST /introspect", s.introspect)
	mux.HandleFunc("POST /oauth2/token", s.token)
	s.http = &http.Server{
		Handler:           mux,
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: handshake, // also the TLS handshake's deadline
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Handler returns the HTTP handler, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Serve answers HTTPS requests on l until Shutdown. It returns nil after
// Shutdown.
func (s *Server) Serve(l net.Listener) error {
	// Counts of refused token requests reach the audit trail even when no
	// further request comes.
	go func() {
		t := time.NewTicker(s.audit.interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				s.audit.flush(s.now().Add(s.audit.interval))
				return
			case <-t.C:
				s.audit.flushDue(s.now())
			}
		}
	}()
	err := s.http.ServeTLS(connlimit.Listen(l, s.conns), "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for requests in flight, until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	return s.http.Shutdown(ctx)
}

// TLSConfig is the listener's TLS configuration: the server's own SVID,
// renewed at half its life, and client certificates requested, optional,
// and verified on every handshake when presented.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.cert.GetCertificate,
		ClientAuth:     tls.RequestClientCert,
		// Runs on resumed sessions too, unlike VerifyPeerCertificate.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			_, err := s.verifyClient(cs.PeerCertificates)
			return err
		},
	}
}

// ErrClientCertificate is wrapped by every refusal of a client certificate.
var ErrClientCertificate = errors.New("public: client certificate refused")

// verifyClient checks a client's certificates: an X.509-SVID of the trust
// domain that verifies against the current bundle and that the snapshot's
// CheckRevocation accepts.
func (s *Server) verifyClient(certs []*x509.Certificate) (spiffeid.ID, error) {
	snap := s.auth.Snapshot()
	id, _, err := x509svid.Verify(certs, snap.Bundle(), x509svid.WithTime(s.now()))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %v", ErrClientCertificate, err)
	}
	if err := snap.CheckRevocation(ca.X509Credential(id, certs[0].SerialNumber.Text(16))); err != nil {
		return id, fmt.Errorf("%w: %v", ErrClientCertificate, err)
	}
	return id, nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// discoveryDoc is the OpenID Connect discovery document (and RFC 8414
// authorization server metadata) of the issuer. badge is not an OpenID
// provider: it publishes what verifiers of its JWT-SVIDs need.
func (s *Server) discoveryDoc(iss string) map[string]any {
	doc := map[string]any{
		"issuer":                                        iss,
		"jwks_uri":                                      iss + "/.well-known/jwks.json",
		"response_types_supported":                      []string{"id_token"},
		"subject_types_supported":                       []string{"public"},
		"id_token_signing_alg_values_supported":         []string{"ES256"},
		"claims_supported":                              []string{"sub", "aud", "exp", "iat", "iss"},
		"introspection_endpoint":                        iss + "/introspect",
		"introspection_endpoint_auth_methods_supported": []string{"tls_client_auth"},
	}
	if s.clients != nil {
		doc["token_endpoint"] = iss + "/oauth2/token"
		doc["grant_types_supported"] = []string{"client_credentials"}
		doc["token_endpoint_auth_methods_supported"] = []string{"client_secret_basic", "client_secret_post"}
	}
	return doc
}

func (s *Server) openidConfiguration(w http.ResponseWriter, _ *http.Request) {
	if s.discovery == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{
			"error":             "not_found",
			"error_description": "OpenID Connect discovery needs an issuer: start badge server with --jwt-issuer https://HOST",
		})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", s.jwksMaxAge))
	w.Write(s.discovery)
}

func (s *Server) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", s.jwksMaxAge))
	w.Write(s.auth.Snapshot().JWKS())
}

// crl serves the current revocation list, for verifiers that do not use the
// Workload API. It is signed by the intermediate CA; its CRL number grows
// with every new list.
func (s *Server) crl(w http.ResponseWriter, _ *http.Request) {
	der, _ := s.auth.Snapshot().CRL()
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(der)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	jsonout.Respond(w, code, v)
}
