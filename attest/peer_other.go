//go:build !linux

package attest

import (
	"errors"
	"fmt"
	"net"
)

// Peer is the process on the other end of a Unix-socket connection. Peer
// credentials and pidfds are Linux-only, so elsewhere PeerFromConn always
// fails; this file exists so that the packages that import attest build.
type Peer struct {
	PID int32
	UID uint32
	GID uint32
}

// PeerFromConn fails with errors.ErrUnsupported outside Linux.
func PeerFromConn(c *net.UnixConn) (*Peer, error) {
	return nil, fmt.Errorf("attest: peer credentials: %w", errors.ErrUnsupported)
}

// Close does nothing outside Linux.
func (p *Peer) Close() error { return nil }

// Alive is always false outside Linux.
func (p *Peer) Alive() bool { return false }

// Attest fails with errors.ErrUnsupported outside Linux.
func (a *Attestor) Attest(p *Peer, kinds Kind) (Set, error) {
	return nil, fmt.Errorf("attest: %w", errors.ErrUnsupported)
}

// Verify fails with errors.ErrUnsupported outside Linux.
func (a *Attestor) Verify(p *Peer) error {
	return fmt.Errorf("attest: %w", errors.ErrUnsupported)
}
