// Package socketpath resolves the Unix socket paths that badge's binaries
// dial: the Workload API socket and the admin API socket.
//
// Every binary that talks to a badge server (the badge CLI, badge-bench)
// resolves them the same way, so that a command that works with one works
// with the other:
//
//   - a value may be a path ("/run/w.sock") or a unix URL ("unix:/run/w.sock",
//     "unix:///run/w.sock", the form of SPIFFE_ENDPOINT_SOCKET); it must be
//     absolute, and comes back cleaned;
//   - the Workload API socket is the flag, else SPIFFE_ENDPOINT_SOCKET (the
//     variable every SPIFFE client honours), else BADGE_SOCKET, else
//     DefaultWorkload;
//   - the admin socket is the flag, else BADGE_ADMIN_SOCKET, else
//     DefaultAdmin.
package socketpath

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Default locations.
const (
	DefaultWorkload = "/run/badge/workload.sock"
	DefaultAdmin    = "/run/badge/admin.sock"
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
// cleaned path.
func Parse(v string) (string, error) {
	p := v
	switch {
	case strings.HasPrefix(v, "unix://"):
		p = strings.TrimPrefix(v, "unix://")
	case strings.HasPrefix(v, "unix:"):
		p = strings.TrimPrefix(v, "unix:")
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("socket %q %w", v, ErrNotAbsolute)
	}
	return filepath.Clean(p), nil
}

// Workload resolves the Workload API socket: flagValue, then
// SPIFFE_ENDPOINT_SOCKET, then BADGE_SOCKET (read with getenv), then
// DefaultWorkload.
func Workload(flagValue string, getenv func(string) string) (string, error) {
	return resolve(flagValue, getenv, DefaultWorkload, EnvSPIFFEEndpoint, EnvWorkload)
}

// Admin resolves the admin API socket: flagValue, then BADGE_ADMIN_SOCKET,
// then DefaultAdmin.
func Admin(flagValue string, getenv func(string) string) (string, error) {
	return resolve(flagValue, getenv, DefaultAdmin, EnvAdmin)
}

func resolve(v string, getenv func(string) string, def string, envs ...string) (string, error) {
	for _, name := range envs {
		if v == "" {
			v = getenv(name)
		}
	}
	if v == "" {
		return def, nil
	}
	return Parse(v)
}
