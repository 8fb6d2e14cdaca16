package bbolt

import (
	"cmp"
	"context"
	"encoding/json"

	"github.com/badge-dev/badge/storage"
)

var clients = jsonBucket[storage.Client]{
	name:   bucketClients,
	what:   "client",
	id:     func(c storage.Client) string { return c.ID },
	valid:  storage.Client.Validate,
	decode: decodeClient,
	compare: func(a, b storage.Client) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	},
}

// CreateClient stores a new OAuth client. It fails with storage.ErrExists
// if a client with the same ID is stored, and with storage.ErrInvalid if c
// lacks an ID, a SPIFFE ID or a secret hash.
func (s *Store) CreateClient(ctx context.Context, c storage.Client) error {
	return clients.put(ctx, s, c, false)
}

// GetClient returns the client with the given ID, or storage.ErrNotFound.
func (s *Store) GetClient(ctx context.Context, id string) (storage.Client, error) {
	return clients.get(ctx, s, id)
}

// ListClients returns every client, ordered by (CreatedAt, ID).
func (s *Store) ListClients(ctx context.Context) ([]storage.Client, error) {
	return clients.list(ctx, s)
}

// DeleteClient removes a client, or fails with storage.ErrNotFound.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return clients.delete(ctx, s, id)
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
