package bbolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/badge-dev/badge/storage"
)

// corrupt reports a stored record that cannot be read, naming its bucket
// and key.
func corrupt(bucket, key []byte, format string, args ...any) error {
	return fmt.Errorf("storage/bbolt: %s/%q: %w: %s", bucket, key, storage.ErrCorrupt, fmt.Sprintf(format, args...))
}

// decodeEntry decodes the value stored under key in the entries bucket.
func decodeEntry(key, val []byte) (storage.Entry, error) {
	var e storage.Entry
	if err := json.Unmarshal(val, &e); err != nil {
		return storage.Entry{}, corrupt(bucketEntries, key, "%v", err)
	}
	if e.ID != string(key) {
		return storage.Entry{}, corrupt(bucketEntries, key, "record has id %q", e.ID)
	}
	return e, nil
}

// decodeKey decodes the value stored under key in the keys bucket.
func decodeKey(key, val []byte) (storage.Key, error) {
	var k storage.Key
	if err := json.Unmarshal(val, &k); err != nil {
		return storage.Key{}, corrupt(bucketKeys, key, "%v", err)
	}
	if k.ID != string(key) {
		return storage.Key{}, corrupt(bucketKeys, key, "record has id %q", k.ID)
	}
	return k, nil
}

// decodeSerial decodes the value stored under key in the serials bucket.
func decodeSerial(key, val []byte) (storage.Serial, error) {
	var r storage.Serial
	if err := json.Unmarshal(val, &r); err != nil {
		return storage.Serial{}, corrupt(bucketSerials, key, "%v", err)
	}
	if r.Serial != string(key) {
		return storage.Serial{}, corrupt(bucketSerials, key, "record has serial %q", r.Serial)
	}
	return r, nil
}

// timeKeyLen is the length of an encoded not_after.
const timeKeyLen = 12

// appendTime appends t so that byte order is time order: the Unix second
// with its sign bit flipped, then the nanosecond, both big-endian.
func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// byIDPrefix is the serials_by_id prefix of every serial of spiffeID.
func byIDPrefix(spiffeID string) []byte {
	b := make([]byte, 0, len(spiffeID)+1)
	b = append(b, spiffeID...)
	return append(b, 0)
}

// splitExpiryKey splits a serials_by_expiry key into its time and serial.
func splitExpiryKey(k []byte) (when, serial []byte, ok bool) {
	if len(k) <= timeKeyLen {
		return nil, nil, false
	}
	return k[:timeKeyLen], k[timeKeyLen:], true
}

// serialKeys is a serial record with the keys of its three indexed
// buckets.
type serialKeys struct {
	serial   []byte // serials key
	record   []byte // serials value (JSON)
	byID     []byte // serials_by_id key
	expiry   []byte // serials_by_expiry key
	spiffeID []byte // serials_by_expiry value
}

func newSerialKeys(r storage.Serial, record []byte) serialKeys {
	// One allocation for the keys.
	n := len(r.Serial)
	buf := make([]byte, 0, n+len(r.SPIFFEID)+1+n+timeKeyLen+n)
	buf = append(buf, r.Serial...)
	buf = append(buf, r.SPIFFEID...)
	buf = append(buf, 0)
	buf = append(buf, r.Serial...)
	buf = appendTime(buf, r.NotAfter)
	buf = append(buf, r.Serial...)
	idEnd := n + len(r.SPIFFEID) + 1 + n
	return serialKeys{
		serial:   buf[:n:n],
		record:   record,
		byID:     buf[n:idEnd:idEnd],
		expiry:   buf[idEnd:],
		spiffeID: buf[n : n+len(r.SPIFFEID) : n+len(r.SPIFFEID)],
	}
}

// notAfter is the serials_by_id value: the encoded not_after.
func (k serialKeys) notAfter() []byte { return k.expiry[:timeKeyLen] }

// logKey is the serials_log key of sequence number seq.
func logKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// decodeLogRecord decodes a serials_log value; key is its sequence number.
func decodeLogRecord(key, val []byte) (storage.Serial, error) {
	var r storage.Serial
	if err := json.Unmarshal(val, &r); err != nil {
		return storage.Serial{}, corrupt(bucketSerialsLog, key, "%v", err)
	}
	if len(key) != 8 {
		return storage.Serial{}, corrupt(bucketSerialsLog, key, "key is %d bytes, want 8", len(key))
	}
	if err := r.Validate(); err != nil {
		return storage.Serial{}, corrupt(bucketSerialsLog, key, "%v", err)
	}
	return r, nil
}

// unexpired reports whether a serials_by_id value (an encoded not_after)
// is after now.
func unexpired(val, now []byte) bool { return bytes.Compare(val, now) > 0 }
