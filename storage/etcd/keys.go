package etcd

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/badge-dev/badge/storage"
)

// prefix is /badge/TRUST_DOMAIN/; every key of the store starts with it.
// See the package documentation for the layout.
type prefix string

// Kinds of record: the directory under the prefix that holds them.
const (
	kindEntries        = "entries"
	kindKeys           = "keys"
	kindSerials        = "serials"
	kindSerialIDs      = "serial-ids"
	kindReservations   = "reservations"
	kindRuns           = "runs"
	kindRevokedIDs     = "revoked-ids"
	kindRevokedSerials = "revoked-serials"
	kindClients        = "clients"
	kindNodes          = "nodes"
	kindJoinTokens     = "join-tokens"
	kindAudit          = "audit"
	kindMeta           = "meta"
)

func (p prefix) dir(kind string) string        { return string(p) + kind + "/" }
func (p prefix) key(kind, id string) string    { return p.dir(kind) + id }
func (p prefix) meta(name string) string       { return p.key(kindMeta, name) }
func (p prefix) run(replica string) string     { return p.key(kindRuns, replica) }
func (p prefix) audit(seq uint64) string       { return p.key(kindAudit, fmt.Sprintf("%020d", seq)) }
func (p prefix) revokedSerial(s string) string { return p.key(kindRevokedSerials, s) }
func (p prefix) revokedID(id string) string    { return p.key(kindRevokedIDs, id) }

// serial is the key of a serial record: its expiry, so that the keys of
// the records that expired form the front of the range, then the serial.
func (p prefix) serial(notAfter time.Time, serial string) string {
	return p.dir(kindSerials) + timeKey(notAfter) + "/" + serial
}

// serialIDs is the directory of the index of one SPIFFE ID's records:
// the ID then a NUL, which no ID contains.
func (p prefix) serialIDs(spiffeID string) string {
	return p.dir(kindSerialIDs) + spiffeID + "\x00"
}

// timeKey encodes t so that string order is time order: the Unix second
// with its sign bit flipped and the nanosecond, big-endian, in hex.
func timeKey(t time.Time) string {
	b := binary.BigEndian.AppendUint64(nil, uint64(t.Unix())^(1<<63))
	b = binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
	return hex.EncodeToString(b)
}

// timeKeyLen is the length of a timeKey.
const timeKeyLen = 24

// corrupt reports a stored value that cannot be read, naming its key.
func corrupt(key []byte, format string, args ...any) error {
	return fmt.Errorf("storage/etcd: %q: %w: %s", key, storage.ErrCorrupt, fmt.Sprintf(format, args...))
}

// rangeAll calls fn with every key-value of [from, end), in key order, in
// pages, all read at one revision (that of the first page, or rev when it
// is not zero), and returns that revision.
func (s *Store) rangeAll(ctx context.Context, from, end string, rev int64, keysOnly bool, fn func(kv *mvccpb.KeyValue) error) (int64, error) {
	const page = 1000
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page), clientv3.WithRev(rev)}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return rev, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// rangeEnd returns the end of the range of keys starting with dir.
func rangeEnd(dir string) string { return clientv3.GetPrefixRangeEnd(dir) }

// commitChunks commits ops in transactions of at most maxOps operations,
// each with the comparisons cmps[i] of its ops (nil for none): a
// comparison that fails fails with errConflict, after the chunks before
// it were committed. It is for writes that are safe to apply in part and
// repeat.
func (s *Store) commitChunks(ctx context.Context, ops []clientv3.Op, cmps []clientv3.Cmp) error {
	for len(ops) > 0 {
		n := min(len(ops), s.maxOps)
		var cs []clientv3.Cmp
		for _, c := range cmps[:n] {
			if c.KeyBytes() != nil {
				cs = append(cs, c)
			}
		}
		resp, err := s.cli.Txn(ctx).If(cs...).Then(ops[:n]...).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return errConflict
		}
		ops, cmps = ops[n:], cmps[n:]
	}
	return nil
}

// cutKey returns what follows dir in key, or false.
func cutKey(key []byte, dir string) (string, bool) {
	return strings.CutPrefix(string(key), dir)
}

// putIfAbsent writes each value under its key unless the key exists, in
// transactions of nested put-if-absent transactions (maxOps/2 to one, as
// etcd counts a nested transaction's operations against the outer
// limit). Each value is tagged with the write ID wid; it reports which
// keys hold a value of wid afterwards: written now, or by an earlier
// attempt of the same call. A write that is interrupted leaves some
// written: it is for writes that are safe to repeat.
func (s *Store) putIfAbsent(ctx context.Context, keys, vals []string, wid string) ([]bool, error) {
	written := make([]bool, len(keys))
	per := max(s.maxOps/2, 1)
	for from := 0; from < len(keys); from += per {
		to := min(from+per, len(keys))
		ops := make([]clientv3.Op, 0, to-from)
		for i := from; i < to; i++ {
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(keys[i]), "=", 0)},
				[]clientv3.Op{clientv3.OpPut(keys[i], tag(vals[i], wid))},
				[]clientv3.Op{clientv3.OpGet(keys[i])}))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return written, err
		}
		for i, r := range resp.Responses {
			t := r.GetResponseTxn()
			if t.GetSucceeded() {
				written[from+i] = true
				continue
			}
			for _, rr := range t.GetResponses() {
				if kvs := rr.GetResponseRange().GetKvs(); len(kvs) == 1 && taggedBy(kvs[0].Value, wid) {
					written[from+i] = true
				}
			}
		}
	}
	return written, nil
}
