package ca

import (
	"os"

	"github.com/badge-dev/badge/ca/internal/atomicfile"
)

// WriteFile writes data to path atomically with mode perm: after a crash the
// file holds either its old content or the new, never a torn mix.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return atomicfile.WriteFile(path, data, perm)
}
