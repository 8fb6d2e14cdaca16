// Package etcdtest starts a real etcd member inside a test process, for
// the tests of storage/etcd and of the servers that use it. Only tests
// and the developer tool internal/tools/etcdcluster import it: it links
// the etcd server, which the badge binary must not.
package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.step.sm/crypto/minica"
	"go.uber.org/zap"
)

// StartTimeout bounds the wait for a member to be ready.
const StartTimeout = 20 * time.Second

// Server is one etcd member listening on loopback ports. Clients reach
// it through a TCP proxy on Endpoint, so that Stop cuts their connections
// at once, as a crashed member or a lost network would (etcd's own
// graceful stop waits seconds for clients' open streams), and Restart
// brings it back on the same address.
type Server struct {
	// Endpoint is the client address, HOST:PORT.
	Endpoint string
	// TLS, for a member started with TLSFiles, holds the files of the
	// CA and of a client certificate it accepts.
	TLS *TLSFiles

	dir      string
	backend  string // the member's own client address
	peerPort int
	// name and cluster are the member's name and --initial-cluster;
	// cluster is empty for a lone member.
	name, cluster, token string
	// fsync makes the member sync its writes, as production members do.
	fsync bool
	// direct: clients reach the member's own listener, with no proxy.
	direct bool
	e      *embed.Etcd

	mu    sync.Mutex
	proxy net.Listener
	conns map[net.Conn]struct{}
}

// TLSFiles are PEM files made by NewTLSFiles.
type TLSFiles struct {
	Dir                   string
	CA                    string // the root that signed both certificates
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// Start starts a member in a new temporary directory, waits until it is
// ready, and stops it when the test ends.
func Start(t testing.TB, tlsFiles *TLSFiles) *Server {
	t.Helper()
	s, err := New(t.TempDir(), tlsFiles)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// New starts a member keeping its data in dir, on free loopback ports,
// serving clients over TLS when tlsFiles is not nil (client certificates
// required), and waits up to StartTimeout until it is ready.
func New(dir string, tlsFiles *TLSFiles) (*Server, error) {
	return newServer(dir, tlsFiles, false)
}

// StartDurable is Start for a member that syncs every write to disk, as
// a production member does (the others skip fsync, to keep tests fast):
// for benchmarks that compare etcd's write rate with bbolt's.
func StartDurable(t testing.TB) *Server {
	t.Helper()
	s, err := newServer(t.TempDir(), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// portTries is how many times a member or cluster is started on new
// ports when one of the ports picked was taken meanwhile (freePort
// releases the port it found; another process may bind it before etcd
// does).
const portTries = 3

// portTaken reports whether err is a port taken by another process.
func portTaken(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || err != nil && strings.Contains(err.Error(), "address already in use")
}

func newServer(dir string, tlsFiles *TLSFiles, fsync bool) (*Server, error) {
	for try := 1; ; try++ {
		// A member that failed to listen wrote nothing yet: the same dir
		// serves again.
		s, err := newServerOnce(dir, tlsFiles, fsync)
		if !portTaken(err) || try == portTries {
			return s, err
		}
	}
}

func newServerOnce(dir string, tlsFiles *TLSFiles, fsync bool) (*Server, error) {
	s, l, err := newMember(dir, "badge-test", tlsFiles, 0, false)
	if err != nil {
		return nil, err
	}
	s.fsync = fsync
	if err := s.start(); err != nil {
		l.Close()
		return nil, err
	}
	s.serveProxy(l)
	return s, nil
}

// newMember picks the ports of a member and opens its proxy's listener
// on clientPort (0: a free port). A direct member has no proxy: it
// serves its clients on clientPort itself, and the listener is nil.
func newMember(dir, name string, tlsFiles *TLSFiles, clientPort int, direct bool) (*Server, net.Listener, error) {
	pp, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	s := &Server{TLS: tlsFiles, dir: dir, name: name, peerPort: pp, direct: direct, conns: map[net.Conn]struct{}{}}
	if direct {
		if clientPort == 0 {
			if clientPort, err = freePort(); err != nil {
				return nil, nil, err
			}
		}
		s.backend = net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))
		s.Endpoint = s.backend
		return s, nil, nil
	}
	cp, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort)))
	if err != nil {
		return nil, nil, err
	}
	s.Endpoint, s.backend = l.Addr().String(), net.JoinHostPort("127.0.0.1", strconv.Itoa(cp))
	return s, l, nil
}

