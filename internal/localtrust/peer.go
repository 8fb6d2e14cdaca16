package localtrust

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// ErrUntrustedServer is wrapped by the errors of DialUnix for a socket
// served by a process of an untrusted uid.
var ErrUntrustedServer = errors.New("untrusted server")

// ServerError reports a Unix socket served by an untrusted uid.
type ServerError struct {
	Socket  string
	UID     uint32   // the uid of the process that serves Socket
	Trusted []uint32 // the uids that would have been accepted
}

func (e *ServerError) Error() string {
	ids := make([]string, len(e.Trusted))
	for i, u := range e.Trusted {
		ids[i] = strconv.FormatUint(uint64(u), 10)
	}
	return fmt.Sprintf("refusing %s: it is served by uid %d, which is not root, this user or BADGE_SERVER_UID (trusted uids: %s)",
		e.Socket, e.UID, strings.Join(ids, ", "))
}

func (e *ServerError) Unwrap() error { return ErrUntrustedServer }

// TrustedServerUIDs returns root, the effective uid of this process and
// extra, without duplicates.
func TrustedServerUIDs(extra ...uint32) []uint32 {
	uids := []uint32{0}
	for _, u := range append([]uint32{uint32(os.Geteuid())}, extra...) {
		if !slices.Contains(uids, u) {
			uids = append(uids, u)
		}
	}
	return uids
}

// DialUnix connects to the Unix socket at path and returns the connection
// if the process serving it runs as one of the trusted uids, read from the
// connected socket itself (SO_PEERCRED: the credentials of the process
// that called listen), so that no rename of the path between a check and
// the connection can fool it. Otherwise it closes the connection and
// returns a *ServerError.
func DialUnix(ctx context.Context, path string, trusted []uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	uid, err := PeerUID(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: reading the server's credentials: %w", path, err)
	}
	if !slices.Contains(trusted, uid) {
		c.Close()
		return nil, &ServerError{Socket: path, UID: uid, Trusted: trusted}
	}
	return c, nil
}
