package bbolt

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// migrateKeySchedule gives the key records written before keys rotated
// with overlap (schema 6 and earlier) the times of their schedule: a key
// that is or was active became active when it was created, and a retired
// key is removed when it expires, the only bound those records knew. The
// time an active key retires is left to the authority, which computes it
// from its configuration. A record that does not decode stops the upgrade
// with storage.ErrCorrupt naming it.
func migrateKeySchedule(tx *bolt.Tx) error {
	b := tx.Bucket(bucketKeys)
	if b == nil {
		return fmt.Errorf("%w: bucket %s is missing", storage.ErrCorrupt, bucketKeys)
	}
	type rewrite struct{ key, val []byte }
	var out []rewrite
	err := b.ForEach(func(k, v []byte) error {
		rec, err := decodeKey(k, v)
		if err != nil {
			return err
		}
		changed := false
		if rec.ActivatesAt.IsZero() && rec.State != storage.KeyPrepared {
			rec.ActivatesAt, changed = rec.CreatedAt, true
		}
		if rec.RemoveAt.IsZero() && rec.State == storage.KeyRetired {
			rec.RemoveAt, changed = rec.NotAfter, true
		}
		if !changed {
			return nil
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("encoding key %s: %w", rec.ID, err)
		}
		out = append(out, rewrite{append([]byte(nil), k...), val})
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range out {
		if err := b.Put(r.key, r.val); err != nil {
			return err
		}
	}
	return nil
}
