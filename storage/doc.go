// Package storage defines the records badge keeps across restarts and the
// errors every store returns.
//
// The records are registration entries (Entry), one record per issued
// certificate (Serial), blocks of serials reserved before use
// (Reservation), the CA and JWT signing keys (Key), revoked IDs and
// certificates (Revocation, RevokedSerial), OAuth clients (Client), the
// nodes of agents (Node) with the one-time tokens that attest them
// (JoinToken), and the audit trail (AuditRecord, and its signed AuditHead). They are plain
// values: a store keeps a copy and returns copies.
//
// The contract every store implements is the Go interface Backend (in
// backend.go), composed of one small interface per kind of record; it is
// the only statement of the methods and their semantics, including the
// invariant serial records keep (see Serials). FileBackup is an optional
// part only an embedded store has.
//
// Implementations live in sub-packages: storage/bbolt is the embedded
// single-host default; storage/etcd keeps the same records, encoded as
// the same JSON, in an etcd cluster that several servers may share. Both
// pass the conformance suite in storage/storagetest.
//
// Errors wrap the sentinels of this package (ErrNotFound, ErrExists,
// ErrClosed, ErrInvalid, ErrCorrupt, ErrLocked, ErrSchema, ErrUnavailable)
// and name the record, file or endpoint concerned; test them with
// errors.Is. A store never panics on a damaged record: it returns an error
// wrapping ErrCorrupt.
package storage
