package bbolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// Fill factors of the serial buckets. Their keys start with not_after, so
// new records land at the end of serial_records (and at the end of each
// SPIFFE ID's range of serial_ids): pages that are only appended to are
// split nearly full. serial_ids takes inserts at one point per ID, so it
// keeps a little room.
const (
	fillRecords = 0.95
	fillIDs     = 0.9
)

// serialWrite is one queued RecordSerial or BindSerial, encoded by its
// caller so that the committer only copies bytes; or a barrier, which
// carries no record and completes once everything queued before it is
// committed.
type serialWrite struct {
	keys serialKeys

	state atomic.Int32 // writePending, writeTaken or writeCancelled
	err   error        // outcome of this record, set by the committer
	done  chan error   // capacity 1, receives the outcome; nil for BindSerial
}

// States of a serialWrite.
const (
	writePending   int32 = iota // queued
	writeTaken                  // in the committer's transaction
	writeCancelled              // its caller gave up first; skipped
)

func (w *serialWrite) barrier() bool { return w.keys.key == nil }

// RecordSerial stores the record of an issued certificate. It returns once
// the record is on disk.
//
// Concurrent calls are committed together: one transaction and one sync for
// all the records queued while the previous transaction was syncing. A lone
// call is committed at once, with no timer.
//
// If ctx is done first, RecordSerial returns ctx.Err(); the record is then
// skipped if its transaction had not started, and written otherwise
// (harmless: it is pruned after NotAfter like any other). A record with
// the serial and NotAfter of one already stored gives storage.ErrExists.
func (s *Store) RecordSerial(ctx context.Context, r storage.Serial) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("storage/bbolt: %w", err)
	}
	w := &serialWrite{keys: newSerialKeys(r), done: make(chan error, 1)}
	if err := s.enqueue(w); err != nil {
		return err
	}
	return s.await(ctx, w)
}

// BindSerial records, like RecordSerial, the certificate a serial went
// into, but returns as soon as the record is queued: it is committed with
// the next batch. Until then SerialsFor, RevokeID and RevokeSerial see it
// (they wait for the queue), and a crash loses it; the serial must
// therefore come from a reservation (ReserveSerials), which RevokeUnbound
// revokes after the crash. A record that cannot be written stays queued and
// is tried again with the next batch; one that duplicates a stored record
// is dropped.
func (s *Store) BindSerial(ctx context.Context, r storage.Serial) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("storage/bbolt: %w", err)
	}
	return s.enqueue(&serialWrite{keys: newSerialKeys(r)})
}

// flush waits until every record queued before it was called is on disk.
func (s *Store) flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &serialWrite{done: make(chan error, 1)}
	if err := s.enqueue(w); err != nil {
		return err
	}
	return s.await(ctx, w)
}

func (s *Store) enqueue(w *serialWrite) error {
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
	return nil
}

func (s *Store) await(ctx context.Context, w *serialWrite) error {
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
			ok := true
			if len(batch) > 0 {
				ok = s.commitSerials(batch, closing)
				clear(batch)
			}
			spare = batch[:0]
			if len(batch) == 0 && closing {
				return
			}
			if len(batch) == 0 || !ok {
				// After a failure, wait for the next caller rather than
				// retrying at once against a failing disk.
				break
			}
		}
	}
}

