package nodeapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/connlimit"
)

// Class is what a connection's TLS handshake proved.
type Class int

// Classes of connections (see the package documentation).
const (
	// Anonymous presented no certificate: Attest with a join token only.
	Anonymous Class = iota
	// X509PoP presented a host certificate of a node CA: Attest only.
	X509PoP
	// Node presented a valid node SVID: every method but Attest.
	Node
)

func (c Class) String() string {
	switch c {
	case Anonymous:
		return "anonymous"
	case X509PoP:
		return "x509pop"
	case Node:
		return "node"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// ErrPeerCertificate is wrapped by every refusal of a client certificate
// in the handshake.
var ErrPeerCertificate = errors.New("nodeapi: client certificate refused")

// verdict is what the handshake of one connection proved.
type verdict struct {
	class Class
	// node is the node's name (X509PoP, Node).
	node string
	// id, serial and notAfter are those of the node SVID (Node).
	id       spiffeid.ID
	serial   string
	notAfter time.Time
	// proofNotBefore is the host certificate's NotBefore (X509PoP).
	proofNotBefore time.Time
}

// classify judges the certificates a client presented: the one check of
// every handshake, run in VerifyConnection.
func (s *Server) classify(certs []*x509.Certificate) (verdict, error) {
	if len(certs) == 0 {
		return verdict{class: Anonymous}, nil
	}
	leaf := certs[0]
	snap := s.auth.Snapshot()
	td := snap.TrustDomain()
	now := s.now()
	if hasSPIFFEID(leaf) {
		id, err := x509svid.IDFromCert(leaf)
		if err != nil {
			return verdict{}, fmt.Errorf("%w: %v", ErrPeerCertificate, err)
		}
		if !id.MemberOf(td) {
			return verdict{}, fmt.Errorf("%w: %s is not in trust domain %s", ErrPeerCertificate, id, td.Name())
		}
		name, ok := strings.CutPrefix(id.Path(), ca.NodePath)
		if !ok {
			return verdict{}, fmt.Errorf("%w: %s is not a node SVID (%s%s)", ErrPeerCertificate, id, td.IDString(), ca.NodePath+"NAME")
		}
		if _, err := ca.ParseNodeName(name); err != nil {
			return verdict{}, fmt.Errorf("%w: %s: %v", ErrPeerCertificate, id, err)
		}
		if _, _, err := x509svid.Verify(certs, snap.Bundle(), x509svid.WithTime(now)); err != nil {
			return verdict{}, fmt.Errorf("%w: node SVID of %s: %v", ErrPeerCertificate, name, err)
		}
		v := verdict{class: Node, node: name, id: id, serial: leaf.SerialNumber.Text(16), notAfter: leaf.NotAfter}
		if err := s.checkNode(snap, v, now); err != nil {
			return verdict{}, fmt.Errorf("%w: %v", ErrPeerCertificate, err)
		}
		return v, nil
	}
	roots := s.nodeCAs.Load()
	if roots == nil {
		return verdict{}, fmt.Errorf("%w: not an SVID of %s, and no node CA is configured (--node-ca) for host certificates", ErrPeerCertificate, td.Name())
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return verdict{}, fmt.Errorf("%w: host certificate %q: %v", ErrPeerCertificate, leaf.Subject.CommonName, err)
	}
	name, err := HostName(leaf)
	if err != nil {
		return verdict{}, fmt.Errorf("%w: %v", ErrPeerCertificate, err)
	}
	return verdict{class: X509PoP, node: name, proofNotBefore: leaf.NotBefore}, nil
}

// errNodeSVIDExpired is matched by the refusal of a connection whose node
// SVID expired: the agent dials again with its renewed one.
var errNodeSVIDExpired = errors.New("node SVID expired")

// checkNode reports why a node connection may no longer act: its node
// evicted, its node SVID revoked (or its ID blocked), or expired
// (errNodeSVIDExpired).
func (s *Server) checkNode(snap *ca.Snapshot, v verdict, now time.Time) error {
	switch {
	case snap.NodeEvicted(v.node):
		return fmt.Errorf("node %s is evicted", v.node)
	case !now.Before(v.notAfter):
		return fmt.Errorf("the %w of %s at %s; dial again with the renewed one", errNodeSVIDExpired, v.node, v.notAfter.UTC().Format(time.RFC3339))
	}
	if err := snap.CheckRevocation(ca.X509Credential(v.id, v.serial)); err != nil {
		return fmt.Errorf("node SVID of %s: %v", v.node, err)
	}
	return nil
}

// nodeStatus is the status of a refusal by checkNode: Unauthenticated for
// an expired node SVID (the node may act again with its renewed one),
// PermissionDenied otherwise (it needs new proof).
func nodeStatus(err error) error {
	if errors.Is(err, errNodeSVIDExpired) {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return status.Error(codes.PermissionDenied, err.Error())
}

// hasSPIFFEID reports whether the certificate names a SPIFFE ID.
func hasSPIFFEID(c *x509.Certificate) bool {
	for _, u := range c.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") {
			return true
		}
	}
	return false
}

// HostName returns the node name a host certificate (x509pop) names: its
// first DNS SAN, else its subject CN, lower-cased, which must be a valid
// node name (ca.ParseNodeName).
func HostName(c *x509.Certificate) (string, error) {
	n := c.Subject.CommonName
	if len(c.DNSNames) > 0 {
		n = c.DNSNames[0]
	}
	name, err := ca.ParseNodeName(strings.ToLower(n))
	if err != nil {
		return "", fmt.Errorf("host certificate names no valid node (first DNS SAN, else CN): %w", err)
	}
	return name, nil
}

// peerInfo is the AuthInfo of a connection: the TLS state and the verdict
// of its handshake.
type peerInfo struct {
	credentials.TLSInfo
	verdict
	addr string       // the client's address key (see addressKey)
	conn *trackedConn // nil for connections not of a node
}

// peerOf returns the verdict of the connection a call came on.
func peerOf(ctx context.Context) (*peerInfo, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	pi, ok := p.AuthInfo.(*peerInfo)
	return pi, ok
}

// creds are the transport credentials of the listener: a TLS handshake
// whose VerifyConnection classifies the client, and a peerInfo with the
// verdict.
type creds struct{ s *Server }

func (c creds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	var v verdict
	var refused bool
	cfg := c.s.tlsBase.Clone()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		var err error
		v, err = c.s.classify(cs.PeerCertificates)
		if err != nil {
			refused = true
			c.s.refusedHandshake(raw.RemoteAddr(), err)
		}
		return err
	}
	conn := tls.Server(raw, cfg)
	if err := conn.Handshake(); err != nil {
		if refused {
			lingerClose(raw)
		} else {
			conn.Close()
		}
		return nil, nil, err
	}
	info := &peerInfo{
		TLSInfo: credentials.TLSInfo{State: conn.ConnectionState(),
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}},
		verdict: v,
		addr:    connlimit.AddressKey(raw.RemoteAddr().String()),
	}
	if v.class != Node {
		return conn, info, nil
	}
	tc, err := c.s.conns.add(c.s, conn, info)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	info.conn = tc
	return tc, info, nil
}

