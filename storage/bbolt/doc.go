// Package bbolt is the embedded, single-host store of badge, kept in one
// bbolt file in the data directory.
//
// Open the file once per process; a second Open, from this process or
// another, fails after Options.Timeout with an error wrapping
// storage.ErrLocked:
//
//	st, err := bbolt.Open(filepath.Join(dataDir, "badge.db"), nil)
//	if err != nil {
//		return err // names the file; errors.Is: storage.ErrLocked, ErrCorrupt, ErrSchema
//	}
//	defer st.Close()
//
// # Layout
//
// Every record is JSON, under these buckets:
//
//	meta               "schema_version" → decimal version of the layout;
//	                   "crl_number" → the last CRL number handed out (8 bytes)
//	entries            entry id → storage.Entry
//	keys               key id → storage.Key
//	serials            serial hex → storage.Serial
//	serials_by_id      spiffe id, 0x00, serial → not_after (12 bytes)
//	serials_by_expiry  not_after (12 bytes), serial → spiffe id
//	serials_log        sequence number (8 bytes) → storage.Serial
//	revoked_ids        spiffe id → storage.Revocation (revoked or blocked IDs)
//	revoked_serials    serial hex → storage.RevokedSerial (revoked certificates)
//	clients            client id → storage.Client (OAuth clients; secret hashes only)
//
// serials_by_id and serials_by_expiry are indexes of serials, kept in the
// same transaction as the record: SerialsFor is a prefix scan of
// serials_by_id, and PruneSerials a range scan of serials_by_expiry. A
// not_after key is the Unix second with its sign bit flipped, then the
// nanosecond, both big-endian, so that byte order is time order.
//
// serials_log holds the serials recorded since the last fold, in the order
// they were recorded; see below. SerialsFor reads it as well as the
// indexes, and PruneSerials folds it first.
//
// revoked_ids holds one record per revoked SPIFFE ID (when, why, by whom,
// and whether the ID is blocked from further issuance); revoked_serials one
// per revoked certificate, whether revoked by serial or with its ID.
// PruneRevocations deletes a revoked certificate once it has expired, and
// an ID's revocation once it is older than every credential it could
// refuse; a block stays until Unblock. crl_number only grows
// (NextCRLNumber), across restarts, so every CRL has a higher number.
//
// The layout has a version. Open creates it on a new (or zero-length) file,
// upgrades an older one in one transaction, and refuses a newer one with an
// error wrapping storage.ErrSchema that names both versions. Version 1 has
// the entries, keys and serials buckets; version 2 adds revoked_ids and
// revoked_serials; version 3 adds clients. A later layout adds its buckets
// in a migration appended to the migrations table.
//
// # Durability and group commit
//
// Every method that writes returns after its transaction is on disk
// (fdatasync), unless Options.NoSync is set. RecordSerial runs once per
// issued certificate, so it does not commit on its own: callers queue their
// records, and one goroutine, the committer, writes everything queued in one
// transaction while the previous one is being synced. A lone caller is
// committed at once, with no timer; N concurrent callers share about one
// sync.
//
// Serials are random, so inserting one into the serials and serials_by_id
// B+trees rewrites about one page of each, and a transaction of N records
// writes about 2N pages. The committer therefore only appends to
// serials_log, whose keys are sequential: a batch fills a page or two. Every
// 1024 records it moves the log into the indexed buckets in one
// transaction, in key order, where records share pages. That costs a pause
// of tens of milliseconds for the callers queued meanwhile, and takes about
// half the bytes written and the CPU time per record of indexing each batch
// directly. The committer keeps the log's records in memory as well, so
// folding decodes nothing.
//
// # Damaged files
//
// Open checks the file before returning: a file that is not a bbolt
// database, is truncated, or whose pages cannot be read gives an error
// wrapping storage.ErrCorrupt that names the path. bbolt reads the file
// through a memory map and panics on some damage; the store recovers those
// panics (and memory faults, via debug.SetPanicOnFault) in every transaction
// and returns ErrCorrupt instead. A record that does not decode gives
// ErrCorrupt naming its bucket and key. Nothing is repaired or deleted.
//
// One kind of file is refused before bbolt reads it: one written without a
// stored freelist (as etcd writes its files). bbolt rebuilds such a
// freelist by walking every page, and reports damage found on that walk by
// panicking in a goroutine of its own, which would end the process. badge
// always stores the freelist, so Open returns storage.ErrSchema.
package bbolt
