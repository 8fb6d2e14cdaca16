package bbolt

import (
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

// timeKeyLen is the length of an encoded not_after.
const timeKeyLen = 12

// appendTime appends t so that byte order is time order: the Unix second
// with its sign bit flipped, then the nanosecond, both big-endian.
func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// A serial record is stored once, in serial_records under a 16-byte key:
// the second its certificate expires (NotAfter rounded up, sign bit
// flipped, big-endian) and a sequence number. Certificates issued together
// expire together, so new records land at the end of the tree (or at the
// end of their second), and pruning removes the first keys. The value is
// compact binary:
//
//	0x01                    format
//	uvarint, bytes          serial hex
//	uvarint, bytes          spiffe id
//	uvarint, bytes          entry id
//	12 bytes each           not_after, not_before, issued_at (appendTime)
//
// serial_ids indexes it by SPIFFE ID: spiffe id, 0x00, the record's key →
// empty.
const (
	serialFormat    = 1
	serialKeyLen    = 16
	serialSecondLen = 8
)

// serialKeys is a serial record encoded for its two buckets, in one
// allocation. The sequence number in its keys is set by setSeq.
type serialKeys struct {
	serial []byte // serial hex, within val
	key    []byte // serial_records key
	val    []byte // serial_records value
	idKey  []byte // serial_ids key
}

func newSerialKeys(r storage.Serial) serialKeys {
	n, id, entry := len(r.Serial), len(r.SPIFFEID), len(r.EntryID)
	valLen := 1 + 3*binary.MaxVarintLen64 + n + id + entry + 3*timeKeyLen
	buf := make([]byte, 0, serialKeyLen+valLen+id+1+serialKeyLen)
	buf = appendSecond(buf, expirySecond(r.NotAfter))
	buf = append(buf, make([]byte, 8)...) // sequence number
	buf = append(buf, serialFormat)
	buf = binary.AppendUvarint(buf, uint64(n))
	serialAt := len(buf)
	buf = append(buf, r.Serial...)
	buf = binary.AppendUvarint(buf, uint64(id))
	buf = append(buf, r.SPIFFEID...)
	buf = binary.AppendUvarint(buf, uint64(entry))
	buf = append(buf, r.EntryID...)
	buf = appendTime(buf, r.NotAfter)
	buf = appendTime(buf, r.NotBefore)
	buf = appendTime(buf, r.IssuedAt)
	valEnd := len(buf)
	buf = append(buf, r.SPIFFEID...)
	buf = append(buf, 0)
	buf = append(buf, buf[:serialKeyLen]...)
	return serialKeys{
		serial: buf[serialAt : serialAt+n : serialAt+n],
		key:    buf[:serialKeyLen:serialKeyLen],
		val:    buf[serialKeyLen:valEnd:valEnd],
		idKey:  buf[valEnd:],
	}
}

// setSeq sets the sequence number of the record's keys.
func (k serialKeys) setSeq(seq uint64) {
	binary.BigEndian.PutUint64(k.key[serialSecondLen:], seq)
	binary.BigEndian.PutUint64(k.idKey[len(k.idKey)-8:], seq)
}

// expirySecond is NotAfter rounded up to the second: every record under a
// key of second s expires at or before s.
func expirySecond(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// appendSecond appends s so that byte order is numeric order.
func appendSecond(b []byte, s int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(s)^(1<<63))
}

// keySecond is the expiry second of a serial_records key of the right
// length.
func keySecond(k []byte) int64 { return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)) }

// maxSerialHexLen is the longest serial, in hex digits (20 octets).
const maxSerialHexLen = 40

// readTime decodes what appendTime wrote.
func readTime(b []byte) time.Time {
	sec := int64(binary.BigEndian.Uint64(b) ^ (1 << 63))
	return time.Unix(sec, int64(binary.BigEndian.Uint32(b[8:]))).UTC()
}

// readBytes reads a uvarint length and that many bytes.
func readBytes(b []byte) (field, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return nil, nil, false
	}
	return b[w : w+int(n)], b[w+int(n):], true
}

// serialFields are the parts of a serial_records value, still encoded.
type serialFields struct {
	serial, spiffeID, entryID []byte
	notAfter, notBefore       []byte // 12 bytes each
	issuedAt                  []byte
}