// refusalLinger bounds how long a refused client's connection is drained
// before it is closed. In TLS 1.3 the client finishes its side of the
// handshake before the server judges its certificate, and gRPC writes at
// once: closing with that data unread makes the kernel reset the
// connection, and the client sees a broken pipe instead of the alert that
// says why, so an agent with a wrong host certificate takes the server
// for down and retries instead of stopping with "refused".
const refusalLinger = time.Second

// lingerClose closes a connection whose handshake was refused (the alert
// already sent): it ends the writing side, drains what the client still
// sends for at most refusalLinger (and 1 MiB), then closes.
func lingerClose(raw net.Conn) {
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = raw.SetReadDeadline(time.Now().Add(refusalLinger))
	_, _ = io.Copy(io.Discard, io.LimitReader(raw, 1<<20))
	_ = raw.Close()
}

func (creds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("nodeapi: server credentials cannot dial")
}

func (creds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3"}
}

func (c creds) Clone() credentials.TransportCredentials { return c }

func (creds) OverrideServerName(string) error { return nil }

// trackedConn is a connection of a node, closed when the node may no
// longer act on it.
type trackedConn struct {
	net.Conn
	reg   *registry
	node  string
	v     verdict
	ended chan struct{} // closed when the connection must end
	why   error         // why it ended; set before ended closes
	once  sync.Once
	close sync.Once
	timer *time.Timer // ends the connection when the node SVID expires
}

