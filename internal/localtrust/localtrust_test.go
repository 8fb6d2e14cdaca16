package localtrust

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

const other = 1001 // a uid that is neither root nor this process's

// tree builds dirs, files and links under a fresh temporary directory and
// returns its path. Modes are set with Chmod, so no umask applies.
type node struct {
	path  string
	mode  fs.FileMode // directory unless file is set; ignored for links
	file  bool
	link  string // symbolic link target
	owner int    // -1: leave as created
}

func build(t *testing.T, nodes []node) string {
	t.Helper()
	base := t.TempDir()
	for _, n := range nodes {
		p := filepath.Join(base, n.path)
		var err error
		switch {
		case n.link != "":
			target := n.link
			if filepath.IsAbs(target) {
				target = filepath.Join(base, target)
			}
			err = os.Symlink(target, p)
		case n.file:
			err = os.WriteFile(p, []byte("x"), 0o600)
		default:
			err = os.Mkdir(p, 0o700)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n.link == "" {
			if err := os.Chmod(p, n.mode); err != nil {
				t.Fatal(err)
			}
		}
		if n.owner >= 0 {
			if os.Geteuid() != 0 {
				t.Skip("changing the owner of a file needs root")
			}
			if err := os.Lchown(p, n.owner, -1); err != nil {
				t.Fatal(err)
			}
		}
	}
	return base
}

func TestCheckPath(t *testing.T) {
	me := uint32(os.Geteuid())
	d := func(path string, mode fs.FileMode) node { return node{path: path, mode: mode, owner: -1} }
	for _, tc := range []struct {
		name    string
		nodes   []node
		path    string // relative to the tree; "/x" means the absolute path x
		uid     uint32 // the trusted uid; this process's by default (see below)
		policy  Policy
		wantErr error  // nil, ErrUntrustedPath or fs.ErrNotExist
		wantBad string // the element at fault, relative to the tree
	}{
		{name: "private dir", nodes: []node{d("a", 0o700)}, path: "a", policy: Exclusive},
		{name: "dir readable by others", nodes: []node{d("a", 0o755)}, path: "a", policy: RootOrUID},
		{name: "private file", nodes: []node{{path: "f", mode: 0o600, file: true, owner: -1}}, path: "f", policy: Exclusive},
		{name: "group-writable dir", nodes: []node{d("a", 0o775)}, path: "a", wantErr: ErrUntrustedPath, wantBad: "a"},
		{name: "world-writable file", nodes: []node{{path: "f", mode: 0o666, file: true, owner: -1}}, path: "f", policy: Exclusive,
			wantErr: ErrUntrustedPath, wantBad: "f"},
		{name: "sticky world-writable dir itself", nodes: []node{d("tmp", fs.ModeSticky|0o777)}, path: "tmp",
			wantErr: ErrUntrustedPath, wantBad: "tmp"},
		{name: "sticky world-writable dir on the way", nodes: []node{d("tmp", fs.ModeSticky|0o777), d("tmp/a", 0o755)}, path: "tmp/a"},
		{name: "sticky dir itself, OnTheWay", nodes: []node{d("tmp", fs.ModeSticky|0o777)}, path: "tmp", policy: OnTheWay},
		{name: "world-writable dir on the way", nodes: []node{d("w", 0o777), d("w/a", 0o700)}, path: "w/a",
			wantErr: ErrUntrustedPath, wantBad: "w"},
		{name: "group-writable dir on the way", nodes: []node{d("g", 0o770), d("g/a", 0o700)}, path: "g/a",
			wantErr: ErrUntrustedPath, wantBad: "g"},
		{name: "dir owned by another user", nodes: []node{{path: "a", mode: 0o755, owner: other}}, path: "a",
			wantErr: ErrUntrustedPath, wantBad: "a"},
		{name: "dir on the way owned by another user", nodes: []node{{path: "p", mode: 0o755, owner: other}, d("p/a", 0o700)},
			path: "p/a", wantErr: ErrUntrustedPath, wantBad: "p"},
		{name: "another user's dir in a sticky dir", nodes: []node{d("tmp", fs.ModeSticky|0o777), {path: "tmp/badge", mode: 0o755, owner: other}},
			path: "tmp/badge", wantErr: ErrUntrustedPath, wantBad: "tmp/badge"},
		{name: "root-owned dir, Exclusive for another uid", nodes: []node{d("a", 0o700)}, path: "a", uid: other + 1, policy: Exclusive,
			wantErr: ErrUntrustedPath, wantBad: "a"},
		{name: "link to a trusted dir", nodes: []node{d("real", 0o700), {path: "l", link: "/real", owner: -1}}, path: "l", policy: Exclusive},
		{name: "relative link with ..", nodes: []node{d("real", 0o700), d("s", 0o755), {path: "s/l", link: "../real", owner: -1}},
			path: "s/l", policy: Exclusive},
		{name: "link through a world-writable dir", nodes: []node{d("w", 0o777), d("w/real", 0o700), {path: "l", link: "/w/real", owner: -1}},
			path: "l", wantErr: ErrUntrustedPath, wantBad: "w"},
		{name: "link owned by another user in a sticky dir", nodes: []node{d("tmp", fs.ModeSticky|0o777), d("real", 0o700),
			{path: "tmp/l", link: "/real", owner: other}}, path: "tmp/l", wantErr: ErrUntrustedPath, wantBad: "tmp/l"},
		{name: "link on the way to a trusted dir", nodes: []node{d("real", 0o755), d("real/a", 0o700), {path: "l", link: "real", owner: -1}},
			path: "l/a", policy: Exclusive},
		{name: "link loop", nodes: []node{{path: "x", link: "y", owner: -1}, {path: "y", link: "x", owner: -1}}, path: "x",
			wantErr: ErrUntrustedPath},
		{name: "missing", path: "nope", wantErr: fs.ErrNotExist},
		{name: "relative path", path: "/relative/path", wantErr: ErrUntrustedPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := build(t, tc.nodes)
			path := filepath.Join(base, tc.path)
			if tc.path == "/relative/path" {
				path = "relative/path"
			}
			uid := tc.uid
			if uid == 0 {
				uid = me
			}
			err := CheckPath(path, uid, tc.policy)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckPath(%s) = %v, want nil", path, err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("CheckPath(%s) = %v, want %v", path, err, tc.wantErr)
			}
			var pe *PathError
			if tc.wantBad != "" {
				if !errors.As(err, &pe) || pe.Elem != filepath.Join(base, tc.wantBad) || pe.Path != path {
					t.Fatalf("CheckPath(%s) = %v, want a *PathError at %s", path, err, tc.wantBad)
				}
			}
		})
	}
}

