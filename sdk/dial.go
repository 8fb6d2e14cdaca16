package sdk

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// EnvServerUID names a uid, besides root and the caller's own, that the
// sources trust to serve the Workload API socket (see WithServerUID).
const EnvServerUID = "BADGE_SERVER_UID"

// ErrUntrustedServer is wrapped by the error of a source whose Workload
// API socket is served by a process of a uid it does not trust: some other
// local user may have put their own server at the socket's path.
var ErrUntrustedServer = errors.New("sdk: untrusted Workload API server")

// UntrustedServerError names the socket and the uid serving it.
type UntrustedServerError struct {
	Socket  string
	UID     uint32   // the uid of the process serving Socket
	Trusted []uint32 // the uids the source accepts
}

func (e *UntrustedServerError) Error() string {
	ids := make([]string, len(e.Trusted))
	for i, u := range e.Trusted {
		ids[i] = strconv.FormatUint(uint64(u), 10)
	}
	return fmt.Sprintf("sdk: refusing %s: it is served by uid %d, which is not root, this user or the uid of WithServerUID or %s (trusted uids: %s)",
		e.Socket, e.UID, EnvServerUID, strings.Join(ids, ", "))
}

func (e *UntrustedServerError) Unwrap() error { return ErrUntrustedServer }

// WithServerUID makes the source trust a Workload API server run by uid,
// besides root and the caller's own uid, which are always trusted. It
// overrides BADGE_SERVER_UID. A server run by any other uid is refused:
// the source reads the uid of the process serving the socket from the
// connected socket itself (SO_PEERCRED), so a socket some other local user
// put at the path is never used.
func WithServerUID(uid uint32) SourceOption {
	return func(c *sourceConfig) { c.serverUID, c.hasServerUID = uid, true }
}

// trustedUIDs returns root, the caller's uid and the configured one.
func (c *sourceConfig) trustedUIDs() []uint32 {
	uids := []uint32{0}
	add := func(u uint32) {
		if !slices.Contains(uids, u) {
			uids = append(uids, u)
		}
	}
	add(uint32(os.Geteuid()))
	if c.hasServerUID {
		add(c.serverUID)
	}
	return uids
}

// defaultSocketPath is DefaultSocketPath, unless the caller is not root,
// it does not exist and $XDG_RUNTIME_DIR is set: then the socket of a
// badge server run by that user, $XDG_RUNTIME_DIR/badge/workload.sock.
func defaultSocketPath() string {
	if os.Geteuid() == 0 {
		return DefaultSocketPath
	}
	if _, err := os.Lstat(DefaultSocketPath); err == nil {
		return DefaultSocketPath
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); strings.HasPrefix(d, "/") {
		return strings.TrimSuffix(d, "/") + "/badge/workload.sock"
	}
	return DefaultSocketPath
}

// dialer connects to one socket and refuses a server of an untrusted uid,
// remembering the refusal: gRPC reports a failed dial only as a
// connection error.
type dialer struct {
	target  string // gRPC target: unix://path
	path    string
	trusted []uint32
	refused atomic.Pointer[UntrustedServerError]
}

// options returns the gRPC dial options of a connection through d.
func (d *dialer) options() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return d.dial(ctx) }),
	}
}

func (d *dialer) dial(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "unix", d.path)
	if err != nil {
		return nil, err
	}
	uid, err := peerUID(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("sdk: %s: reading the server's credentials: %w", d.path, err)
	}
	if !slices.Contains(d.trusted, uid) {
		c.Close()
		e := &UntrustedServerError{Socket: d.path, UID: uid, Trusted: d.trusted}
		d.refused.Store(e)
		return nil, e
	}
	d.refused.Store(nil)
	return c, nil
}

// explain returns the last refusal instead of err, if the last dial
// refused the server.
func (d *dialer) explain(err error) error {
	if e := d.refused.Load(); e != nil && err != nil {
		return e
	}
	return err
}
