package bbolt

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

var nodes = jsonBucket[storage.Node]{
	name:    bucketNodes,
	what:    "node",
	id:      func(n storage.Node) string { return n.Name },
	valid:   storage.Node.Validate,
	decode:  decodeNode,
	compare: func(a, b storage.Node) int { return cmp.Compare(a.Name, b.Name) },
}

// PutNode stores a node, replacing the record of the same name. It fails
// with storage.ErrInvalid if n has no valid name or attestation.
func (s *Store) PutNode(ctx context.Context, n storage.Node) error {
	return nodes.put(ctx, s, n, true)
}

// GetNode returns the node with the given name, or storage.ErrNotFound.
func (s *Store) GetNode(ctx context.Context, name string) (storage.Node, error) {
	return nodes.get(ctx, s, name)
}

// ListNodes returns every node, ordered by name.
func (s *Store) ListNodes(ctx context.Context) ([]storage.Node, error) {
	return nodes.list(ctx, s)
}

// EvictNode marks a node evicted at the given time by adminUID, and
// deletes every unused join token of the node, in one transaction: only a
// token made after the eviction can bring the node back. It returns the
// node as stored and the number of tokens deleted, or storage.ErrNotFound.
// Evicting an evicted node records the new time and deletes the tokens
// made since.
func (s *Store) EvictNode(ctx context.Context, name string, at time.Time, adminUID uint32) (storage.Node, int, error) {
	var out storage.Node
	var cancelled int
	err := s.update(ctx, func(tx *bolt.Tx) error {
		nb, err := bucket(tx, bucketNodes)
		if err != nil {
			return err
		}
		tb, err := bucket(tx, bucketJoinTokens)
		if err != nil {
			return err
		}
		val := nb.Get([]byte(name))
		if val == nil {
			return fmt.Errorf("storage/bbolt: node %q: %w", name, storage.ErrNotFound)
		}
		n, err := decodeNode([]byte(name), val)
		if err != nil {
			return err
		}
		n.EvictedAt, n.EvictedBy = at, adminUID
		if val, err = json.Marshal(n); err != nil {
			return fmt.Errorf("storage/bbolt: encoding node %s: %w", name, err)
		}
		if err := nb.Put([]byte(name), val); err != nil {
			return err
		}
		// Collect first: a bucket must not change under its cursor.
		var unused [][]byte
		err = tb.ForEach(func(k, v []byte) error {
			j, err := decodeJoinToken(k, v)
			if err != nil {
				return err
			}
			if j.Node == name && j.UsedAt.IsZero() {
				unused = append(unused, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range unused {
			if err := tb.Delete(k); err != nil {
				return err
			}
		}
		out, cancelled = n, len(unused)
		return nil
	})
	if err != nil {
		return storage.Node{}, 0, err
	}
	return out, cancelled, nil
}

var joinTokens = jsonBucket[storage.JoinToken]{
	name:   bucketJoinTokens,
	what:   "join token",
	id:     func(j storage.JoinToken) string { return j.Hash },
	valid:  storage.JoinToken.Validate,
	decode: decodeJoinToken,
	compare: func(a, b storage.JoinToken) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.Hash, b.Hash))
	},
}

// CreateJoinToken stores a new join token. It fails with storage.ErrExists
// if a token with the same hash is stored, and with storage.ErrInvalid if
// j has no valid hash, node name or lifetime.
func (s *Store) CreateJoinToken(ctx context.Context, j storage.JoinToken) error {
	return joinTokens.put(ctx, s, j, false)
}

// GetJoinToken returns the join token with the given hash, used or not,
// or storage.ErrNotFound; storage.ErrCorrupt if its record is damaged.
func (s *Store) GetJoinToken(ctx context.Context, hash string) (storage.JoinToken, error) {
	return joinTokens.get(ctx, s, hash)
}

// ListJoinTokens returns every stored join token, used or not, ordered by
// (CreatedAt, Hash).
func (s *Store) ListJoinTokens(ctx context.Context) ([]storage.JoinToken, error) {
	return joinTokens.list(ctx, s)
}

// ConsumeJoinToken uses the join token with the given hash at now and
// records the attestation of its node, in one transaction: of any number
// of concurrent calls with one token, exactly one succeeds. The node
// record is created, or updated: attested by join token at now, no longer
// evicted, with no node SVID serial until one is recorded. It fails with
// storage.ErrNotFound for an unknown hash, storage.ErrTokenUsed for a
// token used before and storage.ErrTokenExpired for one presented at or
// after its expiry; then nothing changes, and the token is returned when
// it is known, for the log.
func (s *Store) ConsumeJoinToken(ctx context.Context, hash string, now time.Time) (storage.JoinToken, storage.Node, error) {
	var tok storage.JoinToken
	var node storage.Node
	err := s.update(ctx, func(tx *bolt.Tx) error {
		tb, err := bucket(tx, bucketJoinTokens)
		if err != nil {
			return err
		}
		nb, err := bucket(tx, bucketNodes)
		if err != nil {
			return err
		}
		val := tb.Get([]byte(hash))
		if val == nil {
			return fmt.Errorf("storage/bbolt: join token: %w", storage.ErrNotFound)
		}
		if tok, err = decodeJoinToken([]byte(hash), val); err != nil {
			return err
		}
		switch {
		case !tok.UsedAt.IsZero():
			return fmt.Errorf("storage/bbolt: join token for node %s: %w (at %s)", tok.Node, storage.ErrTokenUsed, tok.UsedAt.UTC().Format(time.RFC3339))
		case !now.Before(tok.ExpiresAt):
			return fmt.Errorf("storage/bbolt: join token for node %s: %w (at %s)", tok.Node, storage.ErrTokenExpired, tok.ExpiresAt.UTC().Format(time.RFC3339))
		}
		tok.UsedAt = now
		if val, err = json.Marshal(tok); err != nil {
			return fmt.Errorf("storage/bbolt: encoding join token: %w", err)
		}
		if err := tb.Put([]byte(hash), val); err != nil {
			return err
		}
		node = storage.Node{Name: tok.Node, FirstAttestedAt: now}
		if old := nb.Get([]byte(tok.Node)); old != nil {
			prev, err := decodeNode([]byte(tok.Node), old)
			if err != nil {
				return err
			}
			node.FirstAttestedAt = prev.FirstAttestedAt
		}
		node.Attestation, node.LastAttestedAt = storage.AttestJoinToken, now
		if val, err = json.Marshal(node); err != nil {
			return fmt.Errorf("storage/bbolt: encoding node %s: %w", node.Name, err)
		}
		return nb.Put([]byte(node.Name), val)
	})
	if err != nil {
		return tok, storage.Node{}, err
	}
	return tok, node, nil
}

// PruneJoinTokens deletes the join tokens, used or not, that expired
// before the given time, and returns how many it deleted.
func (s *Store) PruneJoinTokens(ctx context.Context, expiredBefore time.Time) (int, error) {
	var n int
	err := s.update(ctx, func(tx *bolt.Tx) error {
		tb, err := bucket(tx, bucketJoinTokens)
		if err != nil {
			return err
		}
		var old [][]byte
		err = tb.ForEach(func(k, v []byte) error {
			j, err := decodeJoinToken(k, v)
			if err != nil {
				return err
			}
			if j.ExpiresAt.Before(expiredBefore) {
				old = append(old, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := tb.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	return n, err
}

// decodeNode decodes the value stored under key in the nodes bucket.
func decodeNode(key, val []byte) (storage.Node, error) {
	var n storage.Node
	if err := json.Unmarshal(val, &n); err != nil {
		return storage.Node{}, corrupt(bucketNodes, key, "%v", err)
	}
	if n.Name != string(key) {
		return storage.Node{}, corrupt(bucketNodes, key, "record has name %q", n.Name)
	}
	return n, nil
}

// decodeJoinToken decodes the value stored under key in the join_tokens
// bucket.
func decodeJoinToken(key, val []byte) (storage.JoinToken, error) {
	var j storage.JoinToken
	if err := json.Unmarshal(val, &j); err != nil {
		return storage.JoinToken{}, corrupt(bucketJoinTokens, key, "%v", err)
	}
	if j.Hash != string(key) {
		return storage.JoinToken{}, corrupt(bucketJoinTokens, key, "record has another hash")
	}
	return j, nil
}
