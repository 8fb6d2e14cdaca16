package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/badge-dev/badge/storage"
)

// serialWrite is one queued RecordSerial or BindSerial, or a barrier
// (rec.Serial empty), which completes once everything queued before it
// is committed.
type serialWrite struct {
	rec storage.Serial
	val string // rec as JSON

	state atomic.Int32 // writePending, writeTaken or writeCancelled
	err   error        // outcome of this record, set by the committer
	done  chan error   // capacity 1; nil for BindSerial
}

// States of a serialWrite.
const (
	writePending   int32 = iota // queued
	writeTaken                  // in the committer's hands
	writeCancelled              // its caller gave up first; skipped
)

func (w *serialWrite) barrier() bool { return w.rec.Serial == "" }

// retryDelay is how long the committer waits before writing again the
// bindings of a batch that failed (etcd unreachable), when no new call
// wakes it first.
const retryDelay = time.Second

// reservation is one reservation made through this Store.
type reservation struct {
	key      string
	notAfter time.Time
	serials  []string // as stored
	left     int      // serials neither bound nor released
}

// reservationRecord is the stored value of a reservation.
type reservationRecord struct {
	NotAfter time.Time `json:"not_after"`
	Serials  []string  `json:"serials"`
}

// RecordSerial stores the record of an issued certificate and returns
// once etcd has committed it. Concurrent calls are committed together,
// in transactions of up to MaxTxnOps/2 records. A record with the serial
// and NotAfter of one already stored gives storage.ErrExists.
func (s *Store) RecordSerial(ctx context.Context, r storage.Serial) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	w, err := newWrite(r)
	if err != nil {
		return err
	}
	w.done = make(chan error, 1)
	if err := s.enqueue(w); err != nil {
		return err
	}
	return s.await(ctx, w)
}

// BindSerial queues the record of a certificate whose serial came from a
// reservation, and returns at once; it is committed with the next batch
// (and again after a failure, until Close). SerialsFor, RevokeID and
// RevokeSerial wait for the queue. While etcd cannot be written (the last
// batch failed, and no write or read has succeeded since) it refuses with
// storage.ErrUnavailable: a server cut off from etcd stops issuing rather
// than hand out certificates that a revocation made on another server
// cannot find.
func (s *Store) BindSerial(ctx context.Context, r storage.Serial) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if s.failing.Load() {
		return fmt.Errorf("storage/etcd: %s: %w: the last serial records could not be written; "+
			"no certificate is issued until they are", s.endpoints, storage.ErrUnavailable)
	}
	w, err := newWrite(r)
	if err != nil {
		return err
	}
	return s.enqueue(w)
}

func newWrite(r storage.Serial) (*serialWrite, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("storage/etcd: %w", err)
	}
	val, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("storage/etcd: encoding serial %s: %w", r.Serial, err)
	}
	return &serialWrite{rec: r, val: string(val)}, nil
}

// flush waits until every record queued before it was called is
// committed.
func (s *Store) flush(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
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
		return s.closedErr()
	}
	s.pending = append(s.pending, w)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
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

// commitLoop is the one goroutine that writes queued serial records; each
// round takes everything queued so far. It exits after Close, once the
// queue is empty (or, if etcd cannot be reached, after one last try).
func (s *Store) commitLoop() {
	defer close(s.committerDone)
	var retry <-chan time.Time
	for {
		select {
		case <-s.wake:
		case <-retry:
		}
		retry = nil
		for {
			s.mu.Lock()
			batch, closing := s.pending, s.closing
			s.pending = nil
			s.mu.Unlock()
			ok := true
			if len(batch) > 0 {
				ok = s.commitSerials(batch, closing)
			}
			if ok && s.failing.Load() && !closing {
				// Nothing was written that proves etcd is back: ask.
				if ok = s.probe(); ok {
					s.failing.Store(false)
				}
			}
			if len(batch) == 0 && closing {
				return
			}
			if !ok && !closing {
				retry = time.After(retryDelay)
				break
			}
			if len(batch) == 0 {
				break
			}
		}
	}
}

