package ca

import (
	"context"
	"net"
	"os"

	"github.com/badge-dev/badge/ca/internal/localtrust"
)

// Errors of the host checks below; match them with errors.Is.
var (
	// ErrUntrustedPath: a socket directory, data dir or key file that a
	// user other than root and the server's uid could change.
	ErrUntrustedPath = localtrust.ErrUntrustedPath
	// ErrUntrustedServer: a Unix socket served by a process whose uid the
	// client does not trust.
	ErrUntrustedServer = localtrust.ErrUntrustedServer
)

// CheckSocketDir returns an error wrapping ErrUntrustedPath, naming the
// file at fault with its owner and mode, unless dir is owned by root or
// this process's uid and not writable by group or others, and every
// directory above it (and every symbolic link followed) is owned by root
// or this uid and not writable by group or others unless sticky. Nobody
// else can then move a socket in dir aside. ListenUnix applies it.
func CheckSocketDir(dir string) error {
	return localtrust.CheckPath(dir, uint32(os.Geteuid()), localtrust.RootOrUID)
}

// CheckPrivatePath is CheckSocketDir for state of this process: path
// itself must be owned by this process's uid (not merely by root). It
// applies to the data dir, its database and the key directory.
func CheckPrivatePath(path string) error {
	return localtrust.CheckPath(path, uint32(os.Geteuid()), localtrust.Exclusive)
}

// MkdirPrivate creates the directory dir (mode 0700) and any missing
// parent, as os.MkdirAll, but only below an existing directory that
// passes the rule of directories on the way (so nothing is created in a
// directory another user controls); then it checks dir with
// CheckPrivatePath.
func MkdirPrivate(dir string) error {
	return localtrust.MkdirAll(dir, 0o700, uint32(os.Geteuid()), localtrust.Exclusive)
}

// TrustedServerUIDs returns the uids a client trusts to serve a badge
// socket: root, the client's own uid and extra.
func TrustedServerUIDs(extra ...uint32) []uint32 {
	return localtrust.TrustedServerUIDs(extra...)
}

// DialUnix connects to the Unix socket at path and keeps the connection
// only if the process that serves it runs as one of the trusted uids, as
// the kernel reports for the connected socket (SO_PEERCRED), so that no
// rename of the path can fool it. Otherwise the error wraps
// ErrUntrustedServer and names the socket and the uid serving it.
func DialUnix(ctx context.Context, path string, trusted []uint32) (net.Conn, error) {
	return localtrust.DialUnix(ctx, path, trusted)
}