// commitSerials writes batch in one transaction and tells each waiting
// caller the outcome. A record that duplicates a stored one fails alone;
// any other error fails the whole batch: nothing of it is written, and the
// records of BindSerial are queued again (unless closing), so that a
// binding is never dropped while the process runs. It reports whether the
// transaction committed.
func (s *Store) commitSerials(batch []*serialWrite, closing bool) bool {
	live := 0
	for _, w := range batch {
		if w.state.CompareAndSwap(writePending, writeTaken) {
			live++
		}
	}
	if live == 0 {
		return true
	}
	s.resMu.Lock()
	defer s.resMu.Unlock()
	var bound map[*reservation]int // serials of each reservation bound by this batch
	var counted map[string]struct{}
	s.writeTxs.Add(1)
	err := protect(s.path, func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			clear(bound)
			clear(counted)
			recs, ids, err := serialBuckets(tx)
			if err != nil {
				return err
			}
			for _, w := range batch {
				if w.state.Load() != writeTaken || w.barrier() {
					continue
				}
				w.err = nil
				if w.done != nil { // RecordSerial: report a duplicate
					dup, err := hasSerial(recs, w.keys)
					if err != nil {
						return err
					}
					if dup {
						w.err = fmt.Errorf("storage/bbolt: serial %s: %w", w.keys.serial, storage.ErrExists)
						continue
					}
				}
				seq, err := recs.NextSequence()
				if err != nil {
					return err
				}
				w.keys.setSeq(seq)
				if err := recs.Put(w.keys.key, w.keys.val); err != nil {
					return fmt.Errorf("storage/bbolt: recording serial %s: %w", w.keys.serial, err)
				}
				if err := ids.Put(w.keys.idKey, nil); err != nil {
					return fmt.Errorf("storage/bbolt: indexing serial %s: %w", w.keys.serial, err)
				}
				if r := s.unbound[string(w.keys.serial)]; r != nil {
					if bound == nil {
						bound, counted = make(map[*reservation]int), make(map[string]struct{})
					}
					if _, twice := counted[string(w.keys.serial)]; !twice {
						counted[string(w.keys.serial)] = struct{}{}
						bound[r]++
					}
				}
			}
			// A reservation whose serials are all bound is no longer
			// needed: its bindings are committed with this transaction.
			return deleteUsedReservations(tx, bound)
		})
	})
	if err != nil {
		err = s.txError(err)
		s.log.Error("recording serials failed", slog.Int(attrCount, live), slog.Any(attrError, err))
	} else if len(bound) > 0 {
		for _, w := range batch {
			if w.state.Load() == writeTaken && !w.barrier() && w.err == nil {
				delete(s.unbound, string(w.keys.serial))
			}
		}
		for r, n := range bound {
			r.left -= n
		}
	}
	var retry []*serialWrite
	for _, w := range batch {
		if w.state.Load() != writeTaken {
			continue
		}
		switch {
		case w.done != nil && err != nil:
			w.done <- err
		case w.done != nil:
			w.done <- w.err
		case err != nil && !closing:
			w.state.Store(writePending)
			retry = append(retry, w)
		case err != nil:
			s.log.Error("serial binding lost at close; its reservation revokes it at the next start", slog.String("serial", string(w.keys.serial)))
		}
	}
	if len(retry) > 0 {
		s.mu.Lock()
		s.pending = append(retry, s.pending...)
		s.mu.Unlock()
	}
	return err == nil
}

// hasSerial reports whether a record with the serial of k is stored under
// the same expiry second: RecordSerial's duplicate check. It scans the
// records of that second.
func hasSerial(recs *bolt.Bucket, k serialKeys) (bool, error) {
	prefix := k.key[:serialSecondLen]
	c := recs.Cursor()
	for key, val := c.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, val = c.Next() {
		f, err := parseSerial(key, val)
		if err != nil {
			return false, err
		}
		if bytes.Equal(f.serial, k.serial) {
			return true, nil
		}
	}
	return false, nil
}

// deleteUsedReservations deletes the reservations of which n more serials
// are bound or released, if that is all that was left of them.
func deleteUsedReservations(tx *bolt.Tx, n map[*reservation]int) error {
	if len(n) == 0 {
		return nil
	}
	b, err := bucket(tx, bucketSerialReservations)
	if err != nil {
		return err
	}
	for r, k := range n {
		if r.left-k <= 0 {
			if err := b.Delete(r.key); err != nil {
				return err
			}
		}
	}
	return nil
}

func serialBuckets(tx *bolt.Tx) (recs, ids *bolt.Bucket, err error) {
	recs, ids = tx.Bucket(bucketSerialRecords), tx.Bucket(bucketSerialIDs)
	if recs == nil || ids == nil {
		return nil, nil, fmt.Errorf("storage/bbolt: %w: a serials bucket is missing", storage.ErrCorrupt)
	}
	recs.FillPercent, ids.FillPercent = fillRecords, fillIDs
	return recs, ids, nil
}

// SerialsFor returns the records of the certificates issued to spiffeID
// that are still valid at now (NotAfter after now), ordered by serial. It
// first waits for the records queued by BindSerial to be written.
func (s *Store) SerialsFor(ctx context.Context, spiffeID string, now time.Time) ([]storage.Serial, error) {
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	prefix := append([]byte(spiffeID), 0)
	var out []storage.Serial
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = []storage.Serial{}
		recs, ids, err := serialBuckets(tx)
		if err != nil {
			return err
		}
		// Records of the second of now or later: those expiring within
		// that second are filtered out below.
		c := ids.Cursor()
		for k, _ := c.Seek(appendSecond(prefix, now.Unix())); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			key := k[len(prefix):]
			if len(key) != serialKeyLen {
				return corrupt(bucketSerialIDs, k, "key does not end with a %d-byte record key", serialKeyLen)
			}
			val := recs.Get(key)
			if val == nil {
				return corrupt(bucketSerialIDs, k, "no record in %s", bucketSerialRecords)
			}
			r, err := decodeSerial(key, val)
			if err != nil {
				return err
			}
			if r.SPIFFEID != spiffeID {
				return corrupt(bucketSerialRecords, key, "record has spiffe_id %q, index has %q", r.SPIFFEID, spiffeID)
			}
			if r.NotAfter.After(now) {
				out = append(out, r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b storage.Serial) int { return strings.Compare(a.Serial, b.Serial) })
	return out, nil
}

