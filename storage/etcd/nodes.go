package etcd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/badge-dev/badge/storage"
)

var nodes = jsonKind[storage.Node]{
	kind: kindNodes, what: "node",
	id:      func(n storage.Node) string { return n.Name },
	valid:   storage.Node.Validate,
	compare: func(a, b storage.Node) int { return cmp.Compare(a.Name, b.Name) },
}

var joinTokens = jsonKind[storage.JoinToken]{
	kind: kindJoinTokens, what: "join token",
	id:      func(j storage.JoinToken) string { return j.Hash },
	valid:   storage.JoinToken.Validate,
	compare: byCreated(func(j storage.JoinToken) time.Time { return j.CreatedAt }, func(j storage.JoinToken) string { return j.Hash }),
}

// PutNode stores a node, replacing the record of the same name.
func (s *Store) PutNode(ctx context.Context, n storage.Node) error {
	return nodes.put(ctx, s, n, true)
}

// GetNode returns the node with the name, or storage.ErrNotFound.
func (s *Store) GetNode(ctx context.Context, name string) (storage.Node, error) {
	n, _, err := nodes.get(ctx, s, name)
	return n, err
}

// ListNodes returns every node, ordered by name.
func (s *Store) ListNodes(ctx context.Context) ([]storage.Node, error) {
	return nodes.list(ctx, s)
}

// CreateJoinToken stores a new join token; storage.ErrExists if its hash
// is taken.
func (s *Store) CreateJoinToken(ctx context.Context, j storage.JoinToken) error {
	return joinTokens.put(ctx, s, j, false)
}

// GetJoinToken returns the join token with the hash, used or not, or
// storage.ErrNotFound; storage.ErrCorrupt if its record is damaged.
func (s *Store) GetJoinToken(ctx context.Context, hash string) (storage.JoinToken, error) {
	j, _, err := joinTokens.get(ctx, s, hash)
	return j, err
}

// ListJoinTokens returns every join token, used or not, ordered by
// (CreatedAt, Hash).
func (s *Store) ListJoinTokens(ctx context.Context) ([]storage.JoinToken, error) {
	return joinTokens.list(ctx, s)
}

// ConsumeJoinToken uses the join token with the hash at now and records
// its node's attestation in one transaction that commits only if neither
// the token nor the node changed since they were read: of concurrent
// calls with one token, on one server or several, exactly one succeeds
// and the others see storage.ErrTokenUsed. The used token carries the
// call's write ID: an attempt that finds it used by an earlier attempt of
// the same call (whose answer was lost) succeeds. See storage.Nodes.
func (s *Store) ConsumeJoinToken(ctx context.Context, hash string, now time.Time) (storage.JoinToken, storage.Node, error) {
	var tok storage.JoinToken
	var node storage.Node
	wid := newWriteID()
	err := s.retry(ctx, "consuming a join token", func(ctx context.Context) error {
		var kv *mvccpb.KeyValue
		var err error
		tok, kv, err = joinTokens.getKV(ctx, s, hash, 0)
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("storage/etcd: join token: %w", storage.ErrNotFound)
		}
		if err != nil {
			return err
		}
		tokRev := kv.ModRevision
		switch {
		case !tok.UsedAt.IsZero() && taggedBy(kv.Value, wid):
			return nil // used by an earlier attempt of this call, with node
		case !tok.UsedAt.IsZero():
			return fmt.Errorf("storage/etcd: join token for node %s: %w (at %s)", tok.Node, storage.ErrTokenUsed, tok.UsedAt.UTC().Format(time.RFC3339))
		case !now.Before(tok.ExpiresAt):
			return fmt.Errorf("storage/etcd: join token for node %s: %w (at %s)", tok.Node, storage.ErrTokenExpired, tok.ExpiresAt.UTC().Format(time.RFC3339))
		}
		n := storage.Node{Name: tok.Node, FirstAttestedAt: now}
		prev, nodeRev, err := nodes.getIn(ctx, s, tok.Node, 0)
		switch {
		case err == nil:
			n.FirstAttestedAt = prev.FirstAttestedAt
		case !errors.Is(err, storage.ErrNotFound):
			return err
		}
		n.Attestation, n.LastAttestedAt = storage.AttestJoinToken, now
		used := tok
		used.UsedAt = now
		tval, err := joinTokens.encode(used)
		if err != nil {
			return err
		}
		tval = tag(tval, wid)
		nval, err := nodes.encode(n)
		if err != nil {
			return err
		}
		node = n // what an attempt that finds the token used by this call returns
		tkey, nkey := s.p.key(kindJoinTokens, hash), s.p.key(kindNodes, n.Name)
		resp, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(tkey), "=", tokRev),
			clientv3.Compare(clientv3.ModRevision(nkey), "=", nodeRev),
		).Then(clientv3.OpPut(tkey, tval), clientv3.OpPut(nkey, nval)).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return errConflict
		}
		tok = used
		return nil
	})
	if err != nil {
		return tok, storage.Node{}, err
	}
	return tok, node, nil
}

