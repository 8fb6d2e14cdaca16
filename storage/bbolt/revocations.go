package bbolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// RevokeID records the revocation of a SPIFFE ID and revokes every
// certificate issued to it that is unexpired at now, in one transaction.
// It returns the certificates it revoked now: one revoked before keeps its
// record (time, reason, admin) and is not returned. Revoking an ID again
// updates the ID's record; a block is never lifted by a later revocation
// without Block.
func (s *Store) RevokeID(ctx context.Context, r storage.Revocation, now time.Time) ([]storage.RevokedSerial, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("storage/bbolt: %w", err)
	}
	serials, err := s.SerialsFor(ctx, r.SPIFFEID, now)
	if err != nil {
		return nil, err
	}
	var revoked []storage.RevokedSerial
	err = s.update(ctx, func(tx *bolt.Tx) error {
		ids, err := bucket(tx, bucketRevokedIDs)
		if err != nil {
			return err
		}
		rs, err := bucket(tx, bucketRevokedSerials)
		if err != nil {
			return err
		}
		if old := ids.Get([]byte(r.SPIFFEID)); old != nil {
			prev, err := decodeRevocation([]byte(r.SPIFFEID), old)
			if err != nil {
				return err
			}
			r.Blocked = r.Blocked || prev.Blocked
		}
		val, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := ids.Put([]byte(r.SPIFFEID), val); err != nil {
			return err
		}
		revoked = revoked[:0]
		for _, sr := range serials {
			if rs.Get([]byte(sr.Serial)) != nil {
				continue // revoked before: its record stays as it is
			}
			revoked = append(revoked, storage.RevokedSerial{Serial: sr.Serial, SPIFFEID: sr.SPIFFEID, NotAfter: sr.NotAfter, RevokedAt: r.RevokedAt, Reason: r.Reason, AdminUID: r.AdminUID})
		}
		return putRevokedSerials(tx, revoked)
	})
	if err != nil {
		return nil, err
	}
	if revoked == nil {
		revoked = []storage.RevokedSerial{}
	}
	return revoked, nil
}

// RevokeSerial revokes one certificate, which must have been recorded by
// RecordSerial and not yet expired at now; else storage.ErrNotFound. A
// certificate revoked before keeps its record: RevokeSerial returns that
// record unchanged and an error wrapping storage.ErrExists.
func (s *Store) RevokeSerial(ctx context.Context, serial, reason string, adminUID uint32, now time.Time) (storage.RevokedSerial, error) {
	var out storage.RevokedSerial
	if err := s.flush(ctx); err != nil { // bindings still queued
		return out, err
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		rs, err := bucket(tx, bucketRevokedSerials)
		if err != nil {
			return err
		}
		if val := rs.Get([]byte(serial)); val != nil {
			if out, err = decodeRevokedSerial([]byte(serial), val); err != nil {
				return err
			}
			return fmt.Errorf("storage/bbolt: serial %s was revoked at %s: %w", serial, out.RevokedAt.UTC().Format(time.RFC3339), storage.ErrExists)
		}
		rec, err := lookupSerial(tx, serial)
		if err != nil {
			return err
		}
		if !rec.NotAfter.After(now) {
			return fmt.Errorf("storage/bbolt: serial %s expired at %s: %w", serial, rec.NotAfter.UTC().Format(time.RFC3339), storage.ErrNotFound)
		}
		out = storage.RevokedSerial{Serial: rec.Serial, SPIFFEID: rec.SPIFFEID, NotAfter: rec.NotAfter, RevokedAt: now, Reason: reason, AdminUID: adminUID}
		return putRevokedSerials(tx, []storage.RevokedSerial{out})
	})
	return out, err
}

func putRevokedSerials(tx *bolt.Tx, rs []storage.RevokedSerial) error {
	b, err := bucket(tx, bucketRevokedSerials)
	if err != nil {
		return err
	}
	for _, r := range rs {
		val, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(r.Serial), val); err != nil {
			return err
		}
	}
	return nil
}

// Unblock clears the block of a revoked SPIFFE ID. The revocation record
// stays (credentials issued before it remain revoked). storage.ErrNotFound
// if the ID is not blocked.
func (s *Store) Unblock(ctx context.Context, spiffeID string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		ids, err := bucket(tx, bucketRevokedIDs)
		if err != nil {
			return err
		}
		val := ids.Get([]byte(spiffeID))
		if val == nil {
			return fmt.Errorf("storage/bbolt: %s is not revoked: %w", spiffeID, storage.ErrNotFound)
		}
		r, err := decodeRevocation([]byte(spiffeID), val)
		if err != nil {
			return err
		}
		if !r.Blocked {
			return fmt.Errorf("storage/bbolt: %s is not blocked: %w", spiffeID, storage.ErrNotFound)
		}
		r.Blocked = false
		nval, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return ids.Put([]byte(spiffeID), nval)
	})
}

