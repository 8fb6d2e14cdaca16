package bbolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// treeFile writes a bbolt file without a stored freelist, as the store
// leaves it after a crash: a bucket deep enough for branch pages, values
// on overflow pages, a nested bucket and inline buckets. It returns the
// path and the page numbers of each kind.
func treeFile(tb testing.TB) (path string, branches, leaves, overflows []int) {
	tb.Helper()
	path = filepath.Join(tb.TempDir(), "tree.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		big, err := tx.CreateBucket([]byte("big"))
		if err != nil {
			return err
		}
		for i := range 600 {
			if err := big.Put(fmt.Appendf(nil, "key-%05d", i), make([]byte, 60)); err != nil {
				return err
			}
		}
		if err := big.Put([]byte("large"), make([]byte, 9000)); err != nil {
			return err
		}
		nested, err := big.CreateBucket([]byte("nested"))
		if err != nil {
			return err
		}
		for i := range 200 {
			if err := nested.Put(fmt.Appendf(nil, "n-%04d", i), make([]byte, 30)); err != nil {
				return err
			}
		}
		inline, err := tx.CreateBucket([]byte("inline"))
		if err != nil {
			return err
		}
		if _, err := inline.CreateBucket([]byte("empty")); err != nil {
			return err
		}
		return inline.Put([]byte("k"), []byte("v"))
	})
	if err != nil {
		tb.Fatal(err)
	}
	// Free some pages, so that the rebuilt freelist is not empty.
	err = db.Update(func(tx *bolt.Tx) error {
		for i := range 200 {
			if err := tx.Bucket([]byte("big")).Delete(fmt.Appendf(nil, "key-%05d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for id := 2; ; id++ {
			p, err := tx.Page(id)
			if err != nil || p == nil {
				return err
			}
			switch p.Type {
			case "branch":
				branches = append(branches, id)
			case "leaf":
				leaves = append(leaves, id)
				if p.OverflowCount > 0 {
					overflows = append(overflows, id)
				}
			}
		}
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
	if len(branches) == 0 || len(leaves) == 0 || len(overflows) == 0 {
		tb.Fatalf("tree file has %d branch, %d leaf, %d overflowing pages; want some of each", len(branches), len(leaves), len(overflows))
	}
	return path, branches, leaves, overflows
}

// TestPreflight damages one page of a sound file at a time: preflight
// names the damage and wraps ErrCorrupt, where bbolt would end the process.
func TestPreflight(t *testing.T) {
	src, branches, leaves, overflows := treeFile(t)
	if err := preflight(src); err != nil {
		t.Fatalf("preflight of a sound file: %v", err)
	}
	const ps = 4096
	le := binary.NativeEndian
	branch, leaf := branches[0]*ps, leaves[len(leaves)-1]*ps
	put16 := func(d []byte, at int, v uint16) { le.PutUint16(d[at:], v) }
	put32 := func(d []byte, at int, v uint32) { le.PutUint32(d[at:], v) }
	put64 := func(d []byte, at int, v uint64) { le.PutUint64(d[at:], v) }
	elem := func(page, i int) int { return page + pageHeaderSize + i*16 }
	for _, tc := range []struct {
		name   string
		damage func(d []byte)
		says   string
	}{
		{"child beyond the high water mark", func(d []byte) { put64(d, elem(branch, 1)+8, 1<<40) }, "outside pages"},
		{"child is a meta page", func(d []byte) { put64(d, elem(branch, 1)+8, 1) }, "outside pages"},
		{"header names another page", func(d []byte) { put64(d, leaf, 3) }, "header names page 3"},
		{"page referenced twice", func(d []byte) {
			put64(d, elem(branch, 1)+8, le.Uint64(d[elem(branch, 0)+8:]))
		}, "referenced twice"},
		{"meta flags on a tree page", func(d []byte) { put16(d, leaf+8, 0x04) }, "want a branch or leaf"},
		{"freelist flags on a tree page", func(d []byte) { put16(d, branch+8, 0x10) }, "want a branch or leaf"},
		{"too many elements", func(d []byte) { put16(d, leaf+10, 0xffff) }, "do not fit"},
		{"empty branch page", func(d []byte) { put16(d, branch+10, 0) }, "without elements"},
		{"key outside the page", func(d []byte) { put32(d, elem(leaf, 0)+4, 1<<30) }, "outside the page"},
		{"value outside the page", func(d []byte) { put32(d, elem(leaf, 0)+12, 1<<31) }, "outside the page"},
		{"overflow past the high water mark", func(d []byte) { put32(d, overflows[0]*ps+12, 1<<20) }, "overflow pages run past"},
		{"keys out of order", func(d []byte) {
			k := elem(leaf, 1) + int(le.Uint32(d[elem(leaf, 1)+4:]))
			d[k] = 0 // below the key before it
		}, "not above the key before it"},
		{"key below its parent's", func(d []byte) {
			// The first key of the branch's second child is the
			// branch's own key; lowering it breaks the order.
			child := int(le.Uint64(d[elem(branch, 1)+8:])) * ps
			k := elem(child, 0) + int(le.Uint32(d[elem(child, 0)+4:]))
			d[k] = 0
		}, "below its parent's key"},
		{"bucket header cut short", func(d []byte) {
			// The root bucket's leaf holds the buckets; shrink the
			// value of its first one.
			root := rootLeaf(t, d)
			put32(d, elem(root, 0)+12, 8)
		}, "bucket header of 8 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := readFile(t, src)
			tc.damage(data)
			path := filepath.Join(t.TempDir(), "damaged.db")
			writeFile(t, path, data)
			err := preflight(path)
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("preflight = %v, want ErrCorrupt", err)
			}
			for _, part := range []string{path, tc.says} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not mention %q", err, part)
				}
			}
		})
	}
}

