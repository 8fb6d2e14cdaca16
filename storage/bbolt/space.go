package bbolt

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// FreeSpace returns the bytes the store can still write: the space free
// to unprivileged users on the filesystem of its file, plus the free pages
// inside the file (bbolt never shrinks its file, but reuses those pages).
// The daemon refuses new issuance when it falls below a reserve, so that
// revocations can always be written.
func (s *Store) FreeSpace() (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(s.path), &st); err != nil {
		return 0, fmt.Errorf("storage/bbolt: free space of %s: %w", filepath.Dir(s.path), err)
	}
	return st.Bavail*uint64(st.Bsize) + uint64(s.db.Stats().FreeAlloc), nil
}
