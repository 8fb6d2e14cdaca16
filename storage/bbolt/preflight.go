package bbolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	"github.com/badge-dev/badge/storage"
)

// bbolt's on-disk format (version 2), as far as preflight needs it.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	metaSumLen     = 56 // bytes of meta covered by its checksum, which follows
	noFreelist     = ^uint64(0)

	branchPageFlag = 0x01
	leafPageFlag   = 0x02
	bucketLeafFlag = 0x01 // leaf element flag: the value is a bucket

	branchElemSize = 16 // pos u32, ksize u32, pgid u64
	leafElemSize   = 16 // flags u32, pos u32, ksize u32, vsize u32
	bucketHdrSize  = 16 // root pgid u64, sequence u64

	// maxPageSize bounds the page size a meta page may claim; bbolt
	// writes the operating system's page size (4 KiB to 64 KiB).
	maxPageSize = 1 << 16
)

type boltMeta struct {
	pageSize uint32
	root     uint64 // page of the root bucket
	freelist uint64
	pgid     uint64 // high water mark: pages at or above it are not in use
	txid     uint64
}

// preflight checks, before bbolt sees it, every page that the file's
// current meta page makes reachable, reading them with pread rather than
// through a memory map. It returns an error wrapping storage.ErrCorrupt
// that names the first damaged page.
//
// The store does not keep bbolt's freelist on disk while it runs (see
// Options in openDB), so bbolt rebuilds the freelist at open by walking
// every page. bbolt reports damage found on that walk by panicking, and it
// walks in a goroutine of its own, where a page pointing outside the file
// faults the process: no recover can catch either. preflight checks what
// that walk relies on (page numbers within the file and below the high
// water mark, no page referenced twice, branch or leaf pages only, elements
// within their pages, keys in order), so that a file it passes is one bbolt
// can walk. A file whose meta pages are both invalid is left to bbolt,
// which refuses it with an error.
func preflight(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt creates it, or reports why it cannot
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("storage/bbolt: open %s: %w", path, err)
	}
	cur, ok := currentMeta(f)
	if !ok {
		return nil
	}
	w := walker{f: f, size: fi.Size(), meta: cur, seen: make(map[uint64]bool)}
	if err := w.check(); err != nil {
		return fmt.Errorf("storage/bbolt: open %s: %w: %w", path, storage.ErrCorrupt, err)
	}
	return nil
}

// currentMeta returns the meta page bbolt would use: the valid one with
// the higher transaction id.
func currentMeta(f *os.File) (boltMeta, bool) {
	m0, ok0 := readMeta(f, 0)
	pageSize := int64(os.Getpagesize())
	if ok0 {
		pageSize = int64(m0.pageSize)
	}
	m1, ok1 := readMeta(f, pageSize)
	switch {
	case ok0 && ok1:
		if m1.txid > m0.txid {
			return m1, true
		}
		return m0, true
	case ok0:
		return m0, true
	case ok1:
		return m1, true
	}
	return boltMeta{}, false
}

// readMeta reads and checks the meta page at off.
func readMeta(f *os.File, off int64) (boltMeta, bool) {
	var buf [pageHeaderSize + metaSumLen + 8]byte
	if _, err := f.ReadAt(buf[:], off); err != nil {
		return boltMeta{}, false
	}
	m := buf[pageHeaderSize:]
	le := binary.NativeEndian
	h := fnv.New64a()
	h.Write(m[:metaSumLen])
	if le.Uint32(m[0:]) != boltMagic || le.Uint32(m[4:]) != boltVersion || le.Uint64(m[metaSumLen:]) != h.Sum64() {
		return boltMeta{}, false
	}
	return boltMeta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		pgid:     le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}, true
}

// walker checks the tree of one meta page.
type walker struct {
	f    *os.File
	size int64 // of the file
	meta boltMeta
	seen map[uint64]bool // pages reached so far, overflow pages included
}

func (w *walker) check() error {
	ps := int64(w.meta.pageSize)
	if ps < 512 || ps > maxPageSize || ps&(ps-1) != 0 {
		return fmt.Errorf("meta page: page size %d", ps)
	}
	if w.meta.pgid < 2 || w.meta.pgid > uint64(w.size/ps) {
		return fmt.Errorf("meta page: high water mark %d outside the file's %d pages", w.meta.pgid, w.size/ps)
	}
	return w.bucket(w.meta.root, 0)
}

// bucket checks the tree of a bucket whose root is page root. depth
// counts the buckets it is nested in, which bounds recursion on a file
// whose buckets reference each other.
func (w *walker) bucket(root uint64, depth int) error {
	if depth > 64 {
		return fmt.Errorf("page %d: buckets nested more than 64 deep", root)
	}
	_, err := w.page(root, nil, nil, depth)
	return err
}