// lookupSerial finds the record of a serial. There is no index by serial
// (it would take random writes on every insert): the keys of
// serial_records are scanned, which only RevokeSerial does. The caller
// flushes the queue first.
func lookupSerial(tx *bolt.Tx, serial string) (storage.Serial, error) {
	recs, _, err := serialBuckets(tx)
	if err != nil {
		return storage.Serial{}, err
	}
	want := []byte(serial)
	c := recs.Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		f, err := parseSerial(k, v)
		if err != nil {
			return storage.Serial{}, err
		}
		if bytes.Equal(f.serial, want) {
			// The latest expiry wins, should one serial be recorded twice.
			return decodeSerial(k, v)
		}
	}
	return storage.Serial{}, fmt.Errorf("storage/bbolt: serial %s: %w", serial, storage.ErrNotFound)
}

// pruneBatch is how many records one PruneSerials transaction deletes, so
// that pruning never holds the write lock for long.
var pruneBatch = 1000

// PruneSerials deletes the records of certificates that expired before
// expiredBefore (NotAfter < expiredBefore), and the reservations that
// expired then, and returns how many serial records it deleted. The
// expired records are the first keys of serial_records, so each
// transaction frees whole pages at the front of the tree. It works in
// transactions of at most a thousand records, checking ctx between them;
// on error it returns the count deleted so far.
func (s *Store) PruneSerials(ctx context.Context, expiredBefore time.Time) (int, error) {
	beforeTime := appendTime(nil, expiredBefore)
	total := 0
	for {
		n, more := 0, false
		err := s.update(ctx, func(tx *bolt.Tx) error {
			n, more = 0, false
			recs, ids, err := serialBuckets(tx)
			if err != nil {
				return err
			}
			// Collect first, then delete: deleting under a bbolt cursor
			// skips keys. Every record of second s expires after s-1, so
			// the scan stops at the first second s with s-1 >= the cut
			// (rounded up).
			var victims, idKeys [][]byte
			c := recs.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) == serialKeyLen && keySecond(k)-1 >= expirySecond(expiredBefore) {
					break
				}
				f, err := parseSerial(k, v)
				if err != nil {
					return err
				}
				if bytes.Compare(f.notAfter, beforeTime) >= 0 {
					continue // expires within the cut's second, but not before it
				}
				if len(victims) == pruneBatch {
					more = true
					break
				}
				victims = append(victims, bytes.Clone(k))
				idKeys = append(idKeys, append(append(append(make([]byte, 0, len(f.spiffeID)+1+len(k)), f.spiffeID...), 0), k...))
			}
			for i, k := range victims {
				if err := recs.Delete(k); err != nil {
					return err
				}
				if err := ids.Delete(idKeys[i]); err != nil {
					return err
				}
			}
			n = len(victims)
			if more {
				return nil
			}
			return pruneReservations(tx, beforeTime)
		})
		if err != nil {
			return total, fmt.Errorf("storage/bbolt: pruning serials: %w", err)
		}
		total += n
		if !more {
			break
		}
	}
	// Forget the serials of this run's reservations that were pruned.
	s.resMu.Lock()
	for sr, r := range s.unbound {
		if bytes.Compare(r.key[:timeKeyLen], beforeTime) < 0 {
			delete(s.unbound, sr)
		}
	}
	s.resMu.Unlock()
	if total > 0 {
		s.log.Info("pruned expired serials", slog.Int(attrCount, total), slog.Time("before", expiredBefore))
	}
	return total, nil
}

// pruneReservations deletes the reservations whose not_after is before
// beforeKey: no certificate with one of their serials is valid any more.
func pruneReservations(tx *bolt.Tx, beforeKey []byte) error {
	b, err := bucket(tx, bucketSerialReservations)
	if err != nil {
		return err
	}
	var victims [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k, beforeKey) < 0; k, _ = c.Next() {
		if len(k) != reservationKeyLen {
			return corrupt(bucketSerialReservations, k, "key is %d bytes, want %d", len(k), reservationKeyLen)
		}
		if bytes.Compare(k[:timeKeyLen], beforeKey) >= 0 {
			break
		}
		victims = append(victims, bytes.Clone(k))
	}
	for _, k := range victims {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ReserveSerials records a block of serials before they are used, and
// returns once it is on disk. See storage.Reservation.
func (s *Store) ReserveSerials(ctx context.Context, r storage.Reservation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("storage/bbolt: %w", err)
	}
	if s.closed.Load() {
		return fmt.Errorf("storage/bbolt: %s: %w", s.path, storage.ErrClosed)
	}
	var key []byte
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketSerialReservations)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		key = binary.BigEndian.AppendUint64(appendTime(make([]byte, 0, reservationKeyLen), r.NotAfter), seq)
		return b.Put(key, encodeReservation(r.Serials))
	})
	if err != nil {
		return err
	}
	res := &reservation{key: key}
	s.resMu.Lock()
	for _, sr := range r.Serials {
		if _, dup := s.unbound[sr]; !dup {
			s.unbound[sr] = res
			res.left++
		}
	}
	s.resMu.Unlock()
	return nil
}

