package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/badge-dev/badge/storage"
)

// revokedSerials reads the revoked certificates at rev, by serial, with
// their mod revisions.
func (s *Store) revokedSerials(ctx context.Context, rev int64) (map[string]storage.RevokedSerial, map[string]int64, error) {
	out := map[string]storage.RevokedSerial{}
	revs := map[string]int64{}
	dir := s.p.dir(kindRevokedSerials)
	_, err := s.rangeAll(ctx, dir, rangeEnd(dir), rev, false, func(kv *mvccpb.KeyValue) error {
		r, err := decodeRevokedSerial(s.p, kv)
		if err != nil {
			return err
		}
		out[r.Serial], revs[r.Serial] = r, kv.ModRevision
		return nil
	})
	return out, revs, err
}

func decodeRevokedSerial(p prefix, kv *mvccpb.KeyValue) (storage.RevokedSerial, error) {
	var r storage.RevokedSerial
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return r, corrupt(kv.Key, "%v", err)
	}
	if p.revokedSerial(r.Serial) != string(kv.Key) {
		return r, corrupt(kv.Key, "record names serial %q", r.Serial)
	}
	return r, nil
}

func decodeRevocation(p prefix, kv *mvccpb.KeyValue) (storage.Revocation, error) {
	var r storage.Revocation
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return r, corrupt(kv.Key, "%v", err)
	}
	if p.revokedID(r.SPIFFEID) != string(kv.Key) {
		return r, corrupt(kv.Key, "record names %q", r.SPIFFEID)
	}
	return r, nil
}

// getRevocation reads the revocation of an ID at rev; kv is nil if the ID
// is not revoked.
func (s *Store) getRevocation(ctx context.Context, id string, rev int64) (r storage.Revocation, kv *mvccpb.KeyValue, err error) {
	resp, err := s.cli.Get(ctx, s.p.revokedID(id), clientv3.WithRev(rev))
	if err != nil || len(resp.Kvs) == 0 {
		return r, nil, err
	}
	r, err = decodeRevocation(s.p, resp.Kvs[0])
	if err != nil {
		return r, nil, err
	}
	return r, resp.Kvs[0], nil
}

// RevokeID records the revocation of a SPIFFE ID and revokes every
// certificate of it unexpired at now. It revokes the certificates read
// first, then writes the ID's record in a transaction that also reads the
// certificates of the ID recorded since (by this server or another), and
// revokes those: every certificate recorded before the ID's record is
// revoked, and none is missed however fast the ID is issued to. Should
// that last write fail, the error says so and a retry completes it. It
// returns the certificates it revoked; one revoked before keeps its
// record. A block is never lifted by a later revocation without Block.
func (s *Store) RevokeID(ctx context.Context, r storage.Revocation, now time.Time) ([]storage.RevokedSerial, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("storage/etcd: %w", err)
	}
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	// out is by serial: an attempt run again finds again, as its own,
	// what an earlier one wrote.
	out := map[string]storage.RevokedSerial{}
	wid := newWriteID()
	revoke := func(ctx context.Context, serials []storage.Serial) error {
		keys := make([]string, 0, len(serials))
		vals := make([]string, 0, len(serials))
		recs := make([]storage.RevokedSerial, 0, len(serials))
		for _, sr := range serials {
			rs := storage.RevokedSerial{Serial: sr.Serial, SPIFFEID: sr.SPIFFEID, NotAfter: sr.NotAfter, RevokedAt: r.RevokedAt, Reason: r.Reason, AdminUID: r.AdminUID}
			val, err := json.Marshal(rs)
			if err != nil {
				return err
			}
			keys, vals, recs = append(keys, s.p.revokedSerial(sr.Serial)), append(vals, string(val)), append(recs, rs)
		}
		written, err := s.putIfAbsent(ctx, keys, vals, wid)
		for i, w := range written {
			if w {
				out[recs[i].Serial] = recs[i]
			}
		}
		return err
	}
	var rev int64
	err := s.do(ctx, func(ctx context.Context) error {
		serials, at, err := s.serialsFor(ctx, r.SPIFFEID, now, 0)
		if err != nil {
			return err
		}
		rev = at
		return revoke(ctx, serials)
	})
	if err != nil {
		return nil, err
	}
	var since []storage.Serial
	idKey, idx := s.p.revokedID(r.SPIFFEID), s.p.serialIDs(r.SPIFFEID)
	err = s.retry(ctx, "revoking "+r.SPIFFEID, func(ctx context.Context) error {
		// Run again after an attempt whose answer was lost, this reads
		// the record that attempt wrote and writes it again, unchanged:
		// the read of the certificates recorded since is what matters.
		prev, kv, err := s.getRevocation(ctx, r.SPIFFEID, 0)
		if err != nil {
			return err
		}
		var idRev int64
		if kv != nil {
			idRev = kv.ModRevision
		}
		rec := r
		rec.Blocked = r.Blocked || (kv != nil && prev.Blocked)
		val, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(idKey), "=", idRev)).
			Then(clientv3.OpPut(idKey, string(val)),
				clientv3.OpGet(idx, clientv3.WithRange(rangeEnd(idx)), clientv3.WithMinModRev(rev+1))).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return errConflict
		}
		since = since[:0]
		for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
			var sr storage.Serial
			if err := json.Unmarshal(kv.Value, &sr); err != nil {
				return corrupt(kv.Key, "%v", err)
			}
			if sr.NotAfter.After(now) {
				since = append(since, sr)
			}
		}
		return nil
	})
	if err == nil && len(since) > 0 {
		err = s.do(ctx, func(ctx context.Context) error { return revoke(ctx, since) })
		if err != nil {
			err = fmt.Errorf("storage/etcd: %s is recorded as revoked, but %d certificates issued meanwhile are not yet: revoke it again: %w", r.SPIFFEID, len(since), err)
		}
	}
	if err != nil {
		return nil, err
	}
	return sortedRevoked(out), nil
}