// end ends the connection's streams with why and closes the connection
// closeGrace later, so that their status reaches the agent first.
func (c *trackedConn) end(why error) {
	c.once.Do(func() {
		c.why = why
		close(c.ended)
		time.AfterFunc(closeGrace, func() { c.Close() })
	})
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.close.Do(func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		c.reg.remove(c)
	})
	return err
}

// closeGrace is how long an ended node connection stays open for the
// status of its streams to reach the agent; its calls are refused from
// the start.
const closeGrace = 200 * time.Millisecond

// registry tracks the open connections of nodes, so that an eviction or a
// revocation closes them at once.
type registry struct {
	mu    sync.Mutex
	conns map[string]map[*trackedConn]struct{} // by node
	seen  map[string]time.Time                 // last connection end per node
	// onChange is told the number of nodes connected, under mu.
	onChange func(connected int)
}

func newRegistry(onChange func(int)) *registry {
	return &registry{conns: map[string]map[*trackedConn]struct{}{}, onChange: onChange}
}

// add registers a node connection, unless the newest snapshot already
// refuses it (it may have changed since the handshake).
func (r *registry) add(s *Server, conn net.Conn, info *peerInfo) (*trackedConn, error) {
	tc := &trackedConn{Conn: conn, reg: r, node: info.node, v: info.verdict, ended: make(chan struct{})}
	r.mu.Lock()
	set := r.conns[tc.node]
	if set == nil {
		set = map[*trackedConn]struct{}{}
		r.conns[tc.node] = set
	}
	set[tc] = struct{}{}
	r.onChange(len(r.conns))
	r.mu.Unlock()
	// Checked after registering: a snapshot published from here on is
	// seen by the watcher, one published before by this check.
	if err := s.checkNode(s.auth.Snapshot(), info.verdict, s.now()); err != nil {
		tc.Close()
		return nil, err
	}
	tc.timer = time.AfterFunc(info.notAfter.Sub(s.now()), func() {
		tc.end(fmt.Errorf("the %w of %s at %s; dial again with the renewed one", errNodeSVIDExpired, tc.node, info.notAfter.UTC().Format(time.RFC3339)))
	})
	return tc, nil
}

func (r *registry) remove(c *trackedConn) {
	r.mu.Lock()
	set := r.conns[c.node]
	delete(set, c)
	if len(set) == 0 {
		delete(r.conns, c.node)
	}
	r.onChange(len(r.conns))
	r.mu.Unlock()
}

// each calls f for every tracked connection, outside the lock.
func (r *registry) each(f func(*trackedConn)) {
	r.mu.Lock()
	all := make([]*trackedConn, 0, len(r.conns))
	for _, set := range r.conns {
		for c := range set {
			all = append(all, c)
		}
	}
	r.mu.Unlock()
	for _, c := range all {
		f(c)
	}
}

// Connected returns the number of nodes with an open connection.
func (r *registry) connected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// nodeConns returns the number of open connections of the named node.
func (r *registry) nodeConns(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns[name])
}
