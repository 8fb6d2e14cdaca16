// Package unixsock creates the Unix sockets badge's servers listen on: in a
// directory no other non-root user controls (see localtrust), with the
// socket's mode set before anyone can connect, replacing only a stale
// socket, and removing on Close only the socket it created.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/badge-dev/badge/internal/localtrust"
)

// Listen creates a Unix socket at path with mode sockMode. The directory
// is created with mode 0755 if missing (see localtrust.MkdirAll for where)
// and must then pass localtrust.CheckSocketDir:
// a directory another non-root user owns or can write (or one above it) is
// refused, since that user could move the socket aside and serve their
// own. A stale socket left by a crash is removed; a socket some running
// server still answers on is an error.
//
// Closing the listener removes the socket file only if it is still the one
// this call created: a newer server that has since taken over the path
// keeps its socket.
func Listen(path string, sockMode os.FileMode) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("socket path %q must be absolute", path)
	}
	err := localtrust.MkdirAll(filepath.Dir(path), 0o755, uint32(os.Geteuid()), localtrust.RootOrUID)
	switch {
	case errors.Is(err, localtrust.ErrUntrustedPath):
		return nil, fmt.Errorf("socket directory %w", err)
	case err != nil:
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another running server", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	// Create the socket with no permissions for others, then open it up:
	// no window in which a wider mode applies than intended.
	old := syscall.Umask(0o077)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(path, sockMode); err != nil {
		l.Close()
		os.Remove(path)
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		l.Close()
		return nil, err
	}
	return &unixListener{UnixListener: l, path: path, created: fi}, nil
}

// unixListener removes its socket file on Close, if it is still its own.
type unixListener struct {
	*net.UnixListener
	path    string
	created os.FileInfo
	once    sync.Once
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if cur, statErr := os.Lstat(l.path); statErr == nil && os.SameFile(cur, l.created) {
			os.Remove(l.path)
		}
	})
	return err
}
