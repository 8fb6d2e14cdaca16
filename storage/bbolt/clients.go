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

// CreateClient stores a new OAuth client. It fails with storage.ErrExists
// if a client with the same ID is stored, and with storage.ErrInvalid if c
// lacks an ID, a SPIFFE ID or a secret hash.
func (s *Store) CreateClient(ctx context.Context, c storage.Client) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("storage/bbolt: %w", err)
	}
	val, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("storage/bbolt: encoding client %s: %w", c.ID, err)
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketClients)
		if err != nil {
			return err
		}
		if b.Get([]byte(c.ID)) != nil {
			return fmt.Errorf("storage/bbolt: client %s: %w", c.ID, storage.ErrExists)
		}
		return b.Put([]byte(c.ID), val)
	})
}

// GetClient returns the client with the given ID, or storage.ErrNotFound.
func (s *Store) GetClient(ctx context.Context, id string) (storage.Client, error) {
	var c storage.Client
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketClients)
		if err != nil {
			return err
		}
		val := b.Get([]byte(id))
		if val == nil {
			return fmt.Errorf("storage/bbolt: client %q: %w", id, storage.ErrNotFound)
		}
		c, err = decodeClient([]byte(id), val)
		return err
	})
	if err != nil {
		return storage.Client{}, err
	}
	return c, nil
}

// ListClients returns every client, ordered by (CreatedAt, ID).
func (s *Store) ListClients(ctx context.Context) ([]storage.Client, error) {
	var out []storage.Client
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketClients)
		if err != nil {
			return err
		}
		out = []storage.Client{}
		return b.ForEach(func(k, v []byte) error {
			c, err := decodeClient(k, v)
			if err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b storage.Client) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// DeleteClient removes a client, or fails with storage.ErrNotFound.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketClients)
		if err != nil {
			return err
		}
		if b.Get([]byte(id)) == nil {
			return fmt.Errorf("storage/bbolt: client %q: %w", id, storage.ErrNotFound)
		}
		return b.Delete([]byte(id))
	})
}

// decodeClient decodes the value stored under key in the clients bucket.
func decodeClient(key, val []byte) (storage.Client, error) {
	var c storage.Client
	if err := json.Unmarshal(val, &c); err != nil {
		return storage.Client{}, corrupt(bucketClients, key, "%v", err)
	}
	if c.ID != string(key) {
		return storage.Client{}, corrupt(bucketClients, key, "record has id %q", c.ID)
	}
	return c, nil
}
