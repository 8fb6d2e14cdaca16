package bbolt

import (
	"cmp"
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

var entries = jsonBucket[storage.Entry]{
	name:   bucketEntries,
	what:   "entry",
	id:     func(e storage.Entry) string { return e.ID },
	valid:  storage.Entry.Validate,
	decode: decodeEntry,
	compare: func(a, b storage.Entry) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	},
}

// CreateEntry stores a new entry. It fails with storage.ErrExists if an
// entry with the same ID is stored, and with storage.ErrInvalid if e has no
// ID or SPIFFE ID.
func (s *Store) CreateEntry(ctx context.Context, e storage.Entry) error {
	return entries.put(ctx, s, e, false)
}

// GetEntry returns the entry with the given ID, or storage.ErrNotFound.
func (s *Store) GetEntry(ctx context.Context, id string) (storage.Entry, error) {
	return entries.get(ctx, s, id)
}

// ListEntries returns every entry, ordered by (CreatedAt, ID).
func (s *Store) ListEntries(ctx context.Context) ([]storage.Entry, error) {
	return entries.list(ctx, s)
}

// DeleteEntry deletes the entry with the given ID, or returns
// storage.ErrNotFound. Serial records of the entry are kept until they
// expire.
func (s *Store) DeleteEntry(ctx context.Context, id string) error {
	return entries.delete(ctx, s, id)
}

// bucket returns the named top-level bucket; Open has checked that it
// exists, so its absence means damage.
func bucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	b := tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("storage/bbolt: %w: bucket %s is missing", storage.ErrCorrupt, name)
	}
	return b, nil
}
