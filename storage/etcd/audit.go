package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/badge-dev/badge/storage"
)

// readAuditHead reads the head at rev (0: the latest) and returns it with
// its mod revision (0 if none is stored), the revision read, and the
// write ID it was written with (see retry.go).
func (s *Store) readAuditHead(ctx context.Context, rev int64) (head storage.AuditHead, modRev, readRev int64, wid string, err error) {
	key := s.p.meta("audit-head")
	resp, err := s.cli.Get(ctx, key, clientv3.WithRev(rev))
	if err != nil {
		return head, 0, 0, "", err
	}
	if len(resp.Kvs) == 0 {
		return head, 0, resp.Header.Revision, "", nil
	}
	var w struct {
		storage.AuditHead
		WriteID string `json:"write_id"`
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &w); err != nil {
		return storage.AuditHead{}, 0, 0, "", corrupt([]byte(key), "%v", err)
	}
	return w.AuditHead, resp.Kvs[0].ModRevision, resp.Header.Revision, w.WriteID, nil
}

func (s *Store) decodeAudit(kv *mvccpb.KeyValue) (storage.AuditRecord, error) {
	var r storage.AuditRecord
	name, _ := cutKey(kv.Key, s.p.dir(kindAudit))
	seq, err := strconv.ParseUint(name, 10, 64)
	if err != nil || len(name) != 20 {
		return r, corrupt(kv.Key, "key is not a 20-digit sequence number")
	}
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return storage.AuditRecord{Seq: seq}, corrupt(kv.Key, "%v", err)
	}
	if r.Seq != seq {
		return storage.AuditRecord{Seq: seq}, corrupt(kv.Key, "record has seq %d", r.Seq)
	}
	return r, nil
}

// AuditHead returns the signed head of the audit trail and its last
// record, read at one revision.
func (s *Store) AuditHead(ctx context.Context) (storage.AuditHead, storage.AuditRecord, error) {
	var head storage.AuditHead
	var last storage.AuditRecord
	err := s.do(ctx, func(ctx context.Context) error {
		var rev int64
		var err error
		if head, _, rev, _, err = s.readAuditHead(ctx, 0); err != nil {
			return err
		}
		dir := s.p.dir(kindAudit)
		resp, err := s.cli.Get(ctx, dir, append(clientv3.WithLastKey(), clientv3.WithRange(rangeEnd(dir)), clientv3.WithRev(rev))...)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 1 {
			last, err = s.decodeAudit(resp.Kvs[0])
		}
		return err
	})
	return head, last, err
}

// encodeAudit validates rec and head and encodes both.
func encodeAudit(rec storage.AuditRecord, head storage.AuditHead) (val, hval string, err error) {
	if err := rec.Validate(); err != nil {
		return "", "", fmt.Errorf("storage/etcd: %w", err)
	}
	if head.Seq != rec.Seq || head.Hash != rec.Hash {
		return "", "", fmt.Errorf("storage/etcd: %w: audit head names record %d, not the appended record %d", storage.ErrInvalid, head.Seq, rec.Seq)
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return "", "", fmt.Errorf("storage/etcd: encoding audit record %d: %w", rec.Seq, err)
	}
	h, err := json.Marshal(head)
	if err != nil {
		return "", "", fmt.Errorf("storage/etcd: encoding audit head: %w", err)
	}
	return string(v), string(h), nil
}

// AppendAudit stores rec as the next record and head as the new head, in
// one transaction that commits only if the head is still the one rec
// follows; otherwise the error wraps storage.ErrExists (another writer,
// perhaps another server, moved the head). The head carries the call's
// write ID: an attempt that finds the head its own earlier attempt wrote
// succeeds.
func (s *Store) AppendAudit(ctx context.Context, rec storage.AuditRecord, head storage.AuditHead) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	val, hval, err := encodeAudit(rec, head)
	if err != nil {
		return err
	}
	wid := newWriteID()
	val, hval = tag(val, wid), tag(hval, wid)
	return s.do(ctx, func(ctx context.Context) error {
		cur, headRev, _, curWID, err := s.readAuditHead(ctx, 0)
		if err != nil {
			return err
		}
		if mine, err := s.appended(ctx, rec.Seq, cur, curWID, wid); mine || err != nil {
			return err
		}
		if rec.Seq != cur.Seq+1 || rec.Prev != cur.Hash {
			return fmt.Errorf("storage/etcd: audit record %d does not follow the head (record %d): %w", rec.Seq, cur.Seq, storage.ErrExists)
		}
		hkey := s.p.meta("audit-head")
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(hkey), "=", headRev)).
			Then(clientv3.OpPut(s.p.audit(rec.Seq), val), clientv3.OpPut(hkey, hval)).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return fmt.Errorf("storage/etcd: audit record %d: the head moved meanwhile: %w", rec.Seq, storage.ErrExists)
		}
		return nil
	})
}

