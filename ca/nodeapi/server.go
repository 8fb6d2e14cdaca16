package nodeapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/internal/selfcert"
	"github.com/badge-dev/badge/internal/connlimit"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/nodeproto"
	"github.com/badge-dev/badge/storage"
)

// Authority is what the agent listener serves from: *ca.Authority.
type Authority interface {
	Snapshot() *ca.Snapshot
	TrustDomain() spiffeid.TrustDomain
	TTLs() ca.TTLs
	// ServerEntry and SignX509SVID give the listener its certificate.
	ServerEntry(hosts []string) (*ca.Entry, error)
	SignX509SVID(ctx context.Context, s *ca.Snapshot, e *ca.Entry) (*ca.X509SVID, error)
	// AttestJoinToken records an attestation by join token and signs its
	// node SVID; RegisterNode records one by x509pop, SignNodeSVID signs.
	AttestJoinToken(ctx context.Context, token string, csr []byte, ttl time.Duration) (storage.Node, *ca.X509SVID, error)
	RegisterNode(ctx context.Context, att ca.NodeAttestation) (storage.Node, error)
	SignNodeSVID(ctx context.Context, name string, csr []byte, ttl time.Duration) (*ca.X509SVID, error)
	SignCSR(ctx context.Context, s *ca.Snapshot, e *ca.Entry, csr []byte) (*ca.X509SVID, error)
	SignJWTSVID(ctx context.Context, s *ca.Snapshot, e *ca.Entry, audience []string) (*ca.JWTSVID, error)
	ValidateJWTSVID(s *ca.Snapshot, token, audience string) (*ca.JWTClaims, error)
	Audit(ctx context.Context, ev ca.AuditEvent) error
}

// Metrics counts what the listener does; internal/metrics implements it.
type Metrics interface {
	// NodeAttestation counts an Attest call by method (MethodJoinToken,
	// MethodX509PoP) and result (ResultOK, ...).
	NodeAttestation(method, result string)
	// NodeSigned counts a credential signed for a node, by kind
	// (KindNodeSVID, KindX509, KindJWT).
	NodeSigned(kind string)
	// NodesConnected reports the number of nodes with an open connection.
	NodesConnected(n int)
}

// Label values of Metrics.
const (
	MethodJoinToken = storage.AttestJoinToken
	MethodX509PoP   = storage.AttestX509PoP
	ResultOK        = "ok"
	ResultRefused   = "refused"
	ResultLimited   = "limited"
	ResultInvalid   = "invalid"
	ResultError     = "error"
	KindNodeSVID    = "node_svid"
	KindX509        = "x509"
	KindJWT         = "jwt"
)

// Methods, Results and Kinds are the label values of Metrics.
var (
	Methods = []string{MethodJoinToken, MethodX509PoP}
	Results = []string{ResultOK, ResultRefused, ResultLimited, ResultInvalid, ResultError}
	Kinds   = []string{KindNodeSVID, KindX509, KindJWT}
)

type noMetrics struct{}

func (noMetrics) NodeAttestation(string, string) {}
func (noMetrics) NodeSigned(string)              {}
func (noMetrics) NodesConnected(int)             {}

// Config configures a Server. Only Authority is required.
type Config struct {
	// Authority signs and holds the state served. Required.
	Authority Authority
	// NodeCAs are the CAs of host certificates (x509pop, --node-ca). Nil:
	// x509pop is off; SetNodeCAs changes them while the server runs.
	NodeCAs []*x509.Certificate
	// NodeSVIDTTL is the lifetime of node SVIDs. Default
	// ca.DefaultNodeSVIDTTL; between ca.MinNodeSVIDTTL and
	// ca.MaxNodeSVIDTTL.
	NodeSVIDTTL time.Duration
	// Hosts are DNS names and IP addresses for the listener's certificate;
	// agents identify the server by its SPIFFE ID, so none are needed.
	Hosts []string
	// Limits bound what one node or address can take.
	Limits Limits
	// AuditInterval is the interval over which refused attestations of
	// one address are counted into one audit record. Default 1m.
	AuditInterval time.Duration
	// Metrics counts attestations, signings and connected nodes. Nil:
	// none.
	Metrics Metrics
	// Time returns the current time. Default time.Now.
	Time func() time.Time
	// Logger receives refusals, attestations and errors. Nil discards
	// them.
	Logger *slog.Logger
}

