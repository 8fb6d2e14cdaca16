// Package backup is the format of a badge backup: a tar archive holding
// the database as of one read transaction, the CA and JWT private key
// files it references, and last a manifest with the size and SHA-256 of
// every file, so that a truncated or altered archive is refused before
// anything is restored from it.
//
//	badge.db        the bbolt database (entries, revocations, serials,
//	                key records and certificates, OAuth clients, audit trail)
//	keys/NAME.key   each private key file referenced by a key record
//	MANIFEST.json   Manifest: format, creation time, trust domain, files
//
// A backup holds the CA's private keys: whoever has it can sign SVIDs of
// the trust domain. Keep it as secret as the data directory.
//
// Read treats the archive as untrusted input: it accepts only those
// names, regular files, sizes within the limits below, each name once,
// and a manifest that matches every file; it never creates anything
// itself, so its caller decides where the content goes.
package backup

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// Names in the archive.
const (
	DBName       = "badge.db"
	KeyDir       = "keys"
	ManifestName = "MANIFEST.json"
	// Format is the version of the layout this package writes and reads.
	Format = 1
)

// Limits of what Read accepts.
const (
	// MaxKeyFile bounds a key file (a PEM key is a few hundred bytes).
	MaxKeyFile = 1 << 20
	// MaxManifest bounds the manifest.
	MaxManifest = 1 << 20
	// MaxKeyFiles bounds the number of key files.
	MaxKeyFiles = 4096
	// MaxDB bounds the database file.
	MaxDB = 1 << 40
)

// ErrInvalid is wrapped by every error Read returns for an archive that
// is not a complete, unaltered badge backup.
var ErrInvalid = errors.New("not a valid badge backup")

// Manifest describes a backup; it is the archive's last member.
type Manifest struct {
	Format      int       `json:"format"`
	Created     time.Time `json:"created"`
	TrustDomain string    `json:"trust_domain"`
	Files       []File    `json:"files"`
}

// File is one member of the archive.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Writer writes a backup archive.
type Writer struct {
	tw *tar.Writer
	m  Manifest
}

// NewWriter starts a backup archive on w.
func NewWriter(w io.Writer, trustDomain string, created time.Time) *Writer {
	return &Writer{tw: tar.NewWriter(w), m: Manifest{Format: Format, Created: created.UTC(), TrustDomain: trustDomain}}
}

// Add writes the member name of size bytes, produced by write, and
// records its hash. write must write exactly size bytes.
func (w *Writer) Add(name string, size int64, modTime time.Time, write func(io.Writer) (int64, error)) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: modTime.UTC(), Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("backup: %s: %w", name, err)
	}
	h := sha256.New()
	n, err := write(io.MultiWriter(w.tw, h))
	if err != nil {
		return fmt.Errorf("backup: writing %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("backup: %s: wrote %d bytes, announced %d", name, n, size)
	}
	w.m.Files = append(w.m.Files, File{Name: name, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))})
	return nil
}

// Close writes the manifest and ends the archive, and returns the manifest.
func (w *Writer) Close() (Manifest, error) {
	data, err := json.MarshalIndent(w.m, "", "  ")
	if err != nil {
		return w.m, err
	}
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Size: int64(len(data)), Mode: 0o600, ModTime: w.m.Created, Format: tar.FormatPAX}); err != nil {
		return w.m, fmt.Errorf("backup: manifest: %w", err)
	}
	if _, err := w.tw.Write(data); err != nil {
		return w.m, fmt.Errorf("backup: manifest: %w", err)
	}
	return w.m, w.tw.Close()
}

// checkName accepts badge.db and keys/NAME for a plain file name.
func checkName(name string) error {
	if name == DBName {
		return nil
	}
	dir, file, ok := strings.Cut(name, "/")
	if !ok || dir != KeyDir || !validFileName(file) {
		return fmt.Errorf("backup: %w: member %q: want %s or %s/NAME", ErrInvalid, name, DBName, KeyDir)
	}
	return nil
}

func validFileName(f string) bool {
	return f != "" && f != "." && f != ".." && len(f) <= 255 && path.Base(f) == f &&
		!strings.ContainsAny(f, "/\\\x00") && !strings.HasPrefix(f, ".")
}

