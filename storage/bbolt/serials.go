package bbolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// serialWrite is one queued RecordSerial, encoded by its caller so that the
// committer only copies bytes.
type serialWrite struct {
	serial string
	keys   serialKeys

	state atomic.Int32 // writePending, writeTaken or writeCancelled
	err   error        // outcome of this record, set by the committer
	done  chan error   // capacity 1; receives the outcome
}

// States of a serialWrite.
const (
	writePending   int32 = iota // queued
	writeTaken                  // in the committer's transaction
	writeCancelled              // its caller gave up first; skipped
)

// RecordSerial stores the record of an issued certificate. It returns once
// the record is on disk: the certificate may then be handed out.
//
// Concurrent calls are committed together: one transaction and one sync for
// all the records queued while the previous transaction was syncing. A lone
// call is committed at once, with no timer. The transaction only appends to
// serials_log; once that holds 1024 records, the committer folds them into
// the indexed buckets, after answering the callers of the batch that filled
// it (see the package documentation).
//
// If ctx is done first, RecordSerial returns ctx.Err(); the record is then
// skipped if its transaction had not started, and written otherwise
// (harmless: it is pruned after NotAfter like any other). A serial that is
// already stored gives storage.ErrExists.
func (s *Store) RecordSerial(ctx context.Context, r storage.Serial) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("storage/bbolt: %w", err)
	}
	record, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("storage/bbolt: encoding serial %s: %w", r.Serial, err)
	}
	w := &serialWrite{serial: r.Serial, keys: newSerialKeys(r, record), done: make(chan error, 1)}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return fmt.Errorf("storage/bbolt: %s: %w", s.path, storage.ErrClosed)
	}
	s.pending = append(s.pending, w)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // the committer is already awake and will see w
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		w.state.CompareAndSwap(writePending, writeCancelled)
		return ctx.Err()
	}
}

// commitLoop is the one goroutine that writes queued serial records. Each
// round takes everything queued so far, so the batch size follows the
// number of concurrent callers with no timer. It exits after Close, once
// the queue is empty.
func (s *Store) commitLoop() {
	defer close(s.committerDone)
	var spare []*serialWrite
	for range s.wake {
		for {
			// Swap the queue with the spare slice, so that callers append
			// to one array while the committer reads the other.
			s.mu.Lock()
			batch, closing := s.pending, s.closing
			s.pending, spare = spare, nil
			s.mu.Unlock()
			if len(batch) > 0 {
				s.commitSerials(batch)
				clear(batch)
			}
			spare = batch[:0]
			if len(batch) == 0 {
				if closing {
					return
				}
				break
			}
		}
	}
}

// foldThreshold is how many records serials_log holds before the committer
// folds them into the indexed buckets. Larger amortises the random page
// writes of the indexes better; smaller bounds the pause of one fold and
// the scan SerialsFor makes of the log.
var foldThreshold = 1024

// commitSerials appends batch to serials_log in one transaction and tells
// each caller the outcome. A record whose serial is already stored fails
// alone; any other error fails the whole batch, and nothing of it is
// written. Once the log is long enough it is folded into the indexes.
func (s *Store) commitSerials(batch []*serialWrite) {
	live := 0
	for _, w := range batch {
		if w.state.CompareAndSwap(writePending, writeTaken) {
			live++
		}
	}
	if live == 0 {
		return
	}
	s.logMu.Lock()
	defer s.logMu.Unlock()
	added := make([]loggedSerial, 0, live)
	inBatch := make(map[string]struct{}, live)
	s.writeTxs.Add(1)
	err := protect(s.path, func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			added = added[:0]
			clear(inBatch)
			log, err := bucket(tx, bucketSerialsLog)
			if err != nil {
				return err
			}
			serials, err := bucket(tx, bucketSerials)
			if err != nil {
				return err
			}
			for _, w := range batch {
				if w.state.Load() != writeTaken {
					continue
				}
				w.err = nil
				_, logged := s.logged[w.serial]
				_, twice := inBatch[w.serial]
				if logged || twice || serials.Get(w.keys.serial) != nil {
					w.err = fmt.Errorf("storage/bbolt: serial %s: %w", w.serial, storage.ErrExists)
					continue
				}
				seq, err := log.NextSequence()
				if err != nil {
					return err
				}
				key := logKey(seq)
				if err := log.Put(key, w.keys.record); err != nil {
					return fmt.Errorf("storage/bbolt: recording serial %s: %w", w.serial, err)
				}
				added = append(added, loggedSerial{key, w.keys})
				inBatch[w.serial] = struct{}{}
			}
			return nil
		})
	})
	if err != nil {
		err = s.txError(err)
		s.log.Error("recording serials failed", slog.Int(attrCount, live), slog.Any(attrError, err))
	} else {
		for _, l := range added {
			s.logged[string(l.serial)] = struct{}{}
		}
		s.logQueue = append(s.logQueue, added...)
	}
	for _, w := range batch {
		if w.state.Load() != writeTaken {
			continue
		}
		if err != nil {
			w.done <- err
		} else {
			w.done <- w.err
		}
	}
	if len(s.logQueue) >= s.foldAt {
		if _, err := s.foldLocked(len(s.logQueue)); err != nil {
			// The records are safe in the log; try again once it has
			// grown by another threshold.
			s.foldAt = len(s.logQueue) + foldThreshold
			s.log.Error("folding serials log failed", slog.Any(attrError, err))
		} else {
			s.foldAt = foldThreshold
		}
	}
}