// ListRevocations returns every ID revocation ordered by SPIFFE ID and every
// revoked certificate ordered by serial.
func (s *Store) ListRevocations(ctx context.Context) ([]storage.Revocation, []storage.RevokedSerial, error) {
	ids := []storage.Revocation{}
	serials := []storage.RevokedSerial{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		ib, err := bucket(tx, bucketRevokedIDs)
		if err != nil {
			return err
		}
		if err := ib.ForEach(func(k, v []byte) error {
			r, err := decodeRevocation(k, v)
			if err == nil {
				ids = append(ids, r)
			}
			return err
		}); err != nil {
			return err
		}
		sb, err := bucket(tx, bucketRevokedSerials)
		if err != nil {
			return err
		}
		return sb.ForEach(func(k, v []byte) error {
			r, err := decodeRevokedSerial(k, v)
			if err == nil {
				serials = append(serials, r)
			}
			return err
		})
	})
	if err != nil {
		return nil, nil, err
	}
	slices.SortFunc(ids, func(a, b storage.Revocation) int { return strings.Compare(a.SPIFFEID, b.SPIFFEID) })
	slices.SortFunc(serials, func(a, b storage.RevokedSerial) int { return strings.Compare(a.Serial, b.Serial) })
	return ids, serials, nil
}

// PruneRevocations deletes revoked certificates that expired before now,
// and ID revocations that are not blocked and older than keep (no
// credential issued before them can still be valid). It returns how many
// records it deleted.
func (s *Store) PruneRevocations(ctx context.Context, now time.Time, keep time.Duration) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		n = 0
		sb, err := bucket(tx, bucketRevokedSerials)
		if err != nil {
			return err
		}
		var dead [][]byte
		if err := sb.ForEach(func(k, v []byte) error {
			r, err := decodeRevokedSerial(k, v)
			if err != nil {
				return err
			}
			if now.After(r.NotAfter) {
				dead = append(dead, bytes.Clone(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range dead {
			if err := sb.Delete(k); err != nil {
				return err
			}
		}
		n += len(dead)
		ib, err := bucket(tx, bucketRevokedIDs)
		if err != nil {
			return err
		}
		dead = dead[:0]
		if err := ib.ForEach(func(k, v []byte) error {
			r, err := decodeRevocation(k, v)
			if err != nil {
				return err
			}
			if !r.Blocked && now.Sub(r.RevokedAt) > keep {
				dead = append(dead, bytes.Clone(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range dead {
			if err := ib.Delete(k); err != nil {
				return err
			}
		}
		n += len(dead)
		return nil
	})
	return n, err
}

func decodeRevocation(key, val []byte) (storage.Revocation, error) {
	var r storage.Revocation
	if err := json.Unmarshal(val, &r); err != nil {
		return r, corrupt(bucketRevokedIDs, key, "%v", err)
	}
	if r.SPIFFEID != string(key) {
		return r, corrupt(bucketRevokedIDs, key, "record names %q", r.SPIFFEID)
	}
	return r, nil
}

func decodeRevokedSerial(key, val []byte) (storage.RevokedSerial, error) {
	var r storage.RevokedSerial
	if err := json.Unmarshal(val, &r); err != nil {
		return r, corrupt(bucketRevokedSerials, key, "%v", err)
	}
	if r.Serial != string(key) {
		return r, corrupt(bucketRevokedSerials, key, "record names serial %q", r.Serial)
	}
	return r, nil
}

var keyCRLNumber = []byte("crl_number")

// NextCRLNumber returns a revocation-list number greater than every number
// it returned before (also across restarts) and at least atLeast, and
// records it durably.
func (s *Store) NextCRLNumber(ctx context.Context, atLeast uint64) (uint64, error) {
	var n uint64
	err := s.update(ctx, func(tx *bolt.Tx) error {
		meta, err := bucket(tx, bucketMeta)
		if err != nil {
			return err
		}
		n = atLeast
		if v := meta.Get(keyCRLNumber); v != nil {
			if len(v) != 8 {
				return corrupt(bucketMeta, keyCRLNumber, "value is %d bytes, want 8", len(v))
			}
			n = max(n, binary.BigEndian.Uint64(v)+1)
		}
		return meta.Put(keyCRLNumber, binary.BigEndian.AppendUint64(nil, n))
	})
	return n, err
}
