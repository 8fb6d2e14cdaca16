package bbolt

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"

	"github.com/badge-dev/badge/storage"
)

// bbolt's on-disk meta page, as far as preflight needs it.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16 // id, flags, count, overflow
	metaSumLen     = 56 // bytes of meta covered by its checksum, which follows
	noFreelist     = ^uint64(0)
)

type boltMeta struct {
	pageSize uint32
	freelist uint64
	txid     uint64
}

// preflight refuses, before bbolt sees it, an existing file whose current
// meta page says it has no stored freelist. bbolt rebuilds the freelist of
// such a file by walking every page, and reports damage found on that walk
// by panicking in a goroutine of its own, which no recover can catch. badge
// always stores the freelist, so such a file was written by another
// program. A file whose meta pages are both invalid is left to bbolt, which
// reports it.
func preflight(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt creates it, or reports why it cannot
	}
	defer f.Close()
	m0, ok0 := readMeta(f, 0)
	pageSize := int64(os.Getpagesize())
	if ok0 {
		pageSize = int64(m0.pageSize)
	}
	m1, ok1 := readMeta(f, pageSize)
	var cur boltMeta
	switch {
	case ok0 && ok1:
		cur = m0
		if m1.txid > m0.txid {
			cur = m1
		}
	case ok0:
		cur = m0
	case ok1:
		cur = m1
	default:
		return nil
	}
	if cur.freelist == noFreelist {
		return fmt.Errorf("storage/bbolt: open %s: %w: the file was written without a freelist, so not by badge", path, storage.ErrSchema)
	}
	return nil
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
		freelist: le.Uint64(m[32:]),
		txid:     le.Uint64(m[48:]),
	}, true
}