// PruneJoinTokens deletes the join tokens, used or not, that expired
// before the time, and returns how many it deleted.
func (s *Store) PruneJoinTokens(ctx context.Context, expiredBefore time.Time) (int, error) {
	n := 0
	err := s.retry(ctx, "pruning join tokens", func(ctx context.Context) error {
		toks, revs, _, err := joinTokens.listIn(ctx, s, 0)
		if err != nil {
			return err
		}
		var ops []clientv3.Op
		var cmps []clientv3.Cmp
		for _, j := range toks {
			if j.ExpiresAt.Before(expiredBefore) {
				key := s.p.key(kindJoinTokens, j.Hash)
				ops = append(ops, clientv3.OpDelete(key))
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", revs[j.Hash]))
			}
		}
		if err := s.commitChunks(ctx, ops, cmps); err != nil {
			return err
		}
		n = len(ops)
		return nil
	})
	return n, err
}

// EvictNode marks a node evicted at the time by adminUID and deletes every
// unused join token of the node; the node is written in the last
// transaction, which commits only if neither it nor the tokens changed
// since they were read. It returns the node as stored and the number of
// tokens deleted, or storage.ErrNotFound.
func (s *Store) EvictNode(ctx context.Context, name string, at time.Time, adminUID uint32) (storage.Node, int, error) {
	var out storage.Node
	var cancelled, sent int
	wid := newWriteID()
	err := s.retry(ctx, "evicting node "+name, func(ctx context.Context) error {
		n, kv, err := nodes.getKV(ctx, s, name, 0)
		if err != nil {
			return err
		}
		if taggedBy(kv.Value, wid) {
			// An earlier attempt committed, with sent tokens.
			out, cancelled = n, sent
			return nil
		}
		nodeRev := kv.ModRevision
		toks, revs, _, err := joinTokens.listIn(ctx, s, 0)
		if err != nil {
			return err
		}
		n.EvictedAt, n.EvictedBy = at, adminUID
		val, err := nodes.encode(n)
		if err != nil {
			return err
		}
		val = tag(val, wid)
		var ops []clientv3.Op
		var cmps []clientv3.Cmp
		for _, j := range toks {
			if j.Node == name && j.UsedAt.IsZero() {
				key := s.p.key(kindJoinTokens, j.Hash)
				ops = append(ops, clientv3.OpDelete(key))
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", revs[j.Hash]))
			}
		}
		nkey := s.p.key(kindNodes, name)
		ops = append(ops, clientv3.OpPut(nkey, val))
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(nkey), "=", nodeRev))
		sent = len(ops) - 1
		if err := s.commitChunks(ctx, ops, cmps); err != nil {
			return err
		}
		out, cancelled = n, len(ops)-1
		return nil
	})
	if err != nil {
		return storage.Node{}, 0, err
	}
	return out, cancelled, nil
}
