package bbolt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// The serial buckets of schema versions 1 to 3: one JSON record per serial
// keyed by the random serial, two indexes, and a log of recent records.
var (
	bucketSerialsV1         = []byte("serials")
	bucketSerialsByIDV1     = []byte("serials_by_id")
	bucketSerialsByExpiryV1 = []byte("serials_by_expiry")
	bucketSerialsLogV1      = []byte("serials_log")
)

// migrateSerialsV4 moves every serial record of the version 3 layout (the
// serials bucket and the serials_log not folded into it yet) into
// serial_records and serial_ids, in key order, then drops the old buckets.
// A record that does not decode stops the upgrade with storage.ErrCorrupt
// naming it: nothing is dropped silently.
func migrateSerialsV4(tx *bolt.Tx) error {
	if err := createBuckets(tx, bucketSerialRecords, bucketSerialIDs, bucketSerialReservations); err != nil {
		return err
	}
	var recs []serialKeys
	seen := map[string]struct{}{}
	add := func(bucket, k, v []byte, want string) error {
		var r storage.Serial
		if err := json.Unmarshal(v, &r); err != nil {
			return corrupt(bucket, k, "%v", err)
		}
		if want != "" && r.Serial != want {
			return corrupt(bucket, k, "record has serial %q", r.Serial)
		}
		if err := r.Validate(); err != nil {
			return corrupt(bucket, k, "%v", err)
		}
		if _, dup := seen[r.Serial]; dup {
			return nil // logged again after being folded; keep the first
		}
		seen[r.Serial] = struct{}{}
		recs = append(recs, newSerialKeys(r))
		return nil
	}
	for _, name := range [][]byte{bucketSerialsV1, bucketSerialsLogV1} {
		b := tx.Bucket(name)
		if b == nil {
			return fmt.Errorf("%w: bucket %s is missing", storage.ErrCorrupt, name)
		}
		err := b.ForEach(func(k, v []byte) error {
			want := ""
			if bytes.Equal(name, bucketSerialsV1) {
				want = string(k)
			}
			return add(name, k, v, want)
		})
		if err != nil {
			return err
		}
	}
	recsB, idsB, err := serialBuckets(tx)
	if err != nil {
		return err
	}
	// In expiry order, numbered in that order: the keys are then
	// ascending, and the pages full.
	slices.SortStableFunc(recs, func(a, b serialKeys) int { return bytes.Compare(a.val, b.val) })
	slices.SortStableFunc(recs, func(a, b serialKeys) int { return bytes.Compare(a.key, b.key) })
	for i, r := range recs {
		r.setSeq(uint64(i + 1))
		if err := recsB.Put(r.key, r.val); err != nil {
			return err
		}
	}
	if err := recsB.SetSequence(uint64(len(recs))); err != nil {
		return err
	}
	slices.SortFunc(recs, func(a, b serialKeys) int { return bytes.Compare(a.idKey, b.idKey) })
	for _, r := range recs {
		if err := idsB.Put(r.idKey, nil); err != nil {
			return err
		}
	}
	for _, name := range [][]byte{bucketSerialsV1, bucketSerialsByIDV1, bucketSerialsByExpiryV1, bucketSerialsLogV1} {
		if err := tx.DeleteBucket(name); err != nil {
			return fmt.Errorf("dropping bucket %s: %w", name, err)
		}
	}
	return nil
}
