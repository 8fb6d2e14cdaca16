package bbolt

import (
	"context"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// Stats is what an operator watches of the database: its size and the
// state that grows with issuance.
type Stats struct {
	// FileBytes is the size of the database file. bbolt never shrinks its
	// file; FreeBytes of it are free pages it reuses.
	FileBytes int64
	// FreeBytes is the space of free pages inside the file.
	FreeBytes int64
	// Serials is the number of stored serial records (issued, unexpired
	// certificates, kept until pruned after expiry).
	Serials int
}

// Stats returns the size of the database and the number of serial
// records. It reads in one read-only transaction; counting the serials
// walks the pages of their bucket, so callers that poll it (metrics) cache
// the result.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.view(ctx, func(tx *bolt.Tx) error {
		st.FileBytes = tx.Size()
		if b := tx.Bucket(bucketSerialRecords); b != nil {
			st.Serials = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("storage/bbolt: statistics of %s: %w", s.path, err)
	}
	if fi, err := os.Stat(s.path); err == nil {
		st.FileBytes = fi.Size()
	}
	st.FreeBytes = int64(s.db.Stats().FreeAlloc)
	return st, nil
}

// Ping commits an empty write transaction: it returns nil only when the
// database is open and its file can be written and synced (the commit
// writes a meta page). Readiness checks call it; it costs
// one sync, so they rate-limit it.
func (s *Store) Ping(ctx context.Context) error {
	err := s.update(ctx, func(*bolt.Tx) error { return nil })
	if err != nil {
		return fmt.Errorf("storage/bbolt: %s is not writable: %w", s.path, err)
	}
	return nil
}
