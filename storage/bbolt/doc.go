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
// Entries, keys, revocations and clients are JSON; serial records, which
// grow with issuance, are compact binary (see records.go). The buckets:
//
//	meta                 "schema_version" → decimal version of the layout;
//	                     "crl_number" → the last CRL number handed out (8 bytes);
//	                     "audit_head" → storage.AuditHead (the signed end of the audit trail)
//	entries              entry id → storage.Entry
//	keys                 key id → storage.Key
//	serial_records       expiry second (8 bytes), sequence (8) → serial record
//	serial_ids           spiffe id, 0x00, serial_records key → empty
//	serial_reservations  not_after (12 bytes), sequence (8) → reserved serials
//	revoked_ids          spiffe id → storage.Revocation (revoked or blocked IDs)
//	revoked_serials      serial hex → storage.RevokedSerial (revoked certificates)
//	clients              client id → storage.Client (OAuth clients; secret hashes only)
//	nodes                node name → storage.Node (agents' hosts)
//	join_tokens          SHA-256 of the token, hex → storage.JoinToken (never the token)
//	audit                seq (8 bytes, big-endian) → storage.AuditRecord
//
// serial_records is keyed by when the certificate expires (NotAfter rounded
// up to the second, then a sequence number), not by its random serial:
// certificates issued together expire together, so inserts append to the
// last pages of the tree (filled to 95%), and pruning deletes the first
// keys, freeing whole pages that later inserts reuse. The file therefore
// stops growing once serials expire as fast as they are issued. serial_ids
// is the index revocation by ID needs: a prefix scan from the second of
// now. There is no index by serial, which would take a random page write
// per insert: RevokeSerial, an admin action, scans the keys. A time key is
// the Unix second with its sign bit flipped, big-endian (not_after also
// holds the nanosecond), so that byte order is time order.
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
// the entries and keys buckets and the first serial buckets (serials,
// serials_by_id, serials_by_expiry, serials_log); version 2 adds
// revoked_ids and revoked_serials; version 3 adds clients; version 4
// replaces the first serial buckets with serial_records, serial_ids and
// serial_reservations; version 5 adds nodes and join_tokens; version 6
// adds audit. A later layout adds its buckets in a migration
// appended to the migrations table.
//
// # Durability and group commit
//
// Every method that writes returns after its transaction is on disk
// (fdatasync), unless Options.NoSync is set. Serial records are written by
// one goroutine, the committer, which writes everything queued in one
// transaction while the previous one is being synced: a lone caller is
// committed at once, with no timer; N concurrent callers share about one
// sync. RecordSerial waits for its record's commit. BindSerial, the
// authority's path, only queues the record: its serial was reserved
// durably beforehand (ReserveSerials, one sync per block of serials), and
// after a crash RevokeUnbound revokes every reserved serial whose record
// was lost. SerialsFor, RevokeID and RevokeSerial first wait for the queue,
// so revocation finds every record queued before it.
//
// bbolt's freelist (the hashmap kind, which allocates runs of pages
// without sorting) is not stored on every commit, as etcd does not store
// it: once the first generation of serials has expired, a file at full
// rate holds thousands of free pages, and writing and sorting that list
// on each of several hundred commits a second was the one cost that grew
// with the file's age. Open rebuilds it by walking the tree (tens of
// milliseconds for a file holding an hour of serials at full rate); Close
// stores it, so that a release that expects a stored freelist can open
// the file after a clean stop.
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
// Before bbolt reads the file, Open checks every page its current meta
// page reaches, with pread rather than through the memory map: page
// numbers within the file, no page referenced twice, branch and leaf pages
// only, elements within their pages, keys in order. bbolt's own walk,
// which rebuilds the freelist, reports such damage by panicking in a
// goroutine of its own, or faults on a page outside the file; either would
// end the process. The check makes such a file an ErrCorrupt naming the
// page instead.
package bbolt