// sortedRevoked returns the records of m ordered by serial, never nil.
func sortedRevoked(m map[string]storage.RevokedSerial) []storage.RevokedSerial {
	out := make([]storage.RevokedSerial, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b storage.RevokedSerial) int { return strings.Compare(a.Serial, b.Serial) })
	return out
}

// RevokeSerial revokes one recorded certificate unexpired at now (else
// storage.ErrNotFound). One revoked before keeps its record, which is
// returned with an error wrapping storage.ErrExists. The lookup scans the
// keys of the serial records: only an admin's request does it.
func (s *Store) RevokeSerial(ctx context.Context, serial, reason string, adminUID uint32, now time.Time) (storage.RevokedSerial, error) {
	var out storage.RevokedSerial
	if err := s.flush(ctx); err != nil {
		return out, err
	}
	wid := newWriteID()
	err := s.do(ctx, func(ctx context.Context) error {
		key := s.p.revokedSerial(serial)
		if prev, kv, err := s.getRevokedSerial(ctx, key); err != nil {
			return err
		} else if kv != nil {
			out = prev
			if taggedBy(kv.Value, wid) {
				return nil // revoked by an earlier attempt of this call
			}
			return fmt.Errorf("storage/etcd: serial %s was revoked at %s: %w", serial, prev.RevokedAt.UTC().Format(time.RFC3339), storage.ErrExists)
		}
		dir := s.p.dir(kindSerials)
		var found string
		rev, err := s.rangeAll(ctx, dir, rangeEnd(dir), 0, true, func(kv *mvccpb.KeyValue) error {
			if strings.HasSuffix(string(kv.Key), "/"+serial) {
				found = string(kv.Key) // the latest expiry wins
			}
			return nil
		})
		if err != nil {
			return err
		}
		if found == "" {
			return fmt.Errorf("storage/etcd: serial %s: %w", serial, storage.ErrNotFound)
		}
		resp, err := s.cli.Get(ctx, found, clientv3.WithRev(rev))
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("storage/etcd: serial %s: %w", serial, storage.ErrNotFound)
		}
		var rec storage.Serial
		if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
			return corrupt(resp.Kvs[0].Key, "%v", err)
		}
		if !rec.NotAfter.After(now) {
			return fmt.Errorf("storage/etcd: serial %s expired at %s: %w", serial, rec.NotAfter.UTC().Format(time.RFC3339), storage.ErrNotFound)
		}
		rs := storage.RevokedSerial{Serial: rec.Serial, SPIFFEID: rec.SPIFFEID, NotAfter: rec.NotAfter, RevokedAt: now, Reason: reason, AdminUID: adminUID}
		val, err := json.Marshal(rs)
		if err != nil {
			return err
		}
		tresp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, tag(string(val), wid))).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return err
		}
		if !tresp.Succeeded {
			kvs := tresp.Responses[0].GetResponseRange().Kvs
			if len(kvs) == 1 {
				if out, err = decodeRevokedSerial(s.p, kvs[0]); err != nil {
					return err
				}
				if taggedBy(kvs[0].Value, wid) {
					return nil
				}
			}
			return fmt.Errorf("storage/etcd: serial %s was revoked meanwhile: %w", serial, storage.ErrExists)
		}
		out = rs
		return nil
	})
	return out, err
}

// getRevokedSerial reads a revoked certificate; kv is nil if there is
// none.
func (s *Store) getRevokedSerial(ctx context.Context, key string) (storage.RevokedSerial, *mvccpb.KeyValue, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return storage.RevokedSerial{}, nil, err
	}
	r, err := decodeRevokedSerial(s.p, resp.Kvs[0])
	if err != nil {
		return r, nil, err
	}
	return r, resp.Kvs[0], nil
}