// appended reports whether the record seq was written by the call with
// the write ID wid, given the head cur it read (written by curWID): the
// head is still the one that call wrote, or other writers moved it on
// and the record is the call's.
func (s *Store) appended(ctx context.Context, seq uint64, cur storage.AuditHead, curWID, wid string) (bool, error) {
	switch {
	case curWID == wid:
		return true, nil
	case cur.Seq < seq:
		return false, nil
	}
	resp, err := s.cli.Get(ctx, s.p.audit(seq))
	if err != nil {
		return false, err
	}
	return len(resp.Kvs) == 1 && taggedBy(resp.Kvs[0].Value, wid), nil
}

// PruneAudit deletes the records numbered up to through and appends rec
// with head, in one transaction conditional on the head as read.
func (s *Store) PruneAudit(ctx context.Context, through uint64, rec storage.AuditRecord, head storage.AuditHead) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	val, hval, err := encodeAudit(rec, head)
	if err != nil {
		return 0, err
	}
	if head.AnchorSeq != through {
		return 0, fmt.Errorf("storage/etcd: %w: audit head anchored at %d, pruning through %d", storage.ErrInvalid, head.AnchorSeq, through)
	}
	n, sent := 0, 0
	wid := newWriteID()
	val, hval = tag(val, wid), tag(hval, wid)
	err = s.do(ctx, func(ctx context.Context) error {
		cur, headRev, rev, curWID, err := s.readAuditHead(ctx, 0)
		if err != nil {
			return err
		}
		if mine, err := s.appended(ctx, rec.Seq, cur, curWID, wid); mine || err != nil {
			n = sent // pruned by an earlier attempt
			return err
		}
		if rec.Seq != cur.Seq+1 || rec.Prev != cur.Hash {
			return fmt.Errorf("storage/etcd: audit record %d does not follow the head (record %d): %w", rec.Seq, cur.Seq, storage.ErrExists)
		}
		resp, err := s.cli.Get(ctx, s.p.audit(through), clientv3.WithRev(rev))
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("storage/etcd: audit record %d: %w", through, storage.ErrNotFound)
		}
		anchor, err := s.decodeAudit(resp.Kvs[0])
		if err != nil {
			return err
		}
		if anchor.Hash != head.AnchorHash {
			return fmt.Errorf("storage/etcd: %w: audit head anchor hash is not that of record %d", storage.ErrInvalid, through)
		}
		// What the deletion will delete, should its answer be lost.
		cresp, err := s.cli.Get(ctx, s.p.dir(kindAudit), clientv3.WithRange(s.p.audit(through+1)), clientv3.WithCountOnly(), clientv3.WithRev(rev))
		if err != nil {
			return err
		}
		sent = int(cresp.Count)
		hkey := s.p.meta("audit-head")
		tresp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(hkey), "=", headRev)).
			Then(
				clientv3.OpDelete(s.p.dir(kindAudit), clientv3.WithRange(s.p.audit(through+1))),
				clientv3.OpPut(s.p.audit(rec.Seq), val),
				clientv3.OpPut(hkey, hval),
			).Commit()
		if err != nil {
			return err
		}
		if !tresp.Succeeded {
			return fmt.Errorf("storage/etcd: audit record %d: the head moved meanwhile: %w", rec.Seq, storage.ErrExists)
		}
		n = int(tresp.Responses[0].GetResponseDeleteRange().Deleted)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// ScanAudit calls fn with every audit record numbered above after, in
// order, and returns the head, all read at one revision. A record that
// does not decode is passed with its Seq and an error wrapping
// storage.ErrCorrupt; fn returns false to stop.
func (s *Store) ScanAudit(ctx context.Context, after uint64, fn func(storage.AuditRecord, error) bool) (storage.AuditHead, error) {
	var head storage.AuditHead
	err := s.do(ctx, func(ctx context.Context) error {
		var rev int64
		var err error
		if head, _, rev, _, err = s.readAuditHead(ctx, 0); err != nil {
			return err
		}
		if after == math.MaxUint64 {
			return nil
		}
		dir := s.p.dir(kindAudit)
		stop := errorString("stop")
		_, err = s.rangeAll(ctx, s.p.audit(after+1), rangeEnd(dir), rev, false, func(kv *mvccpb.KeyValue) error {
			if !fn(s.decodeAudit(kv)) {
				return stop
			}
			return nil
		})
		if err == stop {
			return nil
		}
		return err
	})
	return head, err
}

type errorString string

func (e errorString) Error() string { return string(e) }
