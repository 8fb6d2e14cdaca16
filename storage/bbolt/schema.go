package bbolt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// Bucket names. See the package documentation for what each holds.
var (
	bucketMeta               = []byte("meta")
	bucketEntries            = []byte("entries")
	bucketKeys               = []byte("keys")
	bucketSerialRecords      = []byte("serial_records")
	bucketSerialIDs          = []byte("serial_ids")
	bucketSerialReservations = []byte("serial_reservations")
	bucketRevokedIDs         = []byte("revoked_ids")
	bucketRevokedSerials     = []byte("revoked_serials")
	bucketClients            = []byte("clients")
	bucketNodes              = []byte("nodes")
	bucketJoinTokens         = []byte("join_tokens")
	bucketAudit              = []byte("audit")

	keySchemaVersion = []byte("schema_version")
)

// schemaVersion is the layout this code reads and writes: the number of
// migrations.
const schemaVersion = len(migrations)

// migrations[v] upgrades a database from schema version v to v+1, inside
// the transaction that then records the new version. Version 0 is a new,
// empty file. To change the layout, append a migration.
var migrations = [...]func(tx *bolt.Tx) error{
	0: func(tx *bolt.Tx) error {
		return createBuckets(tx, bucketEntries, bucketKeys, bucketSerialsV1, bucketSerialsByIDV1, bucketSerialsByExpiryV1, bucketSerialsLogV1)
	},
	// Version 1 → 2: revocations by SPIFFE ID and by serial.
	1: func(tx *bolt.Tx) error {
		return createBuckets(tx, bucketRevokedIDs, bucketRevokedSerials)
	},
	// Version 2 → 3: OAuth clients of the token endpoint.
	2: func(tx *bolt.Tx) error {
		return createBuckets(tx, bucketClients)
	},
	// Version 3 → 4: serial records keyed by expiry in a compact binary
	// form, indexed by SPIFFE ID, and reservations of serials.
	3: migrateSerialsV4,
	// Version 4 → 5: agents' nodes and join tokens. Entries gain an
	// optional "nodes" field; a stored entry has none, which means what it
	// always meant (served on the server's own socket), so no record is
	// rewritten.
	4: func(tx *bolt.Tx) error {
		return createBuckets(tx, bucketNodes, bucketJoinTokens)
	},
	// Version 5 → 6: the audit trail (its signed head is in meta).
	5: func(tx *bolt.Tx) error {
		return createBuckets(tx, bucketAudit)
	},
	// Version 6 → 7: key records carry their schedule (activates_at,
	// retires_at, remove_at). See migrateKeySchedule.
	6: migrateKeySchedule,
}

// buckets are the buckets the current schema needs.
var buckets = [][]byte{bucketMeta, bucketEntries, bucketKeys, bucketSerialRecords, bucketSerialIDs, bucketSerialReservations, bucketRevokedIDs, bucketRevokedSerials, bucketClients, bucketNodes, bucketJoinTokens, bucketAudit}

func createBuckets(tx *bolt.Tx, names ...[]byte) error {
	for _, name := range names {
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("creating bucket %s: %w", name, err)
		}
	}
	return nil
}

// setup brings the schema to schemaVersion and checks the file, returning
// the number of records in each bucket.
func (s *Store) setup() (map[string]int, error) {
	ctx := context.Background()
	var version int
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		version, err = s.readVersion(tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	if version > schemaVersion {
		return nil, fmt.Errorf("storage/bbolt: %s: %w: the database has schema version %d, this badge supports up to version %d; use a newer badge release",
			s.path, storage.ErrSchema, version, schemaVersion)
	}
	if version < schemaVersion {
		err := s.update(ctx, func(tx *bolt.Tx) error {
			v, err := s.readVersion(tx)
			if err != nil {
				return err
			}
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			for ; v < schemaVersion; v++ {
				if err := migrations[v](tx); err != nil {
					return fmt.Errorf("migrating from schema version %d to %d: %w", v, v+1, err)
				}
			}
			return meta.Put(keySchemaVersion, []byte(strconv.Itoa(schemaVersion)))
		})
		if err != nil {
			return nil, fmt.Errorf("storage/bbolt: %s: upgrading schema: %w", s.path, err)
		}
		if version == 0 {
			s.log.Info("created database", slog.Int(attrSchema, schemaVersion))
		} else {
			s.log.Info("upgraded database schema", slog.Int("from", version), slog.Int(attrSchema, schemaVersion))
		}
	}
	counts := make(map[string]int)
	err = s.view(ctx, func(tx *bolt.Tx) error {
		for _, name := range buckets {
			b := tx.Bucket(name)
			if b == nil {
				return fmt.Errorf("storage/bbolt: %s: %w: bucket %s is missing", s.path, storage.ErrCorrupt, name)
			}
			// Walk every page once, so that a truncated or damaged file
			// fails here and not on a request.
			n := 0
			c := b.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				n++
			}
			counts[string(name)] = n
		}
		s.ownReservations = tx.Bucket(bucketSerialReservations).Sequence() + 1
		return nil
	})
	if err != nil {
		return nil, err
	}
	return counts, nil
}

// readVersion returns the schema version of the file: 0 for a file with no
// buckets at all (new). A file with buckets but no version record is not
// a badge database.
func (s *Store) readVersion(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		var other []byte
		_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			other = name
			return errStop
		})
		if other != nil {
			return 0, fmt.Errorf("storage/bbolt: %s: %w: no schema version but a bucket %q: not a badge database", s.path, storage.ErrSchema, other)
		}
		return 0, nil
	}
	raw := meta.Get(keySchemaVersion)
	v, err := strconv.Atoi(string(raw))
	if err != nil || v < 1 {
		return 0, fmt.Errorf("storage/bbolt: %s: %w: meta/%s holds %q, not a version number", s.path, storage.ErrCorrupt, keySchemaVersion, raw)
	}
	return v, nil
}

// errStop ends a ForEach early.
var errStop = errors.New("stop")