// rootLeaf returns the offset of the root bucket's page, a leaf in these
// small files.
func rootLeaf(t *testing.T, d []byte) int {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meta.db")
	writeFile(t, path, d)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, ok := currentMeta(f)
	if !ok {
		t.Fatal("no valid meta page")
	}
	return int(m.root) * int(m.pageSize)
}

// FuzzPreflight damages one page of a sound file: whatever preflight
// passes, bbolt must open, rebuild the freelist of and read without a
// panic the store cannot recover. A failure here ends the fuzzing process.
func FuzzPreflight(f *testing.F) {
	src, branches, leaves, _ := treeFile(f)
	base := readFile(f, src)
	pages := len(base) / 4096
	f.Add(uint16(0), uint16(0), []byte{})
	for _, p := range []int{branches[0], leaves[0], leaves[len(leaves)-1]} {
		f.Add(uint16(p-2), uint16(8), []byte{0x04})                          // flags
		f.Add(uint16(p-2), uint16(10), []byte{0xff, 0xff})                   // count
		f.Add(uint16(p-2), uint16(24), []byte{0xff, 0xff, 0, 0, 0, 0, 0, 0}) // first child or size
		f.Add(uint16(p-2), uint16(20), []byte{0xf0, 0xff, 0xff, 0x0f})       // first element's pos
	}
	f.Fuzz(func(t *testing.T, page, off uint16, patch []byte) {
		data := slices.Clone(base)
		at := (2+int(page)%(pages-2))*4096 + int(off)%4096
		copy(data[at:], patch)
		path := filepath.Join(t.TempDir(), "fuzz.db")
		writeFile(t, path, data)
		if err := preflight(path); err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("preflight = %v, want ErrCorrupt", err)
			}
			return
		}
		db, err := openDB(path, -1, true)
		if err != nil {
			return
		}
		defer db.Close()
		_ = protect(path, func() error {
			return db.View(func(tx *bolt.Tx) error { return readAll(tx.Cursor()) })
		})
	})
}

// readAll reads every key and value under c, descending into buckets.
func readAll(c *bolt.Cursor) error {
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			if b := c.Bucket().Bucket(k); b != nil {
				if err := readAll(b.Cursor()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// TestFreelistStoredOnClose: while the store runs, bbolt does not store
// its freelist (no write of it on every commit); Close stores it, so that
// a release that expects one can open the file.
func TestFreelistStoredOnClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "badge.db")
	s := openStore(t, path, &Options{NoSync: true})
	if err := s.CreateEntry(t.Context(), storage.Entry{ID: "e1", SPIFFEID: "spiffe://example.org/a"}); err != nil {
		t.Fatal(err)
	}
	if m := metaOf(t, path); m.freelist != noFreelist {
		t.Errorf("while open: the meta page names freelist page %d, want none", m.freelist)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if m := metaOf(t, path); m.freelist == noFreelist {
		t.Error("after Close: no stored freelist")
	}
	// A program that expects a stored freelist opens it as it is.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Errorf("check after Close: %v", err)
	}
	db.Close()
}

// TestOpenAfterCrashReusesPages opens a file left without a stored
// freelist, with free pages in it: the rebuilt freelist hands them out
// again, so rewriting what was deleted does not grow the file.
func TestOpenAfterCrashReusesPages(t *testing.T) {
	path := validFixture(t, 400)
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var deleted [][2][]byte
	err = db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEntries).Cursor()
		for k, v := c.First(); k != nil; k, v = c.First() {
			deleted = append(deleted, [2][]byte{slices.Clone(k), slices.Clone(v)})
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if m := metaOf(t, path); m.freelist != noFreelist {
		t.Fatalf("setup: freelist stored at page %d", m.freelist)
	}
	size := fileSize(t, path)

	s := openStore(t, path, &Options{NoSync: true})
	if s.db.Stats().FreePageN == 0 {
		t.Fatal("the rebuilt freelist is empty; the deleted entries' pages are lost")
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, kv := range deleted {
			if err := tx.Bucket(bucketEntries).Put(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.ListEntries(t.Context()); err != nil || len(got) != len(deleted) {
		t.Fatalf("ListEntries = %d entries, %v; want %d", len(got), err, len(deleted))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if after := fileSize(t, path); after > size {
		t.Errorf("the file grew from %d to %d bytes rewriting what it held before", size, after)
	}
}

func metaOf(t *testing.T, path string) boltMeta {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, ok := currentMeta(f)
	if !ok {
		t.Fatalf("%s: no valid meta page", path)
	}
	return m
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
