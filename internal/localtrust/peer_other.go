//go:build !linux

package localtrust

import (
	"errors"
	"net"
)

// PeerUID is implemented on Linux only.
func PeerUID(net.Conn) (uint32, error) {
	return 0, errors.ErrUnsupported
}
