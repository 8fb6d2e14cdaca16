package socketpath

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"/run/badge/workload.sock", "/run/badge/workload.sock", nil},
		{"unix:///run/badge/workload.sock", "/run/badge/workload.sock", nil},
		{"unix:/run/badge/workload.sock", "/run/badge/workload.sock", nil},
		{"/run//badge/../badge/w.sock", "/run/badge/w.sock", nil},
		{"relative.sock", "", ErrNotAbsolute},
		{"unix://relative.sock", "", ErrNotAbsolute},
		{"unix:relative.sock", "", ErrNotAbsolute},
		{"", "", ErrNotAbsolute},
		{"tcp://127.0.0.1:8081", "", ErrNotAbsolute},
		{"unix:/tmp/badge/../badge/workload.sock", "/tmp/badge/workload.sock", nil},
		{"unix:///run/w.sock?mode=x", "", ErrNotAbsolute},
		{"unix:///run/w.sock#frag", "", ErrNotAbsolute},
		{"unix://host/run/w.sock", "", ErrNotAbsolute},
		{"unix://user@/run/w.sock", "", ErrNotAbsolute},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Errorf("Parse(%q) = %q, %v, want %q, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	env := func(kv map[string]string) func(string) string {
		return func(k string) string { return kv[k] }
	}
	tests := []struct {
		name    string
		admin   bool
		flag    string
		env     map[string]string
		want    string
		wantErr error
	}{
		{"workload default", false, "", nil, DefaultWorkload, nil},
		{"workload flag first", false, "/f.sock", map[string]string{EnvSPIFFEEndpoint: "unix:///s.sock", EnvWorkload: "/b.sock"}, "/f.sock", nil},
		{"SPIFFE_ENDPOINT_SOCKET before BADGE_SOCKET", false, "", map[string]string{EnvSPIFFEEndpoint: "unix:///s.sock", EnvWorkload: "/b.sock"}, "/s.sock", nil},
		{"BADGE_SOCKET", false, "", map[string]string{EnvWorkload: "/b.sock"}, "/b.sock", nil},
		{"workload ignores BADGE_ADMIN_SOCKET", false, "", map[string]string{EnvAdmin: "/a.sock"}, DefaultWorkload, nil},
		{"bad environment value", false, "", map[string]string{EnvSPIFFEEndpoint: "w.sock"}, "", ErrNotAbsolute},
		{"admin default", true, "", nil, DefaultAdmin, nil},
		{"admin flag first", true, "/f.sock", map[string]string{EnvAdmin: "/a.sock"}, "/f.sock", nil},
		{"BADGE_ADMIN_SOCKET", true, "", map[string]string{EnvAdmin: "unix:/a.sock"}, "/a.sock", nil},
		{"admin ignores the workload variables", true, "", map[string]string{EnvSPIFFEEndpoint: "unix:///s.sock", EnvWorkload: "/b.sock"}, DefaultAdmin, nil},
		{"bad admin flag", true, "a.sock", nil, "", ErrNotAbsolute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Workload
			if tt.admin {
				f = Admin
			}
			got, err := f(tt.flag, env(tt.env))
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("got %q, %v, want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestDefaultDirs: root's sockets are in /run/badge; another user's
// server uses $XDG_RUNTIME_DIR/badge (and needs it), and another user's
// client falls back to it when /run/badge has no such socket.
func TestDefaultDirs(t *testing.T) {
	xdg := func(v string) func(string) string {
		return func(k string) string {
			if k == "XDG_RUNTIME_DIR" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name       string
		euid       int
		xdg        string
		runExists  bool
		wantServer string // "": ErrNoRuntimeDir
		wantClient string
	}{
		{"root", 0, "/run/user/0", false, "/run/badge", "/run/badge/admin.sock"},
		{"user", 1000, "/run/user/1000", false, "/run/user/1000/badge", "/run/user/1000/badge/admin.sock"},
		{"user, root's server running", 1000, "/run/user/1000", true, "/run/user/1000/badge", "/run/badge/admin.sock"},
		{"user without XDG_RUNTIME_DIR", 1000, "", false, "", "/run/badge/admin.sock"},
		{"user with a relative XDG_RUNTIME_DIR", 1000, "run", false, "", "/run/badge/admin.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := ServerDir(tc.euid, xdg(tc.xdg))
			if tc.wantServer == "" {
				if !errors.Is(err, ErrNoRuntimeDir) {
					t.Errorf("server socket dir = %q, %v; want ErrNoRuntimeDir", dir, err)
				}
			} else if err != nil || dir != tc.wantServer {
				t.Errorf("server socket dir = %q, %v; want %s", dir, err, tc.wantServer)
			}
			exists := func(p string) bool { return tc.runExists && p == "/run/badge/admin.sock" }
			if got := ClientDefault(tc.euid, xdg(tc.xdg), AdminName, exists); got != tc.wantClient {
				t.Errorf("client socket = %q, want %s", got, tc.wantClient)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"/run/w.sock", "unix:///run/w.sock", "unix:/x", "unix://", "", "..", "unix:///../.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrNotAbsolute) {
				t.Fatalf("Parse(%q): %v, not ErrNotAbsolute", s, err)
			}
			return
		}
		again, err := Parse(p)
		if err != nil || again != p {
			t.Fatalf("Parse(Parse(%q) = %q) = %q, %v: not a fixed point", s, p, again, err)
		}
	})
}
