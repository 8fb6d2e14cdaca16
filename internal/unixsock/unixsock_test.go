package unixsock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/badge-dev/badge/internal/localtrust"
)

// socketDir is a temporary directory whose paths fit a Unix socket address
// (108 bytes) whatever the test's name.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "badge-unixsock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestListenUnix(t *testing.T) {
	tests := []struct {
		name string
		// prepare sets up the path (or not) and returns it.
		prepare func(t *testing.T, dir string) string
		mode    os.FileMode
		ok      bool
		// untrusted: the error must wrap ErrUntrustedPath.
		untrusted bool
	}{
		{
			name:    "new socket in a new directory",
			prepare: func(_ *testing.T, dir string) string { return filepath.Join(dir, "sub", "dir", "s.sock") },
			mode:    0o600, ok: true,
		},
		{
			name:    "world-connectable socket",
			prepare: func(_ *testing.T, dir string) string { return filepath.Join(dir, "s.sock") },
			mode:    0o777, ok: true,
		},
		{
			name: "stale socket left by a crash is replaced",
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "s.sock")
				l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				l.SetUnlinkOnClose(false)
				l.Close()
				return p
			},
			mode: 0o600, ok: true,
		},
		{
			name:    "relative path",
			prepare: func(*testing.T, string) string { return "s.sock" },
			mode:    0o600,
		},
		{
			name: "regular file in the way",
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "s.sock")
				writeFile(t, p, []byte("keep me"))
				return p
			},
			mode: 0o600,
		},
		{
			name: "socket of a running server",
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "s.sock")
				l, err := net.Listen("unix", p)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				return p
			},
			mode: 0o600,
		},
		{
			name: "directory writable by others",
			prepare: func(t *testing.T, dir string) string {
				d := openDir(t, dir)
				return filepath.Join(d, "s.sock")
			},
			mode: 0o600, untrusted: true,
		},
		{
			name: "new directory under one writable by others",
			prepare: func(t *testing.T, dir string) string {
				d := openDir(t, dir)
				return filepath.Join(d, "badge", "s.sock")
			},
			mode: 0o600, untrusted: true,
		},
		{
			name: "directory of another user",
			prepare: func(t *testing.T, dir string) string {
				if os.Geteuid() != 0 {
					t.Skip("changing a directory's owner needs root")
				}
				if err := os.Chown(dir, 1001, 1001); err != nil {
					t.Fatal(err)
				}
				return filepath.Join(dir, "s.sock")
			},
			mode: 0o600, untrusted: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := socketDir(t)
			path := tt.prepare(t, dir)
			before, statErr := os.Lstat(path)
			l, err := Listen(path, tt.mode)
			if !tt.ok {
				if err == nil {
					l.Close()
					t.Fatal("Listen succeeded")
				}
				t.Logf("Listen: %v", err)
				if tt.untrusted && !errors.Is(err, localtrust.ErrUntrustedPath) {
					t.Errorf("Listen: %v, want ErrUntrustedPath", err)
				}
				if _, err := os.Lstat(filepath.Dir(path)); tt.untrusted && statErr != nil && err == nil && filepath.Base(filepath.Dir(path)) == "badge" {
					t.Errorf("Listen created %s under an untrusted directory", filepath.Dir(path))
				}
				// Whatever was there is left alone.
				if after, err := os.Lstat(path); statErr == nil && (err != nil || !os.SameFile(before, after)) {
					t.Errorf("%s was replaced or removed by a failed Listen", path)
				}
				return
			}
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			defer l.Close()
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != tt.mode {
				t.Errorf("%s has mode %v, want a socket of mode %v", path, fi.Mode(), tt.mode)
			}
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatalf("dialing the new socket: %v", err)
			}
			c.Close()
		})
	}
}

// TestListenUnixCloseKeepsANewerSocket: a server shutting down removes its
// socket file, but not one a newer server has created at the same path.
func TestListenUnixCloseKeepsANewerSocket(t *testing.T) {
	path := filepath.Join(socketDir(t), "w.sock")
	old, err := Listen(path, 0o777)
	if err != nil {
		t.Fatal(err)
	}
	// A newer server takes the path over (as after a restart that raced
	// the old one's shutdown).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	newer, err := Listen(path, 0o777)
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("closing the old listener removed the newer socket: %v", err)
	}
	newer.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("closing a listener left its own socket behind: %v", err)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// openDir creates dir/open, writable by everyone (whatever the umask).
func openDir(t *testing.T, dir string) string {
	t.Helper()
	d := filepath.Join(dir, "open")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	return d
}
