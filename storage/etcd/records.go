package etcd

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/badge-dev/badge/storage"
)

// jsonKind stores records of type T as JSON (the encoding storage/bbolt
// uses) under one directory, keyed by their ID.
type jsonKind[T any] struct {
	kind    string
	what    string         // "entry", "client", "key": for errors
	id      func(T) string // the record's key
	valid   func(T) error  // the record's Validate
	compare func(a, b T) int
}

// decode decodes a stored value and checks it against its key.
func (k jsonKind[T]) decode(p prefix, kv *mvccpb.KeyValue) (T, error) {
	var v T
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return v, corrupt(kv.Key, "%v", err)
	}
	if id := k.id(v); p.key(k.kind, id) != string(kv.Key) {
		var zero T
		return zero, corrupt(kv.Key, "record has %s id %q", k.what, id)
	}
	return v, nil
}

func (k jsonKind[T]) encode(v T) (string, error) {
	if err := k.valid(v); err != nil {
		return "", fmt.Errorf("storage/etcd: %w", err)
	}
	val, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("storage/etcd: encoding %s %s: %w", k.what, k.id(v), err)
	}
	return string(val), nil
}

// put stores v; unless replace, an existing record with its ID is
// storage.ErrExists. A new record carries the call's write ID, so that an
// attempt that finds it already there knows it as its own (an earlier
// attempt committed it but its answer was lost).
func (k jsonKind[T]) put(ctx context.Context, s *Store, v T, replace bool) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	val, err := k.encode(v)
	if err != nil {
		return err
	}
	key := s.p.key(k.kind, k.id(v))
	if replace {
		return s.do(ctx, func(ctx context.Context) error {
			_, err := s.cli.Put(ctx, key, val)
			return err
		})
	}
	wid := newWriteID()
	val = tag(val, wid)
	return s.do(ctx, func(ctx context.Context) error {
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, val)).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 && taggedBy(kvs[0].Value, wid) {
				return nil
			}
			return fmt.Errorf("storage/etcd: %s %s: %w", k.what, k.id(v), storage.ErrExists)
		}
		return nil
	})
}

// get returns the record with the ID, its mod revision, or
// storage.ErrNotFound.
func (k jsonKind[T]) get(ctx context.Context, s *Store, id string) (T, int64, error) {
	var out T
	var rev int64
	err := s.do(ctx, func(ctx context.Context) error {
		var err error
		out, rev, err = k.getIn(ctx, s, id, 0)
		return err
	})
	return out, rev, err
}

// getIn is get inside a call of s.do, at revision rev (0: the latest).
func (k jsonKind[T]) getIn(ctx context.Context, s *Store, id string, rev int64) (T, int64, error) {
	v, kv, err := k.getKV(ctx, s, id, rev)
	if kv == nil {
		return v, 0, err
	}
	return v, kv.ModRevision, err
}

// getKV is getIn returning the stored key-value (nil if there is none).
func (k jsonKind[T]) getKV(ctx context.Context, s *Store, id string, rev int64) (T, *mvccpb.KeyValue, error) {
	var zero T
	resp, err := s.cli.Get(ctx, s.p.key(k.kind, id), clientv3.WithRev(rev))
	if err != nil {
		return zero, nil, err
	}
	if len(resp.Kvs) == 0 {
		return zero, nil, fmt.Errorf("storage/etcd: %s %q: %w", k.what, id, storage.ErrNotFound)
	}
	v, err := k.decode(s.p, resp.Kvs[0])
	return v, resp.Kvs[0], err
}

