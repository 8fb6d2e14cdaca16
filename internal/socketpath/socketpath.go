// Package socketpath resolves the Unix socket paths that badge's binaries
// dial: the Workload API socket and the admin API socket.
//
// Every binary that talks to a badge server (the badge CLI, badge-bench)
// resolves them the same way, so that a command that works with one works
// with the other:
//
//   - a value may be a path ("/run/w.sock") or a unix URL ("unix:/run/w.sock",
//     "unix:///run/w.sock", the form of SPIFFE_ENDPOINT_SOCKET, parsed by
//     go-spiffe's workloadapi.TargetFromAddress); it must be absolute, and
//     comes back cleaned;
//   - the Workload API socket is the flag, else SPIFFE_ENDPOINT_SOCKET (the
//     variable every SPIFFE client honours), else BADGE_SOCKET, else the
//     client default of WorkloadName;
//   - the admin socket is the flag, else BADGE_ADMIN_SOCKET, else the
//     client default of AdminName.
//
// The client default of a socket is in RootDir, where a server run as root
// puts it; a caller that is not root, finding no such socket there, uses
// $XDG_RUNTIME_DIR/badge, where a server run by that user puts it (see
// ClientDefault). The SDK keeps its own copy of this rule: it imports
// nothing from internal/.
package socketpath

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Default locations. A server run as root puts its sockets in RootDir,
// any other server in $XDG_RUNTIME_DIR/badge.
const (
	RootDir      = "/run/badge"
	WorkloadName = "workload.sock"
	AdminName    = "admin.sock"

	DefaultWorkload = RootDir + "/" + WorkloadName
	DefaultAdmin    = RootDir + "/" + AdminName
)

// Environment variables, in the order they are consulted.
const (
	EnvSPIFFEEndpoint = "SPIFFE_ENDPOINT_SOCKET"
	EnvWorkload       = "BADGE_SOCKET"
	EnvAdmin          = "BADGE_ADMIN_SOCKET"
)

// ErrNotAbsolute is returned for a socket value that is not an absolute
// path or a unix URL of one.
var ErrNotAbsolute = errors.New("must be an absolute path or a unix:///path URL")

// Parse accepts "/path", "unix:/path" or "unix:///path" and returns the
// cleaned path. A unix URL must be one go-spiffe's
// workloadapi.TargetFromAddress accepts (no query, fragment or user) and
// name no host.
func Parse(v string) (string, error) {
	p := v
	if strings.HasPrefix(v, "unix:") {
		if _, err := workloadapi.TargetFromAddress(v); err != nil {
			return "", fmt.Errorf("socket %q %w (%v)", v, ErrNotAbsolute, err)
		}
		u, err := url.Parse(v)
		if err != nil || u.Host != "" {
			return "", fmt.Errorf("socket %q %w", v, ErrNotAbsolute)
		}
		p = u.Path
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("socket %q %w", v, ErrNotAbsolute)
	}
	return filepath.Clean(p), nil
}

// Workload resolves the Workload API socket: flagValue, then
// SPIFFE_ENDPOINT_SOCKET, then BADGE_SOCKET (read with getenv), then the
// client default of WorkloadName.
func Workload(flagValue string, getenv func(string) string) (string, error) {
	return resolve(flagValue, getenv, WorkloadName, EnvSPIFFEEndpoint, EnvWorkload)
}

// Admin resolves the admin API socket: flagValue, then BADGE_ADMIN_SOCKET,
// then the client default of AdminName.
func Admin(flagValue string, getenv func(string) string) (string, error) {
	return resolve(flagValue, getenv, AdminName, EnvAdmin)
}

func resolve(v string, getenv func(string) string, name string, envs ...string) (string, error) {
	for _, env := range envs {
		if v == "" {
			v = getenv(env)
		}
	}
	if v == "" {
		return ClientDefault(os.Geteuid(), getenv, name, exists), nil
	}
	return Parse(v)
}

// ClientDefault is the default path of the socket name for a client
// running as euid: RootDir/name, unless euid is not root, no such file
// exists (as exists reports) and $XDG_RUNTIME_DIR (read with getenv) is an
// absolute path: then $XDG_RUNTIME_DIR/badge/name.
func ClientDefault(euid int, getenv func(string) string, name string, exists func(string) bool) string {
	p := filepath.Join(RootDir, name)
	if euid == 0 || exists(p) {
		return p
	}
	if d := getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "badge", name)
	}
	return p
}

// ErrNoRuntimeDir is returned by ServerDir for a server not run as root
// when $XDG_RUNTIME_DIR is not an absolute path.
var ErrNoRuntimeDir = errors.New("XDG_RUNTIME_DIR is not set (or not an absolute path): a server not run as root " +
	"puts its sockets in $XDG_RUNTIME_DIR/badge; set it, or pass --socket and --admin-socket")

// ServerDir is the directory of the default sockets of a server running
// as euid: RootDir for root, else $XDG_RUNTIME_DIR/badge (read with
// getenv), which must then be an absolute path (else ErrNoRuntimeDir).
func ServerDir(euid int, getenv func(string) string) (string, error) {
	if euid == 0 {
		return RootDir, nil
	}
	if d := getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "badge"), nil
	}
	return "", ErrNoRuntimeDir
}

// ServerDefaultHelp describes the server's default of the socket name, for
// flag help.
func ServerDefaultHelp(name string) string {
	return filepath.Join(RootDir, name) + " as root, else $XDG_RUNTIME_DIR/badge/" + name
}

// ClientDefaultHelp describes the client default of the socket name, for
// flag help.
func ClientDefaultHelp(name string) string {
	return filepath.Join(RootDir, name) + ", or $XDG_RUNTIME_DIR/badge/" + name + " for a caller other than root when that is missing"
}

// exists reports whether a file is at p (a dangling link counts).
func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
