package main

import (
	"context"
	"errors"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"

	"github.com/badge-dev/badge/internal/localtrust"
)

// trustedDialer returns a gRPC dial option that connects to the socket
// sock only when the process serving it runs as a uid the caller trusts
// (e.serverUIDs, checked on the connected socket by localtrust.DialUnix), and
// explain, which replaces an error of the call by the refusal, if the
// dialer refused a server: gRPC reports a failed dial only as a
// connection error.
func (e *env) trustedDialer(sock string) (opt grpc.DialOption, explain func(error) error, err error) {
	uids, err := e.serverUIDs()
	if err != nil {
		return nil, nil, err
	}
	var refused atomic.Pointer[error]
	opt = grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		c, err := localtrust.DialUnix(ctx, sock, uids)
		if errors.Is(err, localtrust.ErrUntrustedServer) {
			refused.Store(&err)
		}
		return c, err
	})
	explain = func(err error) error {
		if p := refused.Load(); p != nil && err != nil {
			return *p
		}
		return err
	}
	return opt, explain, nil
}