// page checks page id and the subtree below it: every key is at least min
// and below max (nil: unbounded), as bbolt's own check requires. It
// returns the largest key of the subtree.
func (w *walker) page(id uint64, min, max []byte, depth int) ([]byte, error) {
	if id < 2 || id >= w.meta.pgid {
		return nil, fmt.Errorf("page %d: outside pages 2 to %d in use", id, w.meta.pgid-1)
	}
	ps := int64(w.meta.pageSize)
	var hdr [pageHeaderSize]byte
	if _, err := w.f.ReadAt(hdr[:], int64(id)*ps); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, readErr(err))
	}
	le := binary.NativeEndian
	if got := le.Uint64(hdr[0:]); got != id {
		return nil, fmt.Errorf("page %d: header names page %d", id, got)
	}
	flags, overflow := le.Uint16(hdr[8:]), uint64(le.Uint32(hdr[12:]))
	if id+overflow >= w.meta.pgid {
		return nil, fmt.Errorf("page %d: %d overflow pages run past page %d in use", id, overflow, w.meta.pgid-1)
	}
	for p := id; p <= id+overflow; p++ {
		if w.seen[p] {
			return nil, fmt.Errorf("page %d: referenced twice", p)
		}
		w.seen[p] = true
	}
	buf := make([]byte, (overflow+1)*uint64(ps))
	if _, err := w.f.ReadAt(buf, int64(id)*ps); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, readErr(err))
	}
	switch flags {
	case branchPageFlag:
		return w.branch(id, buf, min, max, depth)
	case leafPageFlag:
		return w.leaf(id, buf, min, max, depth)
	}
	return nil, fmt.Errorf("page %d: flags %#x, want a branch or leaf page", id, flags)
}

func (w *walker) branch(id uint64, buf, min, max []byte, depth int) ([]byte, error) {
	n, err := elements(id, buf, branchElemSize)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("page %d: branch page without elements", id)
	}
	le := binary.NativeEndian
	keys := make([][]byte, n)
	for i := range n {
		e := pageHeaderSize + i*branchElemSize
		k, err := span(id, i, buf, e, le.Uint32(buf[e:]), uint64(le.Uint32(buf[e+4:])))
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	running := min
	var largest []byte
	for i := range n {
		if err := keyOrder(id, i, keys[i], running, max); err != nil {
			return nil, err
		}
		next := max
		if i+1 < n {
			next = keys[i+1]
		}
		child := le.Uint64(buf[pageHeaderSize+i*branchElemSize+8:])
		if largest, err = w.page(child, keys[i], next, depth); err != nil {
			return nil, err
		}
		running = largest
	}
	return largest, nil
}

func (w *walker) leaf(id uint64, buf, min, max []byte, depth int) ([]byte, error) {
	n, err := elements(id, buf, leafElemSize)
	if err != nil {
		return nil, err
	}
	le := binary.NativeEndian
	running := min
	for i := range n {
		e := pageHeaderSize + i*leafElemSize
		flags, pos := le.Uint32(buf[e:]), le.Uint32(buf[e+4:])
		ksize, vsize := le.Uint32(buf[e+8:]), le.Uint32(buf[e+12:])
		kv, err := span(id, i, buf, e, pos, uint64(ksize)+uint64(vsize))
		if err != nil {
			return nil, err
		}
		k, v := kv[:ksize], kv[ksize:]
		if err := keyOrder(id, i, k, running, max); err != nil {
			return nil, err
		}
		running = k
		if flags&bucketLeafFlag != 0 {
			if err := w.bucketValue(id, i, v, depth+1); err != nil {
				return nil, err
			}
		}
	}
	if n == 0 {
		return nil, nil // as bbolt's check: an empty leaf has no largest key
	}
	return running, nil
}

// bucketValue checks the bucket stored in leaf element i of page id: its
// own tree, or the inline page it carries.
func (w *walker) bucketValue(id uint64, i int, v []byte, depth int) error {
	if len(v) < bucketHdrSize {
		return fmt.Errorf("page %d: element %d: bucket header of %d bytes", id, i, len(v))
	}
	if root := binary.NativeEndian.Uint64(v); root != 0 {
		return w.bucket(root, depth)
	}
	inline := v[bucketHdrSize:]
	if len(inline) < pageHeaderSize {
		return fmt.Errorf("page %d: element %d: inline bucket of %d bytes", id, i, len(inline))
	}
	if flags := binary.NativeEndian.Uint16(inline[8:]); flags != leafPageFlag {
		return fmt.Errorf("page %d: element %d: inline bucket with page flags %#x", id, i, flags)
	}
	if depth > 64 {
		return fmt.Errorf("page %d: buckets nested more than 64 deep", id)
	}
	_, err := w.leaf(id, inline, nil, nil, depth)
	return err
}

// elements returns the element count of a page, checking that the
// elements fit in it.
func elements(id uint64, buf []byte, size int) (int, error) {
	n := int(binary.NativeEndian.Uint16(buf[10:]))
	if pageHeaderSize+n*size > len(buf) {
		return 0, fmt.Errorf("page %d: %d elements do not fit in %d bytes", id, n, len(buf))
	}
	return n, nil
}

// span returns the n bytes at pos past the element that starts at e, as
// bbolt addresses keys and values.
func span(id uint64, i int, buf []byte, e int, pos uint32, n uint64) ([]byte, error) {
	start := uint64(e) + uint64(pos)
	end := start + n
	if end > uint64(len(buf)) {
		return nil, fmt.Errorf("page %d: element %d: key or value outside the page", id, i)
	}
	return buf[start:end], nil
}

// keyOrder applies bbolt's key order rules: the first key of a page is at
// least the one above it in the tree, every later key is greater than the
// one before, and every key is below the next key of the page above.
func keyOrder(id uint64, i int, k, prev, max []byte) error {
	switch {
	case i == 0 && prev != nil && bytes.Compare(prev, k) > 0:
		return fmt.Errorf("page %d: first key %x is below its parent's key %x", id, k, prev)
	case i > 0 && bytes.Compare(prev, k) >= 0:
		return fmt.Errorf("page %d: key %d (%x) is not above the key before it (%x)", id, i, k, prev)
	case max != nil && bytes.Compare(k, max) >= 0:
		return fmt.Errorf("page %d: key %d (%x) is not below its parent's next key %x", id, i, k, max)
	}
	return nil
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("past the end of the file")
	}
	return err
}
