package bbolt

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// jsonBucket is a top-level bucket of JSON records of type T, each stored
// under its ID: entries, OAuth clients and key records.
type jsonBucket[T any] struct {
	name    []byte
	what    string                           // "entry", "client", "key": for errors
	id      func(T) string                   // the record's key
	valid   func(T) error                    // the record's Validate
	decode  func(key, val []byte) (T, error) // checks the record against its key
	compare func(a, b T) int                 // the order of list
}

// put stores v; unless replace, an existing record with its ID is
// storage.ErrExists.
func (b jsonBucket[T]) put(ctx context.Context, s *Store, v T, replace bool) error {
	if err := b.valid(v); err != nil {
		return fmt.Errorf("storage/bbolt: %w", err)
	}
	id := b.id(v)
	val, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("storage/bbolt: encoding %s %s: %w", b.what, id, err)
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		bk, err := bucket(tx, b.name)
		if err != nil {
			return err
		}
		if !replace && bk.Get([]byte(id)) != nil {
			return fmt.Errorf("storage/bbolt: %s %s: %w", b.what, id, storage.ErrExists)
		}
		return bk.Put([]byte(id), val)
	})
}

// get returns the record with the given ID, or storage.ErrNotFound.
func (b jsonBucket[T]) get(ctx context.Context, s *Store, id string) (T, error) {
	var out T
	err := s.view(ctx, func(tx *bolt.Tx) error {
		bk, err := bucket(tx, b.name)
		if err != nil {
			return err
		}
		val := bk.Get([]byte(id))
		if val == nil {
			return fmt.Errorf("storage/bbolt: %s %q: %w", b.what, id, storage.ErrNotFound)
		}
		out, err = b.decode([]byte(id), val)
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}

// list returns every record, in b.compare order; never nil.
func (b jsonBucket[T]) list(ctx context.Context, s *Store) ([]T, error) {
	var out []T
	err := s.view(ctx, func(tx *bolt.Tx) error {
		bk, err := bucket(tx, b.name)
		if err != nil {
			return err
		}
		out = []T{}
		return bk.ForEach(func(k, v []byte) error {
			r, err := b.decode(k, v)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, b.compare)
	return out, nil
}

// delete removes the record with the given ID, or fails with
// storage.ErrNotFound.
func (b jsonBucket[T]) delete(ctx context.Context, s *Store, id string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		bk, err := bucket(tx, b.name)
		if err != nil {
			return err
		}
		if bk.Get([]byte(id)) == nil {
			return fmt.Errorf("storage/bbolt: %s %q: %w", b.what, id, storage.ErrNotFound)
		}
		return bk.Delete([]byte(id))
	})
}
