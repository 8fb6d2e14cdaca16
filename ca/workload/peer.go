package workload

import (
	"context"
	"errors"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/badge-dev/badge/attest"
)

// peerCredentials are gRPC transport credentials for a Unix socket: the
// "handshake" reads the peer's credentials from the kernel once per
// connection and hands them to every call on it as AuthInfo.
type peerCredentials struct{}

// peerInfo is the AuthInfo of a Workload API connection.
type peerInfo struct {
	credentials.CommonAuthInfo
	peer *attest.Peer
}

func (peerInfo) AuthType() string { return "badge-peer" }

func (peerCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("workload API: connection is not a Unix socket")
	}
	p, err := attest.PeerFromConn(uc)
	if err != nil {
		return nil, nil, err
	}
	info := peerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, peer: p}
	return &peerConn{UnixConn: uc, peer: p}, info, nil
}

func (peerCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workload API: peer credentials are server-side only")
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "badge-peer"}
}

func (c peerCredentials) Clone() credentials.TransportCredentials { return c }

func (peerCredentials) OverrideServerName(string) error { return nil }

// peerConn releases the peer's pidfd when the connection closes.
type peerConn struct {
	*net.UnixConn
	peer *attest.Peer
	once sync.Once
}

func (c *peerConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(func() { c.peer.Close() })
	return err
}

func peerFromContext(ctx context.Context) (*attest.Peer, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	info, ok := p.AuthInfo.(peerInfo)
	if !ok || info.peer == nil {
		return nil, false
	}
	return info.peer, true
}