func (s *Server) peerURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.peerPort))
}

// serveProxy forwards each connection to l to the member.
func (s *Server) serveProxy(l net.Listener) {
	s.mu.Lock()
	s.proxy = l
	s.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", s.backend)
			if err != nil {
				c.Close()
				continue
			}
			s.mu.Lock()
			if s.proxy != l {
				s.mu.Unlock()
				c.Close()
				b.Close()
				continue
			}
			s.conns[c], s.conns[b] = struct{}{}, struct{}{}
			s.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
				s.mu.Lock()
				delete(s.conns, dst)
				delete(s.conns, src)
				s.mu.Unlock()
			}
			go pipe(b, c)
			go pipe(c, b)
		}
	}()
}

func (s *Server) start() error {
	e, err := s.launch()
	if err != nil {
		return err
	}
	return s.waitReady(e)
}

// launch starts the member without waiting for it to be ready: the
// members of a new cluster are ready only once enough of them run.
func (s *Server) launch() (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = s.name
	cfg.Dir = filepath.Join(s.dir, "etcd")
	scheme := "http"
	if s.TLS != nil {
		scheme = "https"
		cfg.ClientTLSInfo.CertFile = s.TLS.ServerCert
		cfg.ClientTLSInfo.KeyFile = s.TLS.ServerKey
		cfg.ClientTLSInfo.TrustedCAFile = s.TLS.CA
		cfg.ClientTLSInfo.ClientCertAuth = true
	}
	cu := url.URL{Scheme: scheme, Host: s.backend}
	pu := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.peerPort))}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Tests only: a crash of the test loses nothing that matters.
	cfg.UnsafeNoFsync = !s.fsync
	if s.cluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		// One member elects itself: short ticks make start and restart
		// quick.
		cfg.TickMs, cfg.ElectionMs = 10, 100
	} else {
		cfg.InitialCluster, cfg.InitialClusterToken = s.cluster, s.token
		// Several members elect a leader over the network: ticks long
		// enough that a loaded test machine does not see a leader lost
		// when it is only slow, short enough that a new leader is
		// elected within a second of the old one's death.
		cfg.TickMs, cfg.ElectionMs = 50, 500
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdtest: starting etcd in %s: %w", s.dir, err)
	}
	return e, nil
}

// waitReady waits up to StartTimeout until e serves clients.
func (s *Server) waitReady(e *embed.Etcd) error {
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(StartTimeout):
		e.Server.HardStop()
		e.Close()
		return fmt.Errorf("etcdtest: etcd in %s not ready after %s", s.dir, StartTimeout)
	}
	s.e = e
	return nil
}

// Stop cuts every client connection and stops the member as a crash
// would: a leader hands its leadership to no one, its followers elect
// another after their election timeout. Its data stays for Restart.
// Stopping a stopped member does nothing.
func (s *Server) Stop() {
	s.cutClients()
	if s.e != nil {
		s.e.Server.HardStop() // before Close, which would hand over leadership
		s.e.Close()
		s.e = nil
	}
}

// cutClients closes the member's proxy and every client connection
// through it.
func (s *Server) cutClients() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proxy != nil {
		s.proxy.Close()
		s.proxy = nil
	}
	for c := range s.conns {
		c.Close()
	}
	clear(s.conns)
}

// Close stops the member as an operator would: it stops serving its
// clients (waiting up to etcd's request timeout for calls in progress),
// hands its leadership to another member if it leads and one is
// connected, and stops. Its data stays. Closing a stopped member does
// nothing.
func (s *Server) Close() {
	s.cutClients()
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// Err returns the channel on which the running member reports an error
// that stopped it, or nil when it is stopped.
func (s *Server) Err() <-chan error {
	if s.e == nil {
		return nil
	}
	return s.e.Err()
}

// Clients returns how many client connections are open through the
// member's proxy.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns) / 2 // each is two: the client's and the member's
}