// parseSerial splits a serial_records record into its fields, checking
// only the framing and that the key matches the expiry.
func parseSerial(key, val []byte) (serialFields, error) {
	var f serialFields
	if len(key) != serialKeyLen {
		return f, corrupt(bucketSerialRecords, key, "key is %d bytes, want %d", len(key), serialKeyLen)
	}
	if len(val) == 0 || val[0] != serialFormat {
		return f, corrupt(bucketSerialRecords, key, "unknown record format")
	}
	var ok bool
	rest := val[1:]
	for _, field := range []*[]byte{&f.serial, &f.spiffeID, &f.entryID} {
		if *field, rest, ok = readBytes(rest); !ok {
			return f, corrupt(bucketSerialRecords, key, "record is truncated")
		}
	}
	if len(rest) != 3*timeKeyLen {
		return f, corrupt(bucketSerialRecords, key, "record ends with %d bytes, want %d", len(rest), 3*timeKeyLen)
	}
	f.notAfter, f.notBefore, f.issuedAt = rest[:timeKeyLen], rest[timeKeyLen:2*timeKeyLen], rest[2*timeKeyLen:]
	if expirySecond(readTime(f.notAfter)) != keySecond(key) {
		return f, corrupt(bucketSerialRecords, key, "key does not match not_after %s", readTime(f.notAfter).Format(time.RFC3339Nano))
	}
	return f, nil
}

// decodeSerial decodes a serial_records record.
func decodeSerial(key, val []byte) (storage.Serial, error) {
	f, err := parseSerial(key, val)
	if err != nil {
		return storage.Serial{}, err
	}
	r := storage.Serial{
		Serial:    string(f.serial),
		SPIFFEID:  string(f.spiffeID),
		EntryID:   string(f.entryID),
		NotAfter:  readTime(f.notAfter),
		NotBefore: readTime(f.notBefore),
		IssuedAt:  readTime(f.issuedAt),
	}
	if err := r.Validate(); err != nil {
		return storage.Serial{}, corrupt(bucketSerialRecords, key, "%v", err)
	}
	return r, nil
}

// A serial_reservations value lists the reserved serials: a uvarint count,
// then each serial as one length byte and its hex digits. Its key is the
// reservation's not_after followed by an 8-byte sequence number.
const reservationKeyLen = timeKeyLen + 8

func encodeReservation(serials []string) []byte {
	n := binary.MaxVarintLen64
	for _, s := range serials {
		n += 1 + len(s)
	}
	b := binary.AppendUvarint(make([]byte, 0, n), uint64(len(serials)))
	for _, s := range serials {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

// decodeReservation decodes a serial_reservations record.
func decodeReservation(key, val []byte) (notAfter time.Time, serials []string, err error) {
	if len(key) != reservationKeyLen {
		return time.Time{}, nil, corrupt(bucketSerialReservations, key, "key is %d bytes, want %d", len(key), reservationKeyLen)
	}
	count, w := binary.Uvarint(val)
	if w <= 0 || count > uint64(len(val)) {
		return time.Time{}, nil, corrupt(bucketSerialReservations, key, "bad count")
	}
	rest := val[w:]
	serials = make([]string, 0, count)
	for range count {
		if len(rest) == 0 || int(rest[0]) > len(rest)-1 {
			return time.Time{}, nil, corrupt(bucketSerialReservations, key, "serial %d is truncated", len(serials))
		}
		s := string(rest[1 : 1+rest[0]])
		if err := validSerial(s); err != nil {
			return time.Time{}, nil, corrupt(bucketSerialReservations, key, "%v", err)
		}
		serials = append(serials, s)
		rest = rest[1+rest[0]:]
	}
	if len(rest) != 0 {
		return time.Time{}, nil, corrupt(bucketSerialReservations, key, "%d bytes after the last serial", len(rest))
	}
	return readTime(key), serials, nil
}

// validSerial checks a serial the way storage.Serial.Validate does.
func validSerial(s string) error {
	return storage.Reservation{Serials: []string{s}, NotAfter: time.Unix(1, 0)}.Validate()
}