// Unblock clears the block of a revoked SPIFFE ID; storage.ErrNotFound if
// the ID is not blocked.
func (s *Store) Unblock(ctx context.Context, spiffeID string) error {
	wid := newWriteID()
	return s.retry(ctx, "unblocking "+spiffeID, func(ctx context.Context) error {
		r, kv, err := s.getRevocation(ctx, spiffeID, 0)
		switch {
		case err != nil:
			return err
		case kv == nil:
			return fmt.Errorf("storage/etcd: %s is not revoked: %w", spiffeID, storage.ErrNotFound)
		case !r.Blocked && taggedBy(kv.Value, wid):
			return nil // unblocked by an earlier attempt of this call
		case !r.Blocked:
			return fmt.Errorf("storage/etcd: %s is not blocked: %w", spiffeID, storage.ErrNotFound)
		}
		r.Blocked = false
		val, err := json.Marshal(r)
		if err != nil {
			return err
		}
		key := s.p.revokedID(spiffeID)
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpPut(key, tag(string(val), wid))).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return errConflict
		}
		return nil
	})
}

// ListRevocations returns every ID revocation ordered by SPIFFE ID and
// every revoked certificate ordered by serial, read at one revision.
func (s *Store) ListRevocations(ctx context.Context) ([]storage.Revocation, []storage.RevokedSerial, error) {
	ids := []storage.Revocation{}
	serials := []storage.RevokedSerial{}
	err := s.do(ctx, func(ctx context.Context) error {
		ids, serials = ids[:0], serials[:0]
		dir := s.p.dir(kindRevokedIDs)
		rev, err := s.rangeAll(ctx, dir, rangeEnd(dir), 0, false, func(kv *mvccpb.KeyValue) error {
			r, err := decodeRevocation(s.p, kv)
			ids = append(ids, r)
			return err
		})
		if err != nil {
			return err
		}
		rs, _, err := s.revokedSerials(ctx, rev)
		for _, r := range rs {
			serials = append(serials, r)
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	slices.SortFunc(ids, func(a, b storage.Revocation) int { return strings.Compare(a.SPIFFEID, b.SPIFFEID) })
	slices.SortFunc(serials, func(a, b storage.RevokedSerial) int { return strings.Compare(a.Serial, b.Serial) })
	return ids, serials, nil
}

// PruneRevocations deletes revoked certificates that expired before now,
// and ID revocations that are not blocked and older than keep; each
// deletion is conditional on the record not having changed since it was
// read. It returns how many records it deleted.
func (s *Store) PruneRevocations(ctx context.Context, now time.Time, keep time.Duration) (int, error) {
	n := 0
	err := s.retry(ctx, "pruning revocations", func(ctx context.Context) error {
		n = 0
		rs, revs, err := s.revokedSerials(ctx, 0)
		if err != nil {
			return err
		}
		var ops []clientv3.Op
		var cmps []clientv3.Cmp
		del := func(key string, modRev int64) {
			ops = append(ops, clientv3.OpDelete(key))
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", modRev))
		}
		for sr, r := range rs {
			if now.After(r.NotAfter) {
				del(s.p.revokedSerial(sr), revs[sr])
			}
		}
		dir := s.p.dir(kindRevokedIDs)
		if _, err := s.rangeAll(ctx, dir, rangeEnd(dir), 0, false, func(kv *mvccpb.KeyValue) error {
			r, err := decodeRevocation(s.p, kv)
			if err != nil {
				return err
			}
			if !r.Blocked && now.Sub(r.RevokedAt) > keep {
				del(string(kv.Key), kv.ModRevision)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := s.commitChunks(ctx, ops, cmps); err != nil {
			return err
		}
		n = len(ops)
		return nil
	})
	return n, err
}

// NextCRLNumber returns a revocation-list number greater than every
// number it returned before, on this server or any other sharing the
// trust domain, and at least atLeast. An attempt run again after one
// whose answer was lost reads the number that one may have written and
// takes the next: a number may be skipped, none is returned twice.
func (s *Store) NextCRLNumber(ctx context.Context, atLeast uint64) (uint64, error) {
	var n uint64
	key := s.p.meta("crl-number")
	err := s.retry(ctx, "numbering the revocation list", func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return err
		}
		n = atLeast
		var modRev int64
		if len(resp.Kvs) == 1 {
			v, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
			if err != nil {
				return corrupt(resp.Kvs[0].Key, "not a number: %v", err)
			}
			n, modRev = max(n, v+1), resp.Kvs[0].ModRevision
		}
		tresp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
			Then(clientv3.OpPut(key, strconv.FormatUint(n, 10))).Commit()
		if err != nil {
			return err
		}
		if !tresp.Succeeded {
			return errConflict
		}
		return nil
	})
	return n, err
}