// Read reads a backup archive from r. It calls fn with each member (the
// database, then key files, in archive order) and a reader of its
// content; fn must consume it or return an error. Then it checks the
// manifest against what was read. Any problem gives an error wrapping
// ErrInvalid that names the member; fn's own errors are returned as they
// are. Since the manifest comes last, fn must not make its output
// visible until Read has returned nil.
func Read(r io.Reader, fn func(f File, content io.Reader) error) (Manifest, error) {
	tr := tar.NewReader(r)
	seen := map[string]File{}
	var order []string
	var m Manifest
	haveManifest := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return m, fmt.Errorf("backup: %w: %v (truncated or not a tar archive?)", ErrInvalid, err)
		}
		if haveManifest {
			return m, fmt.Errorf("backup: %w: member %q after the manifest", ErrInvalid, hdr.Name)
		}
		if hdr.Typeflag != tar.TypeReg {
			return m, fmt.Errorf("backup: %w: member %q is not a regular file", ErrInvalid, hdr.Name)
		}
		if hdr.Name == ManifestName {
			if hdr.Size < 0 || hdr.Size > MaxManifest {
				return m, fmt.Errorf("backup: %w: manifest of %d bytes exceeds %d", ErrInvalid, hdr.Size, MaxManifest)
			}
			data, err := io.ReadAll(io.LimitReader(tr, MaxManifest))
			if err != nil {
				return m, fmt.Errorf("backup: %w: reading the manifest: %v (the archive is truncated?)", ErrInvalid, err)
			}
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&m); err != nil {
				return m, fmt.Errorf("backup: %w: manifest: %v", ErrInvalid, err)
			}
			haveManifest = true
			continue
		}
		if err := checkName(hdr.Name); err != nil {
			return m, err
		}
		if _, dup := seen[hdr.Name]; dup {
			return m, fmt.Errorf("backup: %w: member %q appears twice", ErrInvalid, hdr.Name)
		}
		limit := int64(MaxKeyFile)
		if hdr.Name == DBName {
			limit = MaxDB
		} else if len(seen) > MaxKeyFiles {
			return m, fmt.Errorf("backup: %w: more than %d key files", ErrInvalid, MaxKeyFiles)
		}
		if hdr.Size < 0 || hdr.Size > limit {
			return m, fmt.Errorf("backup: %w: member %q of %d bytes exceeds %d", ErrInvalid, hdr.Name, hdr.Size, limit)
		}
		h := sha256.New()
		cr := &countReader{r: io.TeeReader(tr, h)}
		if err := fn(File{Name: hdr.Name, Size: hdr.Size}, cr); err != nil {
			return m, err
		}
		if _, err := io.Copy(io.Discard, cr); err != nil {
			return m, fmt.Errorf("backup: %w: reading %q: %v (the archive is truncated?)", ErrInvalid, hdr.Name, err)
		}
		if cr.n != hdr.Size {
			return m, fmt.Errorf("backup: %w: member %q is truncated", ErrInvalid, hdr.Name)
		}
		seen[hdr.Name] = File{Name: hdr.Name, Size: hdr.Size, SHA256: hex.EncodeToString(h.Sum(nil))}
		order = append(order, hdr.Name)
	}
	if !haveManifest {
		return m, fmt.Errorf("backup: %w: no %s at the end: the archive is truncated", ErrInvalid, ManifestName)
	}
	if m.Format != Format {
		return m, fmt.Errorf("backup: %w: format %d, this badge reads format %d", ErrInvalid, m.Format, Format)
	}
	if len(m.Files) != len(order) {
		return m, fmt.Errorf("backup: %w: the manifest lists %d files, the archive holds %d", ErrInvalid, len(m.Files), len(order))
	}
	for i, f := range m.Files {
		got, ok := seen[f.Name]
		if !ok || order[i] != f.Name {
			return m, fmt.Errorf("backup: %w: the manifest lists %q as member %d, the archive does not", ErrInvalid, f.Name, i+1)
		}
		if got != f {
			return m, fmt.Errorf("backup: %w: member %q does not match the manifest (size %d, sha256 %s; the manifest says %d, %s)",
				ErrInvalid, f.Name, got.Size, got.SHA256, f.Size, f.SHA256)
		}
	}
	if _, ok := seen[DBName]; !ok {
		return m, fmt.Errorf("backup: %w: no %s", ErrInvalid, DBName)
	}
	return m, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
