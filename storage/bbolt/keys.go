package bbolt

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// PutKey stores k, replacing the key with the same ID if there is one.
func (s *Store) PutKey(ctx context.Context, k storage.Key) error {
	if err := k.Validate(); err != nil {
		return fmt.Errorf("storage/bbolt: %w", err)
	}
	val, err := json.Marshal(k)
	if err != nil {
		return fmt.Errorf("storage/bbolt: encoding key %s: %w", k.ID, err)
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketKeys)
		if err != nil {
			return err
		}
		return b.Put([]byte(k.ID), val)
	})
}

// ListKeys returns every signing key record, ordered by (CreatedAt, ID).
func (s *Store) ListKeys(ctx context.Context) ([]storage.Key, error) {
	var out []storage.Key
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketKeys)
		if err != nil {
			return err
		}
		out = []storage.Key{}
		return b.ForEach(func(k, v []byte) error {
			key, err := decodeKey(k, v)
			if err != nil {
				return err
			}
			out = append(out, key)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b storage.Key) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}