// TestPathErrorMessage: the message names the file at fault, its owner
// and its mode.
func TestPathErrorMessage(t *testing.T) {
	e := &PathError{Path: "/tmp/badge/sock", Elem: "/tmp/badge", Owner: 1001, Mode: fs.ModeDir | fs.ModeSticky | 0o777, Want: "it must be ..."}
	want := "/tmp/badge/sock: /tmp/badge is owned by uid 1001 with mode 1777; it must be ..."
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestMkdirAll: nothing is created below a directory another user can
// write; below a trusted or sticky one the directory is made.
func TestMkdirAll(t *testing.T) {
	me := uint32(os.Geteuid())
	base := build(t, []node{{path: "w", mode: 0o777, owner: -1}, {path: "tmp", mode: fs.ModeSticky | 0o777, owner: -1}})
	if err := MkdirAll(filepath.Join(base, "w", "a", "b"), 0o700, me, Exclusive); !errors.Is(err, ErrUntrustedPath) {
		t.Fatalf("under a world-writable dir: %v, want ErrUntrustedPath", err)
	}
	if _, err := os.Lstat(filepath.Join(base, "w", "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("created a directory under a world-writable one: %v", err)
	}
	for _, p := range []string{"tmp/a/b", "c"} {
		if err := MkdirAll(filepath.Join(base, p), 0o700, me, Exclusive); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	// An existing directory is checked, not changed.
	if err := MkdirAll(filepath.Join(base, "tmp"), 0o700, me, RootOrUID); !errors.Is(err, ErrUntrustedPath) {
		t.Fatalf("existing sticky dir as the directory itself: %v, want ErrUntrustedPath", err)
	}
}
