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
	storagetest.Run(t, open)
	storagetest.RunCrash(t, func(t *testing.T, dir string) storagetest.Store {
		s, err := Open(filepath.Join(dir, "badge.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, func(t *testing.T, s storagetest.Store) { crash(t, s.(*Store)) })
}

// crash ends s as a killed process would: the records queued in memory are
// dropped, and the file is closed without waiting for anything.
func crash(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	s.pending = nil
	s.closing = true
	s.mu.Unlock()
	s.closed.Store(true)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.committerDone
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
}
