package bbolt

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// keyAuditHead is the meta key of the signed head of the audit trail.
var keyAuditHead = []byte("audit_head")

// auditKey is the key of audit record seq: big-endian, so that byte order
// is seq order.
func auditKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// AuditHead returns the signed head of the audit trail and its last
// record. A trail with no record yet has a zero head (Seq 0) and a zero
// record. The last record is read as stored; if it does not decode, the
// error wraps storage.ErrCorrupt and names it.
func (s *Store) AuditHead(ctx context.Context) (storage.AuditHead, storage.AuditRecord, error) {
	var head storage.AuditHead
	var last storage.AuditRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		if head, err = readAuditHead(tx); err != nil {
			return err
		}
		b, err := bucket(tx, bucketAudit)
		if err != nil {
			return err
		}
		k, v := b.Cursor().Last()
		if k == nil {
			return nil
		}
		last, err = decodeAudit(k, v)
		return err
	})
	return head, last, err
}

// AppendAudit stores rec as the next record of the trail and head as its
// new head, in one transaction. rec must follow the stored head (Seq one
// more, Prev its Hash) and head must name rec; otherwise nothing is
// written and the error wraps storage.ErrExists (another writer moved the
// head) or storage.ErrInvalid.
func (s *Store) AppendAudit(ctx context.Context, rec storage.AuditRecord, head storage.AuditHead) error {
	val, hval, err := encodeAudit(rec, head)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		b, err := s.checkAuditAppend(tx, rec)
		if err != nil {
			return err
		}
		return putAudit(tx, b, rec, val, hval)
	})
}

