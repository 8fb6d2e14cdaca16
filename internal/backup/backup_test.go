package backup

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// archive writes a backup of the given members (name → content).
func archive(t testing.TB, members ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, "example.org", time.Unix(1700000000, 0))
	for _, m := range members {
		content := m[1]
		if err := w.Add(m[0], int64(len(content)), time.Unix(1700000000, 0), func(w io.Writer) (int64, error) {
			n, err := io.WriteString(w, content)
			return int64(n), err
		}); err != nil {
			t.Fatalf("Add(%s): %v", m[0], err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readAll(data []byte) (map[string]string, Manifest, error) {
	got := map[string]string{}
	m, err := Read(bytes.NewReader(data), func(f File, r io.Reader) error {
		b, err := io.ReadAll(r)
		got[f.Name] = string(b)
		return err
	})
	return got, m, err
}

func TestRoundTrip(t *testing.T) {
	data := archive(t, [2]string{DBName, "database"}, [2]string{"keys/x509-root-1.key", "root"}, [2]string{"keys/jwt-2.key", "jwt"})
	got, m, err := readAll(data)
	if err != nil {
		t.Fatal(err)
	}
	if got[DBName] != "database" || got["keys/x509-root-1.key"] != "root" || got["keys/jwt-2.key"] != "jwt" || len(got) != 3 {
		t.Errorf("read %v", got)
	}
	if m.TrustDomain != "example.org" || m.Format != Format || len(m.Files) != 3 || m.Files[0].Size != 8 {
		t.Errorf("manifest %+v", m)
	}
}

// rewrite re-packs a valid archive's members through edit.
func rewrite(t *testing.T, data []byte, edit func(h *tar.Header, content []byte) (*tar.Header, []byte)) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c, _ := io.ReadAll(tr)
		h, c = edit(h, c)
		if h == nil {
			continue
		}
		h.Size = int64(len(c))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(c)
	}
	tw.Close()
	return out.Bytes()
}

func TestReadRefuses(t *testing.T) {
	good := archive(t, [2]string{DBName, "database"}, [2]string{"keys/a.key", "key a"})
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", good[:len(good)-1536], "truncated"},
		{"empty", nil, "no MANIFEST.json"},
		{"altered content", rewrite(t, good, func(h *tar.Header, c []byte) (*tar.Header, []byte) {
			if h.Name == "keys/a.key" {
				c = []byte("key b")
			}
			return h, c
		}), `member "keys/a.key" does not match`},
		{"member dropped", rewrite(t, good, func(h *tar.Header, c []byte) (*tar.Header, []byte) {
			if h.Name == "keys/a.key" {
				return nil, nil
			}
			return h, c
		}), "lists 2 files, the archive holds 1"},
		{"path traversal", rewrite(t, good, func(h *tar.Header, c []byte) (*tar.Header, []byte) {
			if h.Name == "keys/a.key" {
				h.Name = "keys/../../etc/passwd"
			}
			return h, c
		}), `member "keys/../../etc/passwd"`},
		{"symlink", rewrite(t, good, func(h *tar.Header, c []byte) (*tar.Header, []byte) {
			if h.Name == "keys/a.key" {
				h.Typeflag, h.Linkname, c = tar.TypeSymlink, "/etc/shadow", nil
			}
			return h, c
		}), "not a regular file"},
		{"duplicate", rewrite(t, good, func(h *tar.Header, c []byte) (*tar.Header, []byte) {
			if h.Name == "keys/a.key" {
				h.Name = DBName
			}
			return h, c
		}), "appears twice"},
		{"no database", archive(t, [2]string{"keys/a.key", "key a"}), "no badge.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readAll(tc.data)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Read = %v; want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestWriterRefusesBadNames(t *testing.T) {
	w := NewWriter(io.Discard, "example.org", time.Now())
	for _, name := range []string{"keys/", "keys/../x", "other", "/badge.db", "keys/.hidden", "keys/a/b"} {
		if err := w.Add(name, 0, time.Now(), func(io.Writer) (int64, error) { return 0, nil }); !errors.Is(err, ErrInvalid) {
			t.Errorf("Add(%q) = %v; want ErrInvalid", name, err)
		}
	}
}

// FuzzRead feeds arbitrary archives to Read: it must never panic, and
// what it accepts must have a manifest matching what it passed on.
func FuzzRead(f *testing.F) {
	f.Add(archive(f, [2]string{DBName, "database"}, [2]string{"keys/a.key", "key"}))
	f.Add(archive(f, [2]string{DBName, ""}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, m, err := readAll(data)
		if err != nil {
			return
		}
		if len(got) != len(m.Files) {
			t.Fatalf("accepted %d members with a manifest of %d", len(got), len(m.Files))
		}
		for _, f := range m.Files {
			if int64(len(got[f.Name])) != f.Size {
				t.Fatalf("member %s: %d bytes, manifest %d", f.Name, len(got[f.Name]), f.Size)
			}
		}
	})
}
