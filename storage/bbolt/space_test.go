package bbolt

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFreeSpace(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "badge.db"), &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	free, err := s.FreeSpace()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "badge.db"))
	if err != nil {
		t.Fatal(err)
	}
	// The filesystem's free space, give or take what others wrote
	// meanwhile, plus at most the whole file.
	avail := st.Bavail * uint64(st.Bsize)
	if lo, hi := avail-min(avail, 64<<20), avail+uint64(fi.Size())+64<<20; free < lo || free > hi {
		t.Errorf("FreeSpace = %d, want within [%d, %d]", free, lo, hi)
	}
}
