// Package sdkgrpc secures gRPC services and clients with the X509-SVIDs
// of an sdk.Source. It is a thin layer over sdk.ServerConfig and
// sdk.ClientConfig, kept apart so that HTTP-only services do not pull in
// gRPC.
//
//	creds := sdkgrpc.ServerCredentials(src, sdk.AuthorizeID(orders))
//	srv := grpc.NewServer(grpc.Creds(creds))
//
// Handlers learn who called with PeerIDFromContext. Every check
// (chain, revocation, authorizer) runs on every handshake, resumed ones
// included; a refused client sees its RPCs fail with codes.Unavailable.
package sdkgrpc

import (
	"context"
	"net"

	"github.com/badge-dev/badge/sdk"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ServerCredentials returns transport credentials for grpc.Creds that
// present src's current X509-SVID and admit only clients that authz
// accepts; see sdk.ServerConfig.
func ServerCredentials(src sdk.Source, authz sdk.Authorizer, opts ...sdk.ConfigOption) credentials.TransportCredentials {
	return credentials.NewTLS(sdk.ServerConfig(src, authz, opts...))
}

// ClientCredentials returns transport credentials for
// grpc.WithTransportCredentials that present src's current X509-SVID and
// talk only to servers that authz accepts; see sdk.ClientConfig. The
// target's host name is used to connect, not to identify the server.
func ClientCredentials(src sdk.Source, authz sdk.Authorizer, opts ...sdk.ConfigOption) credentials.TransportCredentials {
	return credentials.NewTLS(sdk.ClientConfig(src, authz, opts...))
}

// PeerIDFromContext returns the SPIFFE ID of the peer of the RPC whose
// context is ctx, and false if the connection was not authenticated with
// an X509-SVID. On a server built with ServerCredentials the ID has been
// verified and authorized.
func PeerIDFromContext(ctx context.Context) (spiffeid.ID, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, false
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, false
	}
	return id, true
}

// WatchConns returns server credentials that register every established
// connection with w, so that w.Sweep closes those whose client has been
// revoked since. creds is typically the result of ServerCredentials.
func WatchConns(creds credentials.TransportCredentials, w *sdk.ConnWatcher) credentials.TransportCredentials {
	return &watched{TransportCredentials: creds, w: w}
}

type watched struct {
	credentials.TransportCredentials
	w *sdk.ConnWatcher
}

// ServerHandshake tracks the connection once its handshake has succeeded.
func (c *watched) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, info, err
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	if !ok {
		return conn, info, nil
	}
	// Closing raw, not conn, cannot block on a pending write.
	untrack := c.w.Track(raw, tlsInfo.State)
	return &untrackOnClose{Conn: conn, untrack: untrack}, info, nil
}

// Clone keeps the watcher.
func (c *watched) Clone() credentials.TransportCredentials {
	return &watched{TransportCredentials: c.TransportCredentials.Clone(), w: c.w}
}

type untrackOnClose struct {
	net.Conn
	untrack func()
}

// Close stops watching the connection and closes it.
func (u *untrackOnClose) Close() error {
	u.untrack()
	return u.Conn.Close()
}