// list returns every record in k.compare order, never nil, with the mod
// revision of each by ID, read at one revision.
func (k jsonKind[T]) list(ctx context.Context, s *Store) ([]T, error) {
	var out []T
	err := s.do(ctx, func(ctx context.Context) error {
		var err error
		out, _, _, err = k.listIn(ctx, s, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// listIn is list inside a call of s.do, at revision rev (0: the latest).
// It returns the records, their mod revisions by ID, and the revision
// read.
func (k jsonKind[T]) listIn(ctx context.Context, s *Store, rev int64) ([]T, map[string]int64, int64, error) {
	out := []T{}
	revs := map[string]int64{}
	dir := s.p.dir(k.kind)
	rev, err := s.rangeAll(ctx, dir, rangeEnd(dir), rev, false, func(kv *mvccpb.KeyValue) error {
		v, err := k.decode(s.p, kv)
		if err != nil {
			return err
		}
		out = append(out, v)
		revs[k.id(v)] = kv.ModRevision
		return nil
	})
	if err != nil {
		return nil, nil, 0, err
	}
	slices.SortFunc(out, k.compare)
	return out, revs, rev, nil
}

// delete removes the record with the ID, or fails with
// storage.ErrNotFound. It deletes the version it read, so that an attempt
// that finds no record knows whether an earlier attempt may have deleted
// it: then the record the call was asked to delete is gone, and the call
// succeeds (as it does when a concurrent call deleted the same record).
func (k jsonKind[T]) delete(ctx context.Context, s *Store, id string) error {
	key := s.p.key(k.kind, id)
	sent := false // an attempt sent the deletion
	return s.retry(ctx, "deleting "+k.what+" "+id, func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, key, clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			if sent {
				return nil
			}
			return fmt.Errorf("storage/etcd: %s %q: %w", k.what, id, storage.ErrNotFound)
		}
		sent = true
		tresp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpDelete(key)).Commit()
		if err != nil {
			return err
		}
		if !tresp.Succeeded {
			return errConflict
		}
		return nil
	})
}

func byCreated[T any](at func(T) time.Time, id func(T) string) func(a, b T) int {
	return func(a, b T) int { return cmp.Or(at(a).Compare(at(b)), cmp.Compare(id(a), id(b))) }
}

var entries = jsonKind[storage.Entry]{
	kind: kindEntries, what: "entry",
	id:      func(e storage.Entry) string { return e.ID },
	valid:   storage.Entry.Validate,
	compare: byCreated(func(e storage.Entry) time.Time { return e.CreatedAt }, func(e storage.Entry) string { return e.ID }),
}

// CreateEntry stores a new entry; storage.ErrExists if its ID is taken.
func (s *Store) CreateEntry(ctx context.Context, e storage.Entry) error {
	return entries.put(ctx, s, e, false)
}

// GetEntry returns the entry with the ID, or storage.ErrNotFound.
func (s *Store) GetEntry(ctx context.Context, id string) (storage.Entry, error) {
	e, _, err := entries.get(ctx, s, id)
	return e, err
}

// ListEntries returns every entry ordered by (CreatedAt, ID).
func (s *Store) ListEntries(ctx context.Context) ([]storage.Entry, error) {
	return entries.list(ctx, s)
}

// DeleteEntry deletes the entry with the ID, or returns storage.ErrNotFound.
func (s *Store) DeleteEntry(ctx context.Context, id string) error {
	return entries.delete(ctx, s, id)
}

var keyRecords = jsonKind[storage.Key]{
	kind: kindKeys, what: "key",
	id:      func(k storage.Key) string { return k.ID },
	valid:   storage.Key.Validate,
	compare: byCreated(func(k storage.Key) time.Time { return k.CreatedAt }, func(k storage.Key) string { return k.ID }),
}

// PutKey inserts or replaces the record of a key.
func (s *Store) PutKey(ctx context.Context, k storage.Key) error {
	return keyRecords.put(ctx, s, k, true)
}

// Store makes the first key of a kind once among the servers.
var _ storage.KeyCreator = (*Store)(nil)

// CreateFirstKey stores k unless a key record whose ID starts with
// idPrefix exists, in one transaction: of servers starting together,
// exactly one makes the first root. storage.ErrExists if one exists.
func (s *Store) CreateFirstKey(ctx context.Context, k storage.Key, idPrefix string) error {
	val, err := keyRecords.encode(k)
	if err != nil {
		return err
	}
	dir, key := s.p.key(kindKeys, idPrefix), s.p.key(kindKeys, k.ID)
	wid := newWriteID()
	val = tag(val, wid)
	return s.do(ctx, func(ctx context.Context) error {
		// Every existing key has a create revision above 0, so the
		// comparison over the range holds only when the range is empty.
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(dir), "=", 0).WithPrefix()).
			Then(clientv3.OpPut(key, val)).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 && taggedBy(kvs[0].Value, wid) {
				return nil // an earlier attempt made it
			}
			return fmt.Errorf("storage/etcd: key %s: a key %s* %w", k.ID, idPrefix, storage.ErrExists)
		}
		return nil
	})
}

// ListKeys returns every key record ordered by (CreatedAt, ID).
func (s *Store) ListKeys(ctx context.Context) ([]storage.Key, error) {
	return keyRecords.list(ctx, s)
}

// DeleteKey deletes the record of a key; storage.ErrNotFound if there is
// none.
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	return keyRecords.delete(ctx, s, id)
}

var clients = jsonKind[storage.Client]{
	kind: kindClients, what: "client",
	id:      func(c storage.Client) string { return c.ID },
	valid:   storage.Client.Validate,
	compare: byCreated(func(c storage.Client) time.Time { return c.CreatedAt }, func(c storage.Client) string { return c.ID }),
}

// CreateClient stores a new OAuth client; storage.ErrExists if its ID is
// taken.
func (s *Store) CreateClient(ctx context.Context, c storage.Client) error {
	return clients.put(ctx, s, c, false)
}

// GetClient returns the client with the ID, or storage.ErrNotFound.
func (s *Store) GetClient(ctx context.Context, id string) (storage.Client, error) {
	c, _, err := clients.get(ctx, s, id)
	return c, err
}

// ListClients returns every client ordered by (CreatedAt, ID).
func (s *Store) ListClients(ctx context.Context) ([]storage.Client, error) {
	return clients.list(ctx, s)
}

// DeleteClient deletes the client with the ID, or returns
// storage.ErrNotFound.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return clients.delete(ctx, s, id)
}