// PruneAudit deletes the records numbered up to through, then appends rec
// (the record of the pruning) with head, in one transaction. head must
// anchor the trail at the deleted record through: AnchorSeq through and
// AnchorHash that record's Hash. It returns how many records it deleted.
// Errors are those of AppendAudit, and storage.ErrNotFound when record
// through is not stored.
func (s *Store) PruneAudit(ctx context.Context, through uint64, rec storage.AuditRecord, head storage.AuditHead) (int, error) {
	val, hval, err := encodeAudit(rec, head)
	if err != nil {
		return 0, err
	}
	if head.AnchorSeq != through {
		return 0, fmt.Errorf("storage/bbolt: %w: audit head anchored at %d, pruning through %d", storage.ErrInvalid, head.AnchorSeq, through)
	}
	n := 0
	err = s.update(ctx, func(tx *bolt.Tx) error {
		b, err := s.checkAuditAppend(tx, rec)
		if err != nil {
			return err
		}
		v := b.Get(auditKey(through))
		if v == nil {
			return fmt.Errorf("storage/bbolt: audit record %d: %w", through, storage.ErrNotFound)
		}
		anchor, err := decodeAudit(auditKey(through), v)
		if err != nil {
			return err
		}
		if anchor.Hash != head.AnchorHash {
			return fmt.Errorf("storage/bbolt: %w: audit head anchor hash is not that of record %d", storage.ErrInvalid, through)
		}
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= through; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		return putAudit(tx, b, rec, val, hval)
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// ScanAudit calls fn with every audit record numbered above after, in
// order, and returns the head, all read in one transaction, so the
// records and the head are consistent. A record that does not decode is
// passed with its Seq (from its key) and an error wrapping
// storage.ErrCorrupt naming it, so that a verifier can report it; fn
// returns false to stop early.
func (s *Store) ScanAudit(ctx context.Context, after uint64, fn func(storage.AuditRecord, error) bool) (storage.AuditHead, error) {
	var head storage.AuditHead
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		if head, err = readAuditHead(tx); err != nil {
			return err
		}
		b, err := bucket(tx, bucketAudit)
		if err != nil {
			return err
		}
		if after == ^uint64(0) {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(auditKey(after + 1)); k != nil; k, v = c.Next() {
			rec, err := decodeAudit(k, v)
			if len(k) == 8 {
				rec.Seq = binary.BigEndian.Uint64(k)
			}
			if !fn(rec, err) {
				return nil
			}
		}
		return nil
	})
	return head, err
}

// checkAuditAppend checks, inside tx, that rec follows the stored head.
func (s *Store) checkAuditAppend(tx *bolt.Tx, rec storage.AuditRecord) (*bolt.Bucket, error) {
	cur, err := readAuditHead(tx)
	if err != nil {
		return nil, err
	}
	if rec.Seq != cur.Seq+1 || rec.Prev != cur.Hash {
		return nil, fmt.Errorf("storage/bbolt: audit record %d does not follow the head (record %d): %w", rec.Seq, cur.Seq, storage.ErrExists)
	}
	return bucket(tx, bucketAudit)
}

func putAudit(tx *bolt.Tx, b *bolt.Bucket, rec storage.AuditRecord, val, hval []byte) error {
	if err := b.Put(auditKey(rec.Seq), val); err != nil {
		return err
	}
	meta, err := bucket(tx, bucketMeta)
	if err != nil {
		return err
	}
	return meta.Put(keyAuditHead, hval)
}

// encodeAudit validates rec and head and encodes both.
func encodeAudit(rec storage.AuditRecord, head storage.AuditHead) (val, hval []byte, err error) {
	if err := rec.Validate(); err != nil {
		return nil, nil, fmt.Errorf("storage/bbolt: %w", err)
	}
	if head.Seq != rec.Seq || head.Hash != rec.Hash {
		return nil, nil, fmt.Errorf("storage/bbolt: %w: audit head names record %d, not the appended record %d", storage.ErrInvalid, head.Seq, rec.Seq)
	}
	if val, err = json.Marshal(rec); err != nil {
		return nil, nil, fmt.Errorf("storage/bbolt: encoding audit record %d: %w", rec.Seq, err)
	}
	if hval, err = json.Marshal(head); err != nil {
		return nil, nil, fmt.Errorf("storage/bbolt: encoding audit head: %w", err)
	}
	return val, hval, nil
}

func readAuditHead(tx *bolt.Tx) (storage.AuditHead, error) {
	var head storage.AuditHead
	meta, err := bucket(tx, bucketMeta)
	if err != nil {
		return head, err
	}
	raw := meta.Get(keyAuditHead)
	if raw == nil {
		return head, nil
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return storage.AuditHead{}, corrupt(bucketMeta, keyAuditHead, "%v", err)
	}
	return head, nil
}

// decodeAudit decodes the value stored under key in the audit bucket.
func decodeAudit(key, val []byte) (storage.AuditRecord, error) {
	var r storage.AuditRecord
	if len(key) != 8 {
		return r, corrupt(bucketAudit, key, "key is not an 8-byte sequence number")
	}
	if err := json.Unmarshal(val, &r); err != nil {
		return storage.AuditRecord{}, corrupt(bucketAudit, key, "%v", err)
	}
	if seq := binary.BigEndian.Uint64(key); r.Seq != seq {
		return storage.AuditRecord{}, corrupt(bucketAudit, key, "record has seq %d under key %d", r.Seq, seq)
	}
	return r, nil
}

// Backup calls fn with a consistent view of the database, from one read
// transaction: the size of the file it holds, the key records in it, and
// a function that writes that file (bbolt's Tx.WriteTo) to w. The server
// keeps serving meanwhile; writers are not blocked.
func (s *Store) Backup(ctx context.Context, fn func(size int64, keys []storage.Key, writeDB func(w io.Writer) (int64, error)) error) error {
	return s.view(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketKeys)
		if err != nil {
			return err
		}
		var keys []storage.Key
		if err := b.ForEach(func(k, v []byte) error {
			key, err := decodeKey(k, v)
			keys = append(keys, key)
			return err
		}); err != nil {
			return err
		}
		return fn(tx.Size(), keys, tx.WriteTo)
	})
}
