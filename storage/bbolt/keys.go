package bbolt

import (
	"cmp"
	"context"

	"github.com/badge-dev/badge/storage"
)

var keyRecords = jsonBucket[storage.Key]{
	name:   bucketKeys,
	what:   "key",
	id:     func(k storage.Key) string { return k.ID },
	valid:  storage.Key.Validate,
	decode: decodeKey,
	compare: func(a, b storage.Key) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	},
}

// PutKey stores k, replacing the key with the same ID if there is one.
func (s *Store) PutKey(ctx context.Context, k storage.Key) error {
	return keyRecords.put(ctx, s, k, true)
}

// ListKeys returns every signing key record, ordered by (CreatedAt, ID).
func (s *Store) ListKeys(ctx context.Context) ([]storage.Key, error) {
	return keyRecords.list(ctx, s)
}

// DeleteKey removes the record of a key, or fails with storage.ErrNotFound.
// The private key it refers to is the caller's to delete.
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	return keyRecords.delete(ctx, s, id)
}