// Running reports whether the member runs (not stopped).
func (s *Server) Running() bool { return s.e != nil }

// IsLeader reports whether the member runs and is its cluster's leader.
func (s *Server) IsLeader() bool {
	return s.e != nil && s.e.Server.Leader() == s.e.Server.MemberID()
}

// Restart starts the stopped member again on the same address and data.
func (s *Server) Restart() error {
	if s.e != nil {
		return errors.New("etcdtest: member is running")
	}
	if err := s.start(); err != nil {
		return err
	}
	if s.direct {
		return nil
	}
	l, err := net.Listen("tcp", s.Endpoint)
	if err != nil {
		s.Stop()
		return fmt.Errorf("etcdtest: listening on %s again: %w", s.Endpoint, err)
	}
	s.serveProxy(l)
	return nil
}

// Cluster is several members forming one etcd cluster, each with its
// own ports, data directory and client proxy (see Server). Stop and
// Restart its Members one by one: stopping a majority loses quorum, and
// the remaining members then refuse writes until enough are restarted.
// Its methods are not safe for concurrent use with Stop and Restart.
type Cluster struct {
	Members []*Server
}

// StartCluster starts a cluster of n members in a new temporary
// directory, waits until every member is ready, and stops them when the
// test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := NewCluster(t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// NewCluster starts n members keeping their data under dir (dir/m0,
// dir/m1, ...), in plain text on free loopback ports, and waits up to
// StartTimeout until all are ready.
func NewCluster(dir string, n int) (*Cluster, error) {
	return NewClusterWith(dir, n, ClusterOptions{})
}

// ClusterOptions are the choices of NewClusterWith. The zero value is
// NewCluster's cluster: members behind proxies, on free ports, without
// fsync.
type ClusterOptions struct {
	// ClientPorts has the loopback port of each member's Endpoint, in
	// order; 0, or a member past its end, takes a free port.
	ClientPorts []int
	// Fsync makes the members sync every write to disk, as production
	// members do (by default they do not, to keep tests fast).
	Fsync bool
	// Direct has clients reach each member's own listener, with no proxy
	// between them: as in production, and with no proxy's CPU and delay
	// in a measurement. Stop then leaves clients to notice the member's
	// end as etcd's own stop shows it, which may take seconds.
	Direct bool
}

// NewClusterWith is NewCluster with options.
func NewClusterWith(dir string, n int, o ClusterOptions) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("etcdtest: a cluster of %d members", n)
	}
	if len(o.ClientPorts) > n {
		return nil, fmt.Errorf("etcdtest: %d client ports for %d members", len(o.ClientPorts), n)
	}
	for try := 1; ; try++ {
		c, err := newCluster(dir, n, o)
		if !portTaken(err) || try == portTries || len(o.ClientPorts) > 0 { // ports given: another try takes them again
			return c, err
		}
		// The members that started wrote the cluster's first state:
		// start afresh in another directory.
		dir = filepath.Join(dir, fmt.Sprintf("try%d", try+1))
	}
}

func newCluster(dir string, n int, o ClusterOptions) (*Cluster, error) {
	c := &Cluster{}
	var ls []net.Listener
	fail := func(err error) (*Cluster, error) {
		for _, l := range ls {
			if l != nil {
				l.Close()
			}
		}
		c.Stop()
		return nil, err
	}
	var initial []string
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		port := 0
		if i < len(o.ClientPorts) {
			port = o.ClientPorts[i]
		}
		s, l, err := newMember(filepath.Join(dir, name), name, nil, port, o.Direct)
		if err != nil {
			return fail(fmt.Errorf("etcdtest: member %s: %w", name, err))
		}
		s.fsync = o.Fsync
		c.Members, ls = append(c.Members, s), append(ls, l)
		initial = append(initial, name+"="+s.peerURL())
	}
	token := "badge-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	es := make([]*embed.Etcd, n)
	for i, s := range c.Members {
		s.cluster, s.token = strings.Join(initial, ","), token
		e, err := s.launch()
		if err != nil {
			for _, e := range es[:i] {
				e.Server.HardStop()
				e.Close()
			}
			return fail(err)
		}
		es[i] = e
	}
	for i, s := range c.Members {
		if err := s.waitReady(es[i]); err != nil {
			for _, e := range es[i+1:] {
				e.Server.HardStop()
				e.Close()
			}
			return fail(err)
		}
	}
	for i, s := range c.Members {
		if ls[i] != nil {
			s.serveProxy(ls[i])
		}
	}
	return c, nil
}

