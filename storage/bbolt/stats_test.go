package bbolt

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage"
)

func TestStatsCountsSerials(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "badge.db")
	s, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.Serials != 0 {
		t.Errorf("Serials of a new database = %d, want 0", before.Serials)
	}
	now := time.Now()
	for i := range 5 {
		err := s.RecordSerial(ctx, storage.Serial{Serial: string(rune('a' + i)), SPIFFEID: "spiffe://example.org/w", EntryID: "e1",
			NotBefore: now, NotAfter: now.Add(time.Minute), IssuedAt: now})
		if err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Serials != 5 {
		t.Errorf("Serials = %d, want 5", st.Serials)
	}
	if st.FileBytes != fi.Size() || st.FileBytes == 0 {
		t.Errorf("FileBytes = %d, want the file size %d", st.FileBytes, fi.Size())
	}
	s.Close()
	if _, err := s.Stats(ctx); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Stats after Close: %v, want storage.ErrClosed", err)
	}
}

func TestPing(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "badge.db"), &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	before := s.writeTxs.Load()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping on an open database: %v", err)
	}
	if s.writeTxs.Load() == before {
		t.Error("Ping committed no write transaction")
	}
	s.Close()
	if err := s.Ping(ctx); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Ping after Close: %v, want storage.ErrClosed", err)
	}
}