// ReleaseSerials removes serials that were reserved through this Store and
// will not be used (at a clean shutdown, or when a block grows too old to
// use) from their reservations, so that the next start does not revoke
// them. Other serials are ignored.
func (s *Store) ReleaseSerials(ctx context.Context, serials []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return fmt.Errorf("storage/bbolt: %s: %w", s.path, storage.ErrClosed)
	}
	s.resMu.Lock()
	defer s.resMu.Unlock()
	released := map[*reservation]map[string]struct{}{}
	n := map[*reservation]int{}
	for _, sr := range serials {
		r := s.unbound[sr]
		if r == nil {
			continue
		}
		if released[r] == nil {
			released[r] = map[string]struct{}{}
		}
		if _, twice := released[r][sr]; !twice {
			released[r][sr] = struct{}{}
			n[r]++
		}
	}
	if len(n) == 0 {
		return nil
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketSerialReservations)
		if err != nil {
			return err
		}
		for r, k := range n {
			if r.left-k <= 0 {
				continue // deleted below
			}
			val := b.Get(r.key)
			if val == nil {
				continue
			}
			_, kept, err := decodeReservation(r.key, val)
			if err != nil {
				return err
			}
			kept = slices.DeleteFunc(kept, func(sr string) bool { _, ok := released[r][sr]; return ok })
			if err := b.Put(r.key, encodeReservation(kept)); err != nil {
				return err
			}
		}
		return deleteUsedReservations(tx, n)
	})
	if err != nil {
		return err
	}
	for r, set := range released {
		for sr := range set {
			delete(s.unbound, sr)
		}
		r.left -= n[r]
	}
	return nil
}

// RevokeUnbound revokes, at start-up, the serials reserved by an earlier
// run that were never bound to a certificate (no serial record holds
// them) and whose reservation has not expired at now: the earlier run may
// have handed out a certificate with one of them and crashed before its
// binding reached the disk. Each is revoked until its reservation's
// NotAfter, with the given reason and no SPIFFE ID (it is not known), in
// one transaction that also deletes the earlier runs' reservations. The
// reservations made since this Store was opened are left alone. It returns
// the certificates it revoked, ordered by serial.
func (s *Store) RevokeUnbound(ctx context.Context, now time.Time, reason string) ([]storage.RevokedSerial, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, fmt.Errorf("storage/bbolt: %s: %w", s.path, storage.ErrClosed)
	}
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	nowKey := appendTime(nil, now)
	var out []storage.RevokedSerial
	err := s.update(ctx, func(tx *bolt.Tx) error {
		out = nil
		b, err := bucket(tx, bucketSerialReservations)
		if err != nil {
			return err
		}
		unbound := map[string]time.Time{}
		var all [][]byte
		err = b.ForEach(func(k, v []byte) error {
			notAfter, serials, err := decodeReservation(k, v)
			if err != nil {
				return err
			}
			if binary.BigEndian.Uint64(k[timeKeyLen:]) >= s.ownReservations {
				return nil // reserved by this run
			}
			all = append(all, bytes.Clone(k))
			if bytes.Compare(k[:timeKeyLen], nowKey) <= 0 {
				return nil // every certificate of it has expired
			}
			for _, sr := range serials {
				if notAfter.After(unbound[sr]) {
					unbound[sr] = notAfter
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(unbound) > 0 {
			recs, _, err := serialBuckets(tx)
			if err != nil {
				return err
			}
			c := recs.Cursor()
			for k, v := c.Seek(appendSecond(nil, now.Unix())); k != nil; k, v = c.Next() {
				f, err := parseSerial(k, v)
				if err != nil {
					return err
				}
				delete(unbound, string(f.serial))
			}
			revoked, err := bucket(tx, bucketRevokedSerials)
			if err != nil {
				return err
			}
			for sr, notAfter := range unbound {
				if revoked.Get([]byte(sr)) != nil {
					continue // revoked already
				}
				out = append(out, storage.RevokedSerial{Serial: sr, NotAfter: notAfter, RevokedAt: now, Reason: reason})
			}
			slices.SortFunc(out, func(a, b storage.RevokedSerial) int { return strings.Compare(a.Serial, b.Serial) })
			if err := putRevokedSerials(tx, out); err != nil {
				return err
			}
		}
		for _, k := range all {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) > 0 {
		s.log.Warn("revoked serials reserved before an unclean shutdown and never bound", slog.Int(attrCount, len(out)))
	}
	return out, nil
}