// Endpoints returns the client addresses of all members, running or not.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, s := range c.Members {
		eps = append(eps, s.Endpoint)
	}
	return eps
}

// Leader returns the index of the running member that is the leader, or
// -1 when no running member leads.
func (c *Cluster) Leader() int {
	for i, s := range c.Members {
		if s.IsLeader() {
			return i
		}
	}
	return -1
}

// WaitLeader waits until a running member is the leader, up to timeout,
// and returns its index. There is no event to wait on across members:
// it polls every 10 ms.
func (c *Cluster) WaitLeader(timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if i := c.Leader(); i >= 0 {
			return i, nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("etcdtest: no leader among the running members after %s", timeout)
		}
		<-tick.C
	}
}

// Stop stops every member.
func (c *Cluster) Stop() {
	for _, s := range c.Members {
		s.Stop()
	}
}

// Close closes every member (see Server.Close): the followers first, so
// that the leader, closed last, has no one to hand its leadership to and
// stops at once.
func (c *Cluster) Close() {
	leader := c.Leader()
	for i, s := range c.Members {
		if i != leader {
			s.Close()
		}
	}
	if leader >= 0 {
		c.Members[leader].Close()
	}
}

// freePort returns a TCP port free on the loopback interface now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// NewTLSFiles writes, in dir, a CA (go.step.sm/crypto/minica), a server
// certificate for 127.0.0.1 and a client certificate, with their keys.
func NewTLSFiles(dir string) (*TLSFiles, error) {
	ca, err := minica.New(minica.WithName("badge etcd test"))
	if err != nil {
		return nil, err
	}
	f := &TLSFiles{Dir: dir}
	write := func(name string, blockType string, der []byte) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600)
	}
	// The root signs the intermediate that signs leaves; a verifier
	// trusting the root needs the intermediate in the chain.
	chain := func(leaf *x509.Certificate) []byte {
		out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
		return append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Intermediate.Raw})...)
	}
	if f.CA, err = write("ca.pem", "CERTIFICATE", ca.Root.Raw); err != nil {
		return nil, err
	}
	leaf := func(name string, usage x509.ExtKeyUsage, ips []net.IP) (cert, key string, err error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		c, err := ca.Sign(&x509.Certificate{
			Subject:     pkix.Name{CommonName: name},
			IPAddresses: ips,
			DNSNames:    []string{"localhost"},
			PublicKey:   k.Public(),
			NotBefore:   time.Now().Add(-time.Minute),
			NotAfter:    time.Now().Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage},
		})
		if err != nil {
			return "", "", err
		}
		cert = filepath.Join(dir, name+".pem")
		if err := os.WriteFile(cert, chain(c), 0o600); err != nil {
			return "", "", err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return "", "", err
		}
		key, err = write(name+"-key.pem", "PRIVATE KEY", der)
		return cert, key, err
	}
	if f.ServerCert, f.ServerKey, err = leaf("server", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}); err != nil {
		return nil, err
	}
	if f.ClientCert, f.ClientKey, err = leaf("client", x509.ExtKeyUsageClientAuth, nil); err != nil {
		return nil, err
	}
	return f, nil
}

// ClientTLS returns the client's TLS configuration for f (what
// storage/etcd.TLSConfig builds from the same files).
func (f *TLSFiles) ClientTLS() (*tls.Config, error) {
	pool := x509.NewCertPool()
	pemCA, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(pemCA)
	cert, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