// probe reports whether etcd answers a read, to end a failure when no
// record is queued to try.
func (s *Store) probe() bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	_, err := s.cli.Get(ctx, s.p.meta("schema"))
	return err == nil
}

// commitSerials writes batch in transactions of up to maxOps/2 records
// (each record is two keys), run concurrently, and tells each waiting
// caller the outcome. A record of RecordSerial that duplicates a stored
// one fails alone. When a transaction fails, the records of BindSerial in
// it are queued again (unless closing). It reports whether every
// transaction committed.
func (s *Store) commitSerials(batch []*serialWrite, closing bool) bool {
	var recs []*serialWrite
	for _, w := range batch {
		if w.state.CompareAndSwap(writePending, writeTaken) && !w.barrier() {
			recs = append(recs, w)
		}
	}
	per := (s.maxOps - 1) / 2 // two keys a record, and the read of the revoked IDs
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var failed error
	var failedWrites []*serialWrite
	for chunk := range slices.Chunk(recs, per) {
		wg.Go(func() {
			err := s.commitChunk(chunk)
			if err != nil {
				errMu.Lock()
				failed = err
				failedWrites = append(failedWrites, chunk...)
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(recs) > 0 {
		// Before any caller hears of the outcome: one told of a failure
		// then finds BindSerial refusing.
		s.failing.Store(failed != nil)
	}
	if failed != nil {
		s.log.Error("recording serials failed", slog.Int("count", len(failedWrites)), slog.Any("error", failed))
	}
	isFailed := make(map[*serialWrite]bool, len(failedWrites))
	for _, w := range failedWrites {
		isFailed[w] = true
	}
	s.bound(recs, isFailed)
	var retry []*serialWrite
	for _, w := range batch {
		if w.state.Load() != writeTaken {
			continue
		}
		switch {
		case w.barrier():
			w.done <- failed
		case w.done != nil && isFailed[w]:
			w.done <- failed
		case w.done != nil:
			w.done <- w.err
		case isFailed[w] && !closing:
			w.state.Store(writePending)
			retry = append(retry, w)
		case isFailed[w]:
			s.log.Error("serial binding lost at close; its reservation revokes it at the next start", slog.String("serial", w.rec.Serial))
		}
	}
	if len(retry) > 0 {
		s.mu.Lock()
		s.pending = append(retry, s.pending...)
		s.mu.Unlock()
	}
	return failed == nil
}

// commitChunk writes the records of chunk in one transaction. The records
// of RecordSerial must not exist yet: if one does, it gets ErrExists and
// the others are written in another transaction. They carry the write ID
// of the chunk, so that an attempt run again after one whose answer was
// lost knows the records that one wrote as its own.
func (s *Store) commitChunk(chunk []*serialWrite) error {
	wid := newWriteID()
	own := map[*serialWrite]bool{} // written by an earlier attempt
	var revoked []*mvccpb.KeyValue
	err := s.call(context.Background(), false, "recording serials", func(ctx context.Context) error {
		for {
			var ops, elseOps []clientv3.Op
			var cmps []clientv3.Cmp
			var checked []*serialWrite
			for _, w := range chunk {
				if w.err != nil || own[w] {
					continue
				}
				key, val := s.p.serial(w.rec.NotAfter, w.rec.Serial), w.val
				if w.done != nil {
					val = tag(val, wid)
					cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
					elseOps = append(elseOps, clientv3.OpGet(key))
					checked = append(checked, w)
				}
				ops = append(ops, clientv3.OpPut(key, val), clientv3.OpPut(s.indexKey(w.rec), val))
			}
			// Also when every record is written: their revoked IDs are
			// read after they were.
			rdir := s.p.dir(kindRevokedIDs)
			ops = append(ops, clientv3.OpGet(rdir, clientv3.WithRange(rangeEnd(rdir))))
			s.serialTxns.Add(1)
			resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
			if err != nil {
				return err
			}
			if resp.Succeeded {
				revoked = resp.Responses[len(ops)-1].GetResponseRange().Kvs
				return nil
			}
			for i, w := range checked {
				if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) > 0 {
					if taggedBy(kvs[0].Value, wid) {
						own[w] = true
					} else {
						w.err = fmt.Errorf("storage/etcd: serial %s: %w", w.rec.Serial, storage.ErrExists)
					}
				}
			}
		}
	})
	if err != nil {
		return err
	}
	return s.revokeLate(chunk, revoked)
}

// revokeLate revokes the certificates just recorded whose SPIFFE ID was
// revoked, as read in the same transaction, after they were issued: their
// records landed after the revocation read the ID's certificates (their
// server was cut off from etcd meanwhile, or slow), so the revocation
// could not find them.
func (s *Store) revokeLate(chunk []*serialWrite, revoked []*mvccpb.KeyValue) error {
	if len(revoked) == 0 {
		return nil
	}
	byID := make(map[string]storage.Revocation, len(revoked))
	for _, kv := range revoked {
		r, err := decodeRevocation(s.p, kv)
		if err != nil {
			return err
		}
		byID[r.SPIFFEID] = r
	}
	var keys, vals []string
	for _, w := range chunk {
		r, ok := byID[w.rec.SPIFFEID]
		if w.err != nil || !ok || !w.rec.IssuedAt.Before(r.RevokedAt) {
			continue
		}
		rs := storage.RevokedSerial{Serial: w.rec.Serial, SPIFFEID: w.rec.SPIFFEID, NotAfter: w.rec.NotAfter, RevokedAt: r.RevokedAt, Reason: r.Reason, AdminUID: r.AdminUID}
		val, err := json.Marshal(rs)
		if err != nil {
			return err
		}
		keys, vals = append(keys, s.p.revokedSerial(rs.Serial)), append(vals, string(val))
	}
	if len(keys) == 0 {
		return nil
	}
	wid := newWriteID()
	var written []bool
	err := s.call(context.Background(), false, "revoking serials recorded late", func(ctx context.Context) error {
		var err error
		written, err = s.putIfAbsent(ctx, keys, vals, wid)
		return err
	})
	n := 0
	for _, w := range written {
		if w {
			n++
		}
	}
	if n > 0 {
		s.log.Warn("revoked certificates recorded after the revocation of their SPIFFE ID", slog.Int("count", n))
	}
	return err
}

func (s *Store) indexKey(r storage.Serial) string {
	return s.p.serialIDs(r.SPIFFEID) + timeKey(r.NotAfter) + "/" + r.Serial
}

// bound counts the committed records against this run's reservations and
// deletes the reservations all of whose serials are now bound or
// released.
func (s *Store) bound(recs []*serialWrite, failed map[*serialWrite]bool) {
	s.resMu.Lock()
	var done []string
	for _, w := range recs {
		if failed[w] || w.err != nil {
			continue
		}
		if r := s.unbound[w.rec.Serial]; r != nil {
			delete(s.unbound, w.rec.Serial)
			if r.left--; r.left == 0 {
				done = append(done, r.key)
			}
		}
	}
	s.resMu.Unlock()
	s.deleteReservations(done)
}

// deleteReservations deletes reservations that are no longer needed. A
// failure is only logged: a reservation whose serials are all bound
// revokes nothing at the next start, and is pruned when it expires.
func (s *Store) deleteReservations(keys []string) {
	if len(keys) == 0 {
		return
	}
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpDelete(k)
	}
	if err := s.call(context.Background(), false, "deleting used reservations", func(ctx context.Context) error {
		return s.commitChunks(ctx, ops, make([]clientv3.Cmp, len(ops)))
	}); err != nil {
		s.log.Warn("deleting used reservations failed; they are pruned when they expire", slog.Any("error", err))
	}
}

// SerialsFor returns the records of the certificates issued to spiffeID
// that are still valid at now, ordered by serial, after writing the
// records queued by BindSerial.
func (s *Store) SerialsFor(ctx context.Context, spiffeID string, now time.Time) ([]storage.Serial, error) {
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	var out []storage.Serial
	err := s.do(ctx, func(ctx context.Context) error {
		var err error
		out, _, err = s.serialsFor(ctx, spiffeID, now, 0)
		return err
	})
	return out, err
}

// serialsFor reads the records of spiffeID valid at now, at revision rev
// (0: the latest), and returns them with the revision read.
func (s *Store) serialsFor(ctx context.Context, spiffeID string, now time.Time, rev int64) ([]storage.Serial, int64, error) {
	out := []storage.Serial{}
	dir := s.p.serialIDs(spiffeID)
	rev, err := s.rangeAll(ctx, dir+timeKey(now), rangeEnd(dir), rev, false, func(kv *mvccpb.KeyValue) error {
		var r storage.Serial
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return corrupt(kv.Key, "%v", err)
		}
		if r.SPIFFEID != spiffeID || string(kv.Key) != s.indexKey(r) {
			return corrupt(kv.Key, "record is of %s, serial %s", r.SPIFFEID, r.Serial)
		}
		if r.NotAfter.After(now) {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	slices.SortFunc(out, func(a, b storage.Serial) int { return strings.Compare(a.Serial, b.Serial) })
	return out, rev, nil
}

// pruneBatch is how many serial records one PruneSerials transaction
// deletes at most.
const pruneBatch = 1000

// PruneSerials deletes the records of certificates that expired before
// expiredBefore and the reservations that expired then, and returns how
// many serial records it deleted. The expired records are the front of
// the serials range, and each SPIFFE ID's expired index keys the front of
// its index range: a transaction deletes up to pruneBatch records with one
// range deletion, and the index of each of their IDs with one more.
func (s *Store) PruneSerials(ctx context.Context, expiredBefore time.Time) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	dir := s.p.dir(kindSerials)
	end := dir + timeKey(expiredBefore)
	cut := timeKey(expiredBefore)
	total := 0
	for {
		n := 0
		err := s.do(ctx, func(ctx context.Context) error {
			resp, err := s.cli.Get(ctx, dir, clientv3.WithRange(end), clientv3.WithLimit(pruneBatch))
			if err != nil {
				return err
			}
			ids := map[string]bool{}
			var last []byte
			for _, kv := range resp.Kvs {
				var r storage.Serial
				if err := json.Unmarshal(kv.Value, &r); err != nil {
					return corrupt(kv.Key, "%v", err)
				}
				if !ids[r.SPIFFEID] && len(ids) == s.maxOps-1 {
					break // one operation per ID, and one for the records
				}
				ids[r.SPIFFEID] = true
				last = kv.Key
				n++
			}
			if n == 0 {
				return nil
			}
			ops := []clientv3.Op{clientv3.OpDelete(dir, clientv3.WithRange(string(last)+"\x00"))}
			for id := range ids {
				idx := s.p.serialIDs(id)
				ops = append(ops, clientv3.OpDelete(idx, clientv3.WithRange(idx+cut)))
			}
			_, err = s.cli.Txn(ctx).Then(ops...).Commit()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("storage/etcd: pruning serials: %w", err)
		}
		total += n
		if n == 0 {
			break
		}
	}
	if err := s.pruneReservations(ctx, expiredBefore); err != nil {
		return total, err
	}
	if total > 0 {
		s.log.Info("pruned expired serials", slog.Int("count", total), slog.Time("before", expiredBefore))
	}
	return total, nil
}

// storedReservation is a reservation as read back, of any run.
type storedReservation struct {
	key, replica, run string
	reservationRecord
}

func (s *Store) listReservations(ctx context.Context, rev int64) ([]storedReservation, error) {
	var out []storedReservation
	dir := s.p.dir(kindReservations)
	_, err := s.rangeAll(ctx, dir, rangeEnd(dir), rev, false, func(kv *mvccpb.KeyValue) error {
		name, _ := cutKey(kv.Key, dir)
		parts := strings.Split(name, "/")
		if len(parts) != 3 {
			return corrupt(kv.Key, "key is not REPLICA/RUN/SEQ")
		}
		r := storedReservation{key: string(kv.Key), replica: parts[0], run: parts[1]}
		if err := json.Unmarshal(kv.Value, &r.reservationRecord); err != nil {
			return corrupt(kv.Key, "%v", err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// pruneReservations deletes the reservations, of any run, whose NotAfter
// is before the time: no certificate with one of their serials is valid.
func (s *Store) pruneReservations(ctx context.Context, before time.Time) error {
	err := s.do(ctx, func(ctx context.Context) error {
		all, err := s.listReservations(ctx, 0)
		if err != nil {
			return err
		}
		var ops []clientv3.Op
		for _, r := range all {
			if r.NotAfter.Before(before) {
				ops = append(ops, clientv3.OpDelete(r.key))
			}
		}
		return s.commitChunks(ctx, ops, make([]clientv3.Cmp, len(ops)))
	})
	if err != nil {
		return fmt.Errorf("storage/etcd: pruning reservations: %w", err)
	}
	s.resMu.Lock()
	for sr, r := range s.unbound {
		if r.notAfter.Before(before) {
			delete(s.unbound, sr)
		}
	}
	s.resMu.Unlock()
	return nil
}

// ReserveSerials records a block of serials before they are used, under
// this replica and run, and returns once etcd has committed it.
func (s *Store) ReserveSerials(ctx context.Context, r storage.Reservation) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("storage/etcd: %w", err)
	}
	val, err := json.Marshal(reservationRecord{NotAfter: r.NotAfter, Serials: r.Serials})
	if err != nil {
		return fmt.Errorf("storage/etcd: encoding reservation: %w", err)
	}
	key := fmt.Sprintf("%s%s/%s/%020d", s.p.dir(kindReservations), s.replica, s.run, s.resSeq.Add(1))
	if err := s.do(ctx, func(ctx context.Context) error {
		_, err := s.cli.Put(ctx, key, string(val))
		return err
	}); err != nil {
		return err
	}
	res := &reservation{key: key, notAfter: r.NotAfter, serials: slices.Clone(r.Serials)}
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

// ReleaseSerials removes serials reserved through this Store that will
// not be used from their reservations, so that no later start revokes
// them. Other serials are ignored.
func (s *Store) ReleaseSerials(ctx context.Context, serials []string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	s.resMu.Lock()
	defer s.resMu.Unlock()
	released := map[*reservation]map[string]bool{}
	for _, sr := range serials {
		r := s.unbound[sr]
		if r == nil {
			continue
		}
		if released[r] == nil {
			released[r] = map[string]bool{}
		}
		released[r][sr] = true
	}
	if len(released) == 0 {
		return nil
	}
	var ops []clientv3.Op
	for r, set := range released {
		if r.left-len(set) <= 0 {
			ops = append(ops, clientv3.OpDelete(r.key))
			continue
		}
		kept := slices.DeleteFunc(slices.Clone(r.serials), func(sr string) bool { return set[sr] })
		val, err := json.Marshal(reservationRecord{NotAfter: r.notAfter, Serials: kept})
		if err != nil {
			return fmt.Errorf("storage/etcd: encoding reservation: %w", err)
		}
		ops = append(ops, clientv3.OpPut(r.key, string(val)))
	}
	err := s.do(ctx, func(ctx context.Context) error {
		return s.commitChunks(ctx, ops, make([]clientv3.Cmp, len(ops)))
	})
	if err != nil {
		return err
	}
	for r, set := range released {
		for sr := range set {
			delete(s.unbound, sr)
		}
		r.left -= len(set)
		r.serials = slices.DeleteFunc(r.serials, func(sr string) bool { return set[sr] })
	}
	return nil
}

// RevokeUnbound revokes, at start-up, the serials of abandoned
// reservations that no serial record holds and whose reservation has not
// expired at now, each until its reservation's NotAfter; then it deletes
// those reservations. A reservation is abandoned when it was made by an
// earlier run of this replica, or by a replica whose run key has expired
// (that server died and did not come back). Reservations of this run and
// of the live runs of other replicas are left alone. It returns the
// certificates it revoked, ordered by serial. It is safe to run on
// several servers at once: a serial is revoked once.
func (s *Store) RevokeUnbound(ctx context.Context, now time.Time, reason string) ([]storage.RevokedSerial, error) {
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	out := map[string]storage.RevokedSerial{} // by serial: see RevokeID
	wid := newWriteID()
	err := s.do(ctx, func(ctx context.Context) error {
		runs := map[string]string{}
		dir := s.p.dir(kindRuns)
		rev, err := s.rangeAll(ctx, dir, rangeEnd(dir), 0, false, func(kv *mvccpb.KeyValue) error {
			name, _ := cutKey(kv.Key, dir)
			runs[name] = string(kv.Value)
			return nil
		})
		if err != nil {
			return err
		}
		all, err := s.listReservations(ctx, rev)
		if err != nil {
			return err
		}
		unbound := map[string]time.Time{}
		var abandoned []clientv3.Op
		for _, r := range all {
			switch {
			case r.replica == s.replica && r.run == s.run:
				continue // this run's
			case r.replica != s.replica && runs[r.replica] == r.run:
				continue // a live run of another server
			}
			abandoned = append(abandoned, clientv3.OpDelete(r.key))
			if !r.NotAfter.After(now) {
				continue // every certificate of it has expired
			}
			for _, sr := range r.Serials {
				if r.NotAfter.After(unbound[sr]) {
					unbound[sr] = r.NotAfter
				}
			}
		}
		if len(unbound) > 0 {
			// Bound serials have a record; only unexpired ones matter.
			sdir := s.p.dir(kindSerials)
			if _, err := s.rangeAll(ctx, sdir+timeKey(now), rangeEnd(sdir), rev, true, func(kv *mvccpb.KeyValue) error {
				name, _ := cutKey(kv.Key, sdir)
				if i := strings.LastIndexByte(name, '/'); i >= 0 {
					delete(unbound, name[i+1:])
				}
				return nil
			}); err != nil {
				return err
			}
		}
		// Revocations first, then the reservations: an interruption
		// between them leaves reservations whose serials a later start
		// finds revoked and skips. A serial revoked before keeps its
		// record.
		var keys, vals []string
		var recs []storage.RevokedSerial
		for sr, notAfter := range unbound {
			rs := storage.RevokedSerial{Serial: sr, NotAfter: notAfter, RevokedAt: now, Reason: reason}
			val, err := json.Marshal(rs)
			if err != nil {
				return err
			}
			keys, vals, recs = append(keys, s.p.revokedSerial(sr)), append(vals, string(val)), append(recs, rs)
		}
		written, err := s.putIfAbsent(ctx, keys, vals, wid)
		for i, w := range written {
			if w {
				out[recs[i].Serial] = recs[i]
			}
		}
		if err != nil {
			return err
		}
		return s.commitChunks(ctx, abandoned, make([]clientv3.Cmp, len(abandoned)))
	})
	if err != nil {
		return nil, err
	}
	if len(out) > 0 {
		s.log.Warn("revoked serials reserved before an unclean shutdown and never bound", slog.Int("count", len(out)))
	}
	return sortedRevoked(out), nil
}
