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

// CreateEntry stores a new entry. It fails with storage.ErrExists if an
// entry with the same ID is stored, and with storage.ErrInvalid if e has no
// ID or SPIFFE ID.
func (s *Store) CreateEntry(ctx context.Context, e storage.Entry) error {
	if err := e.Validate(); err != nil {
		return fmt.Errorf("storage/bbolt: %w", err)
	}
	val, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("storage/bbolt: encoding entry %s: %w", e.ID, err)
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketEntries)
		if err != nil {
			return err
		}
		if b.Get([]byte(e.ID)) != nil {
			return fmt.Errorf("storage/bbolt: entry %s: %w", e.ID, storage.ErrExists)
		}
		return b.Put([]byte(e.ID), val)
	})
}

// GetEntry returns the entry with the given ID, or storage.ErrNotFound.
func (s *Store) GetEntry(ctx context.Context, id string) (storage.Entry, error) {
	var e storage.Entry
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketEntries)
		if err != nil {
			return err
		}
		val := b.Get([]byte(id))
		if val == nil {
			return fmt.Errorf("storage/bbolt: entry %q: %w", id, storage.ErrNotFound)
		}
		e, err = decodeEntry([]byte(id), val)
		return err
	})
	if err != nil {
		return storage.Entry{}, err
	}
	return e, nil
}

// ListEntries returns every entry, ordered by (CreatedAt, ID).
func (s *Store) ListEntries(ctx context.Context) ([]storage.Entry, error) {
	var out []storage.Entry
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketEntries)
		if err != nil {
			return err
		}
		out = []storage.Entry{}
		return b.ForEach(func(k, v []byte) error {
			e, err := decodeEntry(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b storage.Entry) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// DeleteEntry deletes the entry with the given ID, or returns
// storage.ErrNotFound. Serial records of the entry are kept until they
// expire.
func (s *Store) DeleteEntry(ctx context.Context, id string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketEntries)
		if err != nil {
			return err
		}
		if b.Get([]byte(id)) == nil {
			return fmt.Errorf("storage/bbolt: entry %q: %w", id, storage.ErrNotFound)
		}
		return b.Delete([]byte(id))
	})
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
