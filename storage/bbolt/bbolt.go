// CONTRACT STUB: the exported API below is fixed; the storage helper implements it.
package bbolt

import (
	"context"
	"log/slog"
	"time"

	"github.com/badge-dev/badge/storage"
)

type Options struct {
	Timeout time.Duration // waiting for the file lock; default 1s
	Logger  *slog.Logger
	NoSync  bool // tests/benchmarks only
}

type Store struct{}

func Open(path string, opts *Options) (*Store, error)                           { panic("todo") }
func (s *Store) Close() error                                                   { panic("todo") }
func (s *Store) CreateEntry(ctx context.Context, e storage.Entry) error         { panic("todo") }
func (s *Store) GetEntry(ctx context.Context, id string) (storage.Entry, error) { panic("todo") }
func (s *Store) ListEntries(ctx context.Context) ([]storage.Entry, error)       { panic("todo") }
func (s *Store) DeleteEntry(ctx context.Context, id string) error               { panic("todo") }
func (s *Store) RecordSerial(ctx context.Context, r storage.Serial) error       { panic("todo") }
func (s *Store) SerialsFor(ctx context.Context, spiffeID string, now time.Time) ([]storage.Serial, error) {
	panic("todo")
}
func (s *Store) PruneSerials(ctx context.Context, expiredBefore time.Time) (int, error) {
	panic("todo")
}
func (s *Store) PutKey(ctx context.Context, k storage.Key) error     { panic("todo") }
func (s *Store) ListKeys(ctx context.Context) ([]storage.Key, error) { panic("todo") }