// Server serves the Node service.
type Server struct {
	auth     Authority
	log      *slog.Logger
	now      func() time.Time
	metrics  Metrics
	nodeTTL  time.Duration
	cert     *selfcert.Source
	tlsBase  *tls.Config
	nodeCAs  atomic.Pointer[x509.CertPool]
	grpc     *grpc.Server
	lim      *limiter
	attempts *attempts
	audit    *refusals
	conns    *registry
	conncfg  connlimit.Config
	revision atomic.Uint64
	euid     uint32

	stop     chan struct{} // closed by Shutdown
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// New returns a Server with its first certificate signed.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Authority == nil {
		return nil, errors.New("nodeapi: Config.Authority is required")
	}
	if cfg.NodeSVIDTTL == 0 {
		cfg.NodeSVIDTTL = ca.DefaultNodeSVIDTTL
	}
	if cfg.NodeSVIDTTL < ca.MinNodeSVIDTTL || cfg.NodeSVIDTTL > ca.MaxNodeSVIDTTL {
		return nil, errors.New("nodeapi: Config.NodeSVIDTTL must be between " + ca.MinNodeSVIDTTL.String() + " and " + ca.MaxNodeSVIDTTL.String())
	}
	if cfg.Time == nil {
		cfg.Time = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.AuditInterval <= 0 {
		cfg.AuditInterval = time.Minute
	}
	lim := cfg.Limits.withDefaults()
	s := &Server{
		auth: cfg.Authority, log: cfg.Logger, now: cfg.Time, metrics: cfg.Metrics, nodeTTL: cfg.NodeSVIDTTL,
		lim:      newLimiter(lim, cfg.Logger, cfg.Time),
		attempts: newAttempts(lim.AttestBackoff, cfg.Time),
		audit:    newRefusals(cfg.AuditInterval),
		conns:    newRegistry(cfg.Metrics.NodesConnected),
		conncfg:  connlimit.Config{Max: lim.MaxConns, MaxPerAddr: lim.MaxConnsPerAddr, Name: "agent", Logger: cfg.Logger, LogInterval: lim.LogInterval},
		euid:     uint32(os.Geteuid()),
		stop:     make(chan struct{}),
	}
	s.SetNodeCAs(cfg.NodeCAs)
	entry, err := cfg.Authority.ServerEntry(cfg.Hosts)
	if err != nil {
		return nil, err
	}
	if s.cert, err = selfcert.New(ctx, selfcert.Config{Signer: cfg.Authority, Entry: entry, Name: "agent", Time: cfg.Time, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	s.tlsBase = &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: s.cert.GetCertificate,
		// Requested, not required: an agent with a join token has none.
		// Every check is in VerifyConnection (see creds).
		ClientAuth: tls.RequestClientCert,
		// Every connection proves possession of its key afresh.
		SessionTicketsDisabled: true,
		NextProtos:             []string{"h2"},
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(creds{s}),
		grpc.ConnectionTimeout(lim.HandshakeTimeout),
		grpc.MaxHeaderListSize(lim.MaxHeaderBytes),
		grpc.MaxRecvMsgSize(maxRecvMsg),
		grpc.MaxConcurrentStreams(uint32(maxStreamsPerConn)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.ChainUnaryInterceptor(s.unary),
		grpc.ChainStreamInterceptor(s.stream),
	)
	nodeproto.RegisterNodeServer(s.grpc, &handler{s: s})
	return s, nil
}

const (
	// maxRecvMsg bounds a request: a CSR is at most ca.MaxCSRLen, a JWT
	// ca.MaxJWTLen.
	maxRecvMsg = 64 << 10
	// maxStreamsPerConn bounds the calls in progress on one connection.
	maxStreamsPerConn = 256
)

// SetNodeCAs replaces the CAs of host certificates (x509pop); nil or empty
// turns x509pop off. Connections already attested are not affected.
func (s *Server) SetNodeCAs(cas []*x509.Certificate) {
	if len(cas) == 0 {
		s.nodeCAs.Store(nil)
		return
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	s.nodeCAs.Store(pool)
}

// Serve answers agents on l until Shutdown. It returns nil after
// Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.wg.Add(2)
	go s.watch()
	go s.flushAudit()
	err := s.grpc.Serve(connlimit.Listen(l, s.conncfg))
	select {
	case <-s.stop:
		return nil
	default:
	}
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown ends every Sync stream, stops accepting and waits for calls in
// progress until ctx is done, then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		err = ctx.Err()
	}
	s.wg.Wait()
	return err
}

// ConnectedNodes returns the number of nodes with an open connection.
func (s *Server) ConnectedNodes() int { return s.conns.connected() }

// NodeConnections returns the number of open connections of the named
// node.
func (s *Server) NodeConnections(name string) int { return s.conns.nodeConns(name) }

// watch ends the connections of nodes that may no longer act, on every
// new snapshot: evicted, node SVID revoked or its ID blocked.
func (s *Server) watch() {
	defer s.wg.Done()
	for {
		snap := s.auth.Snapshot()
		now := s.now()
		s.conns.each(func(c *trackedConn) {
			if err := s.checkNode(snap, c.v, now); err != nil {
				s.log.Warn("closing node connection", slog.String(logkey.Node, c.node), slog.String("remote", c.RemoteAddr().String()),
					slog.String("reason", err.Error()), slog.Bool(logkey.Audit, true))
				c.end(err)
			}
		})
		select {
		case <-snap.Done():
		case <-s.stop:
			return
		}
	}
}

// refusedHandshake logs a handshake refused for its certificate.
func (s *Server) refusedHandshake(remote net.Addr, err error) {
	addr := connlimit.AddressKey(remote.String())
	if s.lim.logOnce("addr:" + addr) {
		s.log.Warn("agent handshake refused", slog.String("remote", remote.String()), slog.Any(logkey.Error, err),
			slog.Duration("report_interval", s.lim.lim.LogInterval))
	}
}

// authorize lets a call through if the connection's class may make it,
// and for a node connection if the node may still act.
func (s *Server) authorize(ctx context.Context, method string) (*peerInfo, error) {
	p, ok := peerOf(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "nodeapi: no TLS peer")
	}
	if method == nodeproto.Node_Attest_FullMethodName {
		if p.class == Node {
			return nil, status.Errorf(codes.PermissionDenied, "node %s is attested already: renew its node SVID with RenewNode", p.node)
		}
		return p, nil
	}
	if p.class != Node {
		return nil, status.Errorf(codes.PermissionDenied, "%s needs a node SVID; this connection is %s: attest first", method, p.class)
	}
	if err := s.checkNode(s.auth.Snapshot(), p.verdict, s.now()); err != nil {
		return nil, nodeStatus(err)
	}
	return p, nil
}

func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	p, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if p.class == Node {
		done, err := s.lim.startCall(p.node)
		if err != nil {
			return nil, err
		}
		defer done()
	}
	return handler(ctx, req)
}

func (s *Server) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	p, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	done, err := s.lim.startStream(p.node)
	if err != nil {
		return err
	}
	defer done()
	return handler(srv, ss)
}
