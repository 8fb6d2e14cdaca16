// Package etcdtest starts a real etcd member inside a test process, for
// the tests of storage/etcd and of the servers that use it. Only tests
// import it: it links the etcd server, which the badge binary must not.
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
	"sync"
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
	e        *embed.Etcd

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
	cp, err := freePort()
	if err != nil {
		return nil, err
	}
	pp, err := freePort()
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Endpoint: l.Addr().String(), TLS: tlsFiles, dir: dir,
		backend: net.JoinHostPort("127.0.0.1", strconv.Itoa(cp)), peerPort: pp, conns: map[net.Conn]struct{}{}}
	if err := s.start(); err != nil {
		l.Close()
		return nil, err
	}
	s.serveProxy(l)
	return s, nil
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
			}
			go pipe(b, c)
			go pipe(c, b)
		}
	}()
}

func (s *Server) start() error {
	cfg := embed.NewConfig()
	cfg.Name = "badge-test"
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
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true // tests only: a crash of the test loses nothing that matters
	// One member elects itself: short ticks make start and restart quick.
	cfg.TickMs, cfg.ElectionMs = 10, 100
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcdtest: starting etcd in %s: %w", s.dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(StartTimeout):
		e.Close()
		return fmt.Errorf("etcdtest: etcd in %s not ready after %s", s.dir, StartTimeout)
	}
	s.e = e
	return nil
}

// Stop cuts every client connection and stops the member; its data
// stays for Restart. Stopping a stopped member does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.proxy != nil {
		s.proxy.Close()
		s.proxy = nil
	}
	for c := range s.conns {
		c.Close()
	}
	clear(s.conns)
	s.mu.Unlock()
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// Restart starts the stopped member again on the same address and data.
func (s *Server) Restart() error {
	if s.e != nil {
		return errors.New("etcdtest: member is running")
	}
	if err := s.start(); err != nil {
		return err
	}
	l, err := net.Listen("tcp", s.Endpoint)
	if err != nil {
		s.Stop()
		return fmt.Errorf("etcdtest: listening on %s again: %w", s.Endpoint, err)
	}
	s.serveProxy(l)
	return nil
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