// foldLocked moves up to limit records, oldest first, from serials_log into
// the indexed buckets in one transaction, and returns how many it moved.
// The caller holds logMu.
func (s *Store) foldLocked(limit int) (int, error) {
	fold := s.logQueue[:min(limit, len(s.logQueue))]
	if len(fold) == 0 {
		return 0, nil
	}
	s.writeTxs.Add(1)
	err := protect(s.path, func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			log, err := bucket(tx, bucketSerialsLog)
			if err != nil {
				return err
			}
			t, err := serialBuckets(tx)
			if err != nil {
				return err
			}
			recs := make([]serialKeys, 0, len(fold))
			for _, l := range fold {
				if t.serials.Get(l.serial) == nil { // else recorded twice; keep the first
					recs = append(recs, l.serialKeys)
				}
			}
			if err := t.putAll(recs); err != nil {
				return err
			}
			for _, l := range fold {
				if err := log.Delete(l.logKey); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, s.txError(err)
	}
	for _, l := range fold {
		delete(s.logged, string(l.serial))
	}
	s.logQueue = append(s.logQueue[:0:0], s.logQueue[len(fold):]...)
	return len(fold), nil
}

// checkLogFoldedLocked reports a record left in serials_log once the log has
// been folded: one that could not be decoded when the store was opened. The
// caller holds logMu.
func (s *Store) checkLogFoldedLocked() error {
	return s.view(context.Background(), func(tx *bolt.Tx) error {
		log, err := bucket(tx, bucketSerialsLog)
		if err != nil {
			return err
		}
		k, v := log.Cursor().First()
		if k == nil || len(s.logQueue) > 0 {
			return nil
		}
		if _, err := decodeLogRecord(k, v); err != nil {
			return err
		}
		return corrupt(bucketSerialsLog, k, "record was not loaded when the database was opened")
	})
}

// serialTables are the three indexed buckets of serial records.
type serialTables struct {
	serials, byID, byExpiry *bolt.Bucket
}

func serialBuckets(tx *bolt.Tx) (serialTables, error) {
	t := serialTables{
		serials:  tx.Bucket(bucketSerials),
		byID:     tx.Bucket(bucketSerialsByID),
		byExpiry: tx.Bucket(bucketSerialsByExpiry),
	}
	if t.serials == nil || t.byID == nil || t.byExpiry == nil {
		return t, fmt.Errorf("storage/bbolt: %w: a serials bucket is missing", storage.ErrCorrupt)
	}
	return t, nil
}

// putAll writes the records and their index entries, each bucket in key
// order: consecutive keys land in the same pages, which bbolt then has in
// memory.
func (t serialTables) putAll(recs []serialKeys) error {
	for _, b := range []struct {
		bucket   *bolt.Bucket
		key, val func(serialKeys) []byte
	}{
		{t.serials, func(k serialKeys) []byte { return k.serial }, func(k serialKeys) []byte { return k.record }},
		{t.byID, func(k serialKeys) []byte { return k.byID }, serialKeys.notAfter},
		{t.byExpiry, func(k serialKeys) []byte { return k.expiry }, func(k serialKeys) []byte { return k.spiffeID }},
	} {
		slices.SortFunc(recs, func(x, y serialKeys) int { return bytes.Compare(b.key(x), b.key(y)) })
		for _, r := range recs {
			if err := b.bucket.Put(b.key(r), b.val(r)); err != nil {
				return fmt.Errorf("storage/bbolt: indexing serial %s: %w", r.serial, err)
			}
		}
	}
	return nil
}

// SerialsFor returns the records of the certificates issued to spiffeID
// that are still valid at now (NotAfter after now), ordered by serial.
func (s *Store) SerialsFor(ctx context.Context, spiffeID string, now time.Time) ([]storage.Serial, error) {
	prefix := byIDPrefix(spiffeID)
	nowKey := appendTime(nil, now)
	var out []storage.Serial
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = []storage.Serial{}
		t, err := serialBuckets(tx)
		if err != nil {
			return err
		}
		c := t.byID.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(v) != timeKeyLen {
				return corrupt(bucketSerialsByID, k, "value is %d bytes, want %d", len(v), timeKeyLen)
			}
			if !unexpired(v, nowKey) {
				continue
			}
			serial := k[len(prefix):]
			val := t.serials.Get(serial)
			if val == nil {
				return corrupt(bucketSerialsByID, k, "no record in %s", bucketSerials)
			}
			r, err := decodeSerial(serial, val)
			if err != nil {
				return err
			}
			if r.SPIFFEID != spiffeID {
				return corrupt(bucketSerials, serial, "record has spiffe_id %q, index has %q", r.SPIFFEID, spiffeID)
			}
			out = append(out, r)
		}
		// Records not folded yet.
		log, err := bucket(tx, bucketSerialsLog)
		if err != nil {
			return err
		}
		return log.ForEach(func(k, v []byte) error {
			r, err := decodeLogRecord(k, v)
			if err != nil {
				return err
			}
			if r.SPIFFEID == spiffeID && r.NotAfter.After(now) {
				out = append(out, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b storage.Serial) int { return strings.Compare(a.Serial, b.Serial) })
	return out, nil
}

// pruneBatch is how many records one PruneSerials transaction deletes, so
// that pruning never holds the write lock for long.
var pruneBatch = 1000

// PruneSerials deletes the records of certificates that expired before
// expiredBefore (NotAfter < expiredBefore) and returns how many it deleted.
// It works in transactions of at most a thousand records, checking ctx
// between them; on error it returns the count deleted so far.
func (s *Store) PruneSerials(ctx context.Context, expiredBefore time.Time) (int, error) {
	// Fold the log first, so that its records are pruned too.
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if s.closed.Load() {
			return 0, fmt.Errorf("storage/bbolt: %s: %w", s.path, storage.ErrClosed)
		}
		s.logMu.Lock()
		n, err := s.foldLocked(pruneBatch)
		if err == nil && n < pruneBatch {
			err = s.checkLogFoldedLocked()
		}
		s.logMu.Unlock()
		if err != nil {
			return 0, fmt.Errorf("storage/bbolt: pruning serials: %w", err)
		}
		if n < pruneBatch {
			break
		}
	}
	beforeKey := appendTime(nil, expiredBefore)
	total := 0
	for {
		n := 0
		err := s.update(ctx, func(tx *bolt.Tx) error {
			n = 0
			t, err := serialBuckets(tx)
			if err != nil {
				return err
			}
			// Collect first, then delete: deleting under a bbolt cursor
			// skips keys.
			var victims [][2][]byte // expiry key, spiffe id
			c := t.byExpiry.Cursor()
			for k, v := c.First(); k != nil && len(victims) < pruneBatch; k, v = c.Next() {
				when, _, ok := splitExpiryKey(k)
				if !ok {
					return corrupt(bucketSerialsByExpiry, k, "key is too short")
				}
				if bytes.Compare(when, beforeKey) >= 0 {
					break
				}
				victims = append(victims, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
			}
			for _, vic := range victims {
				key, spiffeID := vic[0], vic[1]
				_, serial, _ := splitExpiryKey(key)
				byID := append(append(append(make([]byte, 0, len(spiffeID)+1+len(serial)), spiffeID...), 0), serial...)
				if err := t.serials.Delete(serial); err != nil {
					return err
				}
				if err := t.byID.Delete(byID); err != nil {
					return err
				}
				if err := t.byExpiry.Delete(key); err != nil {
					return err
				}
			}
			n = len(victims)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("storage/bbolt: pruning serials: %w", err)
		}
		total += n
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		s.log.Info("pruned expired serials", slog.Int(attrCount, total), slog.Time("before", expiredBefore))
	}
	return total, nil
}
