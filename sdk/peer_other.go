//go:build !linux

package sdk

import (
	"errors"
	"net"
)

// peerUID is implemented on Linux only: elsewhere every server is refused.
func peerUID(net.Conn) (uint32, error) {
	return 0, errors.ErrUnsupported
}
