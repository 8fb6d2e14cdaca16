package bbolt

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// checkDecode is the property every record decoder has: garbage gives
// ErrCorrupt, never a panic; what decodes encodes to a record that decodes
// to the same encoding.
func checkDecode[T any](t *testing.T, key, val []byte, decode func(key, val []byte) (T, error)) {
	v, err := decode(key, val)
	if err != nil {
		if !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
		}
		return
	}
	enc, err := json.Marshal(v)
	if err != nil {
		// A time the decoder accepted but the encoder refuses, such as
		// year 10000 after applying its offset; the store never writes
		// such a record.
		t.Skip(err)
	}
	v2, err := decode(key, enc)
	if err != nil {
		t.Fatalf("re-decoding %s: %v", enc, err)
	}
	enc2, err := json.Marshal(v2)
	if err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("round trip changed the record:\n%s\n%s (%v)", enc, enc2, err)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add([]byte("e1"), jsonOf(f, storage.Entry{ID: "e1", SPIFFEID: "spiffe://example.org/a", Selectors: []string{"unix:uid:0"},
		TTL: time.Minute, DNSNames: []string{"a"}, CreatedAt: t0, Revision: 2}))
	f.Add([]byte("e1"), []byte(`{"id":"e1","created_at":"2026-11-24T13:00:00.5+05:30","ttl":-1}`))
	f.Add([]byte("e1"), []byte(`{"id":"e1","selectors":null,"revision":18446744073709551615}`))
	f.Add([]byte("e1"), []byte(`{"id":"e1","revision":-1}`))
	f.Add([]byte("e1"), []byte(`[]`))
	f.Add([]byte(""), []byte(`{}`))
	f.Add([]byte("e1"), []byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, key, val []byte) { checkDecode(t, key, val, decodeEntry) })
}

func FuzzDecodeSerial(f *testing.F) {
	good := newSerialKeys(testSerial(10, "spiffe://example.org/a", t0))
	f.Add(good.key, good.val)
	f.Add(good.key, good.val[:5])
	f.Add(good.key[:timeKeyLen], good.val)
	f.Add(good.key, []byte{1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 1})
	f.Add(good.key, []byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, key, val []byte) {
		r, err := decodeSerial(key, val)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		k := newSerialKeys(r)
		r2, err := decodeSerial(k.key, k.val)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v (%v)", r, r2, err)
		}
	})
}

func FuzzDecodeReservation(f *testing.F) {
	key := append(appendTime(nil, t0), 0, 0, 0, 0, 0, 0, 0, 1)
	f.Add(key, encodeReservation([]string{"0a", "ffff"}))
	f.Add(key, []byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add(key, []byte{1, 41})
	f.Add(key[:3], []byte{0})
	f.Fuzz(func(t *testing.T, key, val []byte) {
		at, serials, err := decodeReservation(key, val)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		at2, serials2, err := decodeReservation(key, encodeReservation(serials))
		if err != nil || !at.Equal(at2) || !slices.Equal(serials, serials2) {
			t.Fatalf("round trip changed the reservation: %v %v, %v %v (%v)", at, serials, at2, serials2, err)
		}
	})
}

func FuzzDecodeKey(f *testing.F) {
	f.Add([]byte("k1"), jsonOf(f, storage.Key{ID: "k1", Kind: "jwt", PublicKey: []byte{1, 2, 3}, PrivateRef: "k1.key",
		Certificate: []byte{4}, CreatedAt: t0, NotAfter: t0.Add(time.Hour), State: storage.KeyActive}))
	f.Add([]byte("k1"), []byte(`{"id":"k1","public_key":"not base64!","state":7}`))
	f.Add([]byte("k1"), []byte(`{"id":"k1","public_key":"AQID","certificate":""}`))
	f.Fuzz(func(t *testing.T, key, val []byte) { checkDecode(t, key, val, decodeKey) })
}

// FuzzStoredValue writes arbitrary keys and values into the buckets of a
// real database and then calls every read, and pruning: each returns
// records or an error wrapping ErrCorrupt, and never panics.
func FuzzStoredValue(f *testing.F) {
	const id = "spiffe://example.org/web"
	good := testSerial(1, id, t0.Add(time.Hour))
	goodKeys := newSerialKeys(good)
	f.Add(uint8(0), []byte("e1"), []byte(`{"id":"e1","spiffe_id":"x"}`))
	f.Add(uint8(1), []byte("k1"), []byte(`{"id":"k1"`))
	f.Add(uint8(2), goodKeys.key, []byte{1, 3, 'a', 'b'})
	f.Add(uint8(2), []byte{0x80, 0}, goodKeys.val)
	f.Add(uint8(3), append(append([]byte(id), 0), appendTime(nil, t0.Add(time.Hour))...), []byte{})
	f.Add(uint8(3), append(append([]byte(id), 0), "0b"...), []byte("short"))
	f.Add(uint8(4), append(appendTime(nil, t0), 0, 0, 0, 0, 0, 0, 0, 1), []byte{1, 2, 'a'})
	f.Add(uint8(4), []byte{0x80, 0}, []byte{})
	f.Add(uint8(5), []byte(testTokenHash), []byte(`{"hash":"`+testTokenHash+`","node":"n1","created_at":1}`))

	s, err := Open(filepath.Join(f.TempDir(), "badge.db"), &Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	targets := [][]byte{bucketEntries, bucketKeys, bucketSerialRecords, bucketSerialIDs, bucketSerialReservations, bucketJoinTokens}

	f.Fuzz(func(t *testing.T, which uint8, key, val []byte) {
		if len(key) == 0 || len(key) > bolt.MaxKeySize {
			t.Skip("bbolt refuses the key")
		}
		ctx := t.Context()
		bucket := targets[int(which)%len(targets)]
		// Start each run from the same state: one sound serial, and the
		// damaged value.
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, name := range targets {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			recs, ids, err := serialBuckets(tx)
			if err != nil {
				return err
			}
			if err := recs.Put(goodKeys.key, goodKeys.val); err != nil {
				return err
			}
			if err := ids.Put(goodKeys.idKey, nil); err != nil {
				return err
			}
			return tx.Bucket(bucket).Put(key, val)
		})
		if err != nil {
			t.Fatal(err)
		}

		check := func(what string, err error) {
			if err != nil && !errors.Is(err, storage.ErrCorrupt) && !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("%s: %v, want nil, ErrCorrupt or ErrNotFound", what, err)
			}
		}
		_, err = s.GetEntry(ctx, string(key))
		check("GetEntry", err)
		_, err = s.ListEntries(ctx)
		check("ListEntries", err)
		_, err = s.ListKeys(ctx)
		check("ListKeys", err)
		_, err = s.GetJoinToken(ctx, string(key))
		check("GetJoinToken", err)
		_, err = s.ListJoinTokens(ctx)
		check("ListJoinTokens", err)
		for _, spiffeID := range []string{id, string(key[:max(0, bytes.IndexByte(key, 0))])} {
			_, err = s.SerialsFor(ctx, spiffeID, t0)
			check("SerialsFor", err)
		}
		_, err = s.RevokeSerial(ctx, good.Serial, "", 0, t0)
		if errors.Is(err, storage.ErrExists) {
			err = nil // the seed revoked it already: recorded once
		}
		check("RevokeSerial", err)
		_, err = s.PruneSerials(ctx, t0.Add(100*time.Hour))
		check("PruneSerials", err)
	})
}
