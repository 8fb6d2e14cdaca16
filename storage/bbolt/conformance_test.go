package bbolt

import (
	"path/filepath"
	"testing"

	"github.com/badge-dev/badge/storage/storagetest"
)

func TestConformance(t *testing.T) {
	open := func(t *testing.T) storagetest.Store {
		s, err := Open(filepath.Join(t.TempDir(), "badge.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("default", func(t *testing.T) { storagetest.Run(t, open) })
	// Fold the serials log every few records, so that reads see records
	// both in the log and in the indexes.
	t.Run("fold-often", func(t *testing.T) {
		old := foldThreshold
		foldThreshold = 3
		t.Cleanup(func() { foldThreshold = old })
		storagetest.Run(t, open)
	})
}
