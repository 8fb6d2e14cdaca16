//go:build !unix

package bbolt

import "os"

// unlock is a no-op where bbolt does not use flock; closing f releases the
// lock.
func unlock(f *os.File) {}
