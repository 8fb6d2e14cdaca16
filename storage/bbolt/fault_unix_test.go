//go:build unix

package bbolt

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/badge-dev/badge/storage"
)

// TestProtectRecoversFault checks that a read of a mapped page past the end
// of its file, which bbolt does on a truncated database, becomes ErrCorrupt
// and not a crash.
func TestProtectRecoversFault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 4 * 4096
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(data)
	var sink byte
	err = protect(path, func() error {
		sink = data[size-1] // past the end of the file: SIGBUS
		return nil
	})
	if !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("protect(fault) = %v, want ErrCorrupt", err)
	}
	_ = sink
}
