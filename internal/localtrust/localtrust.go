// Package localtrust decides what badge trusts on its own host: paths that
// no other non-root user can change, and Unix-socket servers run by a
// trusted uid.
//
// A path is trusted for uid when nobody but root and uid can replace what
// it names: every directory from / down to it, and every symbolic link
// followed on the way, is owned by root or uid, and no such directory is
// writable by group or others, except that a directory on the way (not the
// path itself) may be world-writable if it is sticky, like /tmp, whose
// entries only their owners may rename or remove. The path itself is held
// to the same rule without the sticky exception, and with Exclusive it
// must be owned by uid itself. Symbolic links are followed, component by
// component, as the kernel does: each link must be owned by root or uid
// (a link's own mode means nothing; whoever can write its directory, or
// owns it in a sticky directory, can replace it), and the directories its
// target names are checked like the others. This is OpenSSH's safe_path
// rule, with the sticky exception for directories on the way.
//
// The checks read the file system once; they are meant for paths whose
// trusted state no untrusted user can change afterwards, which is exactly
// what they establish.
package localtrust

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUntrustedPath is wrapped by the errors of CheckPath for a path that
// another user could change.
var ErrUntrustedPath = errors.New("untrusted path")

// maxLinks bounds the symbolic links followed, as the kernel's ELOOP does.
const maxLinks = 40

// Policy says who may own the path itself.
type Policy int

const (
	// RootOrUID lets root or uid own the path: socket directories.
	RootOrUID Policy = iota
	// Exclusive requires uid to own the path: the data dir, key files.
	Exclusive
	// OnTheWay holds the path to the rule of the directories above it:
	// a sticky, world-writable directory such as /tmp passes.
	OnTheWay
)

// PathError reports a file that another user could change.
type PathError struct {
	Path  string      // the path that was checked
	Elem  string      // the file at fault: Path, or a directory or link on the way
	Owner uint32      // Elem's owner
	Mode  fs.FileMode // Elem's mode
	Want  string      // the rule Elem breaks
}

func (e *PathError) Error() string {
	what := e.Elem
	if e.Elem != e.Path {
		what = fmt.Sprintf("%s: %s", e.Path, e.Elem)
	}
	return fmt.Sprintf("%s is owned by uid %d with mode %s; %s", what, e.Owner, modeString(e.Mode), e.Want)
}

func (e *PathError) Unwrap() error { return ErrUntrustedPath }

// modeString prints the permission bits in octal, with the sticky bit
// (1777) and the file type when it is not a plain file or directory.
func modeString(m fs.FileMode) string {
	p := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	s := fmt.Sprintf("%04o", p)
	if m&fs.ModeSymlink != 0 {
		s += " (symbolic link)"
	}
	return s
}

// CheckPath returns nil when path is trusted for uid under policy (see the
// package documentation), an error wrapping ErrUntrustedPath when it is
// not, and the file system's error (fs.ErrNotExist, ...) when a component
// cannot be read. path must be absolute.
func CheckPath(path string, uid uint32, policy Policy) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s: %w: not an absolute path", path, ErrUntrustedPath)
	}
	path = filepath.Clean(path)
	c := checker{path: path, uid: uid}
	fi, err := os.Lstat("/")
	if err != nil {
		return err
	}
	todo := components(path)
	if err := c.dir("/", fi, len(todo) == 0, policy); err != nil {
		return err
	}
	cur, links := "/", 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur) // cur holds no symbolic link
			continue
		}
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if links++; links > maxLinks {
				return fmt.Errorf("%s: %w: more than %d symbolic links", path, ErrUntrustedPath, maxLinks)
			}
			if owner := ownerOf(fi); owner != 0 && owner != uid {
				return &PathError{Path: path, Elem: next, Owner: owner, Mode: fi.Mode(),
					Want: fmt.Sprintf("a symbolic link on the way must be owned by root or uid %d", uid)}
			}
			target, err := os.Readlink(next)
			if err != nil {
				return err
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			todo = append(components(target), todo...)
			continue
		}
		if err := c.dir(next, fi, len(todo) == 0, policy); err != nil {
			return err
		}
		cur = next
	}
	return nil
}

type checker struct {
	path string
	uid  uint32
}

// dir checks one file: a directory on the way, or (last) the path itself.
func (c checker) dir(name string, fi fs.FileInfo, last bool, policy Policy) error {
	owner := ownerOf(fi)
	m := fi.Mode()
	writable := m.Perm()&0o022 != 0
	var want string
	switch {
	case !last || policy == OnTheWay:
		if (owner != 0 && owner != c.uid) || (writable && m&fs.ModeSticky == 0) {
			want = fmt.Sprintf("every directory on the way must be owned by root or uid %d and not writable by group or others (unless sticky, like /tmp)", c.uid)
		}
	case policy == Exclusive:
		if owner != c.uid || writable {
			want = fmt.Sprintf("it must be owned by uid %d and not writable by group or others", c.uid)
		}
	default:
		if (owner != 0 && owner != c.uid) || writable {
			want = fmt.Sprintf("it must be owned by root or uid %d and not writable by group or others", c.uid)
		}
	}
	if want == "" {
		return nil
	}
	return &PathError{Path: c.path, Elem: name, Owner: owner, Mode: m, Want: want}
}

// components splits a path into its names; an absolute path yields the
// same names as its relative form (the caller restarts from /).
func components(p string) []string {
	return strings.FieldsFunc(p, func(r rune) bool { return r == '/' })
}

// MkdirAll creates path with mode perm, and any missing directory above
// it, like os.MkdirAll, but only below an existing directory that passes
// the rule of directories on the way: nothing is created in a directory
// another user controls. Then it checks path under policy.
func MkdirAll(path string, perm fs.FileMode, uid uint32, policy Policy) error {
	existing := filepath.Clean(path)
	for existing != "/" {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		existing = filepath.Dir(existing)
	}
	if existing != filepath.Clean(path) {
		if err := CheckPath(existing, uid, OnTheWay); err != nil {
			return err
		}
		if err := os.MkdirAll(path, perm); err != nil {
			return err
		}
	}
	return CheckPath(path, uid, policy)
}

func ownerOf(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0) // unknown: trusted by no rule
}

// OwnerOf returns the owner uid of fi, or an impossible uid when the file
// system does not report one.
func OwnerOf(fi fs.FileInfo) uint32 { return ownerOf(fi) }

// CheckSocketDir returns an error wrapping ErrUntrustedPath, naming the
// file at fault with its owner and mode, unless dir is owned by root or
// this process's effective uid and passes CheckPath with RootOrUID: nobody
// else can then move a socket in dir aside. unixsock.Listen applies it.
func CheckSocketDir(dir string) error {
	return CheckPath(dir, uint32(os.Geteuid()), RootOrUID)
}

// CheckPrivatePath is CheckSocketDir for state of this process: path
// itself must be owned by this process's effective uid (not merely by
// root). It applies to the data dir, its database and the key directory.
func CheckPrivatePath(path string) error {
	return CheckPath(path, uint32(os.Geteuid()), Exclusive)
}

// MkdirPrivate creates the directory dir (mode 0700) and any missing
// parent, as MkdirAll with Exclusive for this process's effective uid:
// nothing is created in a directory another user controls, and dir must
// then pass CheckPrivatePath.
func MkdirPrivate(dir string) error {
	return MkdirAll(dir, 0o700, uint32(os.Geteuid()), Exclusive)
}
