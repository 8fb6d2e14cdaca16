// Package storage defines the records badge keeps across restarts and the
// errors every store returns.
//
// The records are registration entries (Entry), one record per issued
// certificate (Serial), blocks of serials reserved before use
// (Reservation), the CA and JWT signing keys (Key), and the nodes of agents
// (Node) with the one-time tokens that attest them (JoinToken), and the
// audit trail (AuditRecord, and its signed AuditHead). They are plain
// values: a store keeps a copy and returns copies.
//
// Implementations live in sub-packages: storage/bbolt is the embedded
// single-host default. Each implements the same methods, declared by their
// users (the authority declares the ones it calls), and each passes the
// conformance suite in storage/storagetest:
//
//	CreateEntry(ctx, Entry) error             // ErrExists if the ID is taken
//	GetEntry(ctx, id) (Entry, error)          // ErrNotFound
//	ListEntries(ctx) ([]Entry, error)         // ordered by (CreatedAt, ID)
//	DeleteEntry(ctx, id) error                // ErrNotFound
//	RecordSerial(ctx, Serial) error           // durable when it returns
//	ReserveSerials(ctx, Reservation) error    // durable when it returns
//	BindSerial(ctx, Serial) error             // queued; seen by SerialsFor at once
//	ReleaseSerials(ctx, serials) error        // reserved, will not be used
//	RevokeUnbound(ctx, now, reason) ([]RevokedSerial, error) // at start-up
//	SerialsFor(ctx, spiffeID, now) ([]Serial, error) // unexpired only
//	PruneSerials(ctx, before) (int, error)    // NotAfter < before
//	PutKey(ctx, Key) error                    // insert or replace
//	ListKeys(ctx) ([]Key, error)              // ordered by (CreatedAt, ID)
//	DeleteKey(ctx, id) error                  // ErrNotFound
//	RevokeID(ctx, Revocation, now) ([]RevokedSerial, error) // the newly revoked only
//	RevokeSerial(ctx, serial, ...) (RevokedSerial, error)   // ErrExists if revoked before
//	PruneRevocations(ctx, now, keep) (int, error) // NotAfter < now; unblocked IDs revoked before now-keep
//	CreateJoinToken(ctx, JoinToken) error     // ErrExists if the hash is taken
//	ConsumeJoinToken(ctx, hash, now) (JoinToken, Node, error) // one transaction; ErrNotFound, ErrTokenUsed, ErrTokenExpired
//	PutNode(ctx, Node) error                  // insert or replace
//	GetNode(ctx, name) (Node, error)          // ErrNotFound
//	ListNodes(ctx) ([]Node, error)            // ordered by name
//	EvictNode(ctx, name, at, uid) (Node, int, error) // also deletes the node's unused tokens
//	AppendAudit(ctx, AuditRecord, AuditHead) error // ErrExists unless it follows the stored head
//	PruneAudit(ctx, through, AuditRecord, AuditHead) (int, error) // delete up to through, append, one step
//	ScanAudit(ctx, after, fn) (AuditHead, error) // records > after, in order, with the head of the same read
//	Close() error                             // later calls: ErrClosed
//
// The invariant serial records keep is that revocation by SPIFFE ID finds
// every certificate that left the authority. A certificate's serial is
// either recorded durably before it leaves (RecordSerial), or comes from a
// durable reservation and is bound without waiting (BindSerial); at start-up
// RevokeUnbound revokes the reserved serials of the previous run that were
// never bound, since their certificates may have left before a crash.
//
// Errors wrap the sentinels of this package (ErrNotFound, ErrExists,
// ErrClosed, ErrInvalid, ErrCorrupt, ErrLocked, ErrSchema) and name the
// record or file concerned; test them with errors.Is. A store never panics on
// a damaged file: it returns an error wrapping ErrCorrupt.
package storage
