package storage

import (
	"context"
	"io"
	"time"
)

// Backend is the contract every store implements: everything the
// authority keeps across restarts. It is declared here once; the
// authority (ca.Store is an alias of it), the conformance suite
// (storagetest) and each implementation use this declaration, and each
// implementation asserts it at compile time:
//
//	var _ storage.Backend = (*Store)(nil)
//
// To add a method: declare it in the small interface below that it
// belongs to (or in a new one embedded in Backend), implement it in
// storage/bbolt and storage/etcd, and add its case to storagetest, which
// then checks both.
//
// Every method honours ctx (a done context returns ctx.Err() and changes
// nothing), returns errors that wrap the sentinels of this package and
// name the record concerned, and returns ErrClosed after Close. A store
// reached over the network also wraps ErrUnavailable when it cannot reach
// its servers.
type Backend interface {
	Entries
	Serials
	Keys
	Revocations
	Clients
	Nodes
	Audit
	// Close releases the store; it writes what was queued (see
	// Serials.BindSerial) first. Later calls, a second Close included,
	// return ErrClosed.
	Close() error
}

// Entries keeps registration entries.
type Entries interface {
	// CreateEntry stores a new entry; ErrExists if the ID is taken,
	// ErrInvalid if Entry.Validate fails.
	CreateEntry(ctx context.Context, e Entry) error
	// GetEntry returns the entry with the ID, or ErrNotFound.
	GetEntry(ctx context.Context, id string) (Entry, error)
	// ListEntries returns every entry ordered by (CreatedAt, ID).
	ListEntries(ctx context.Context) ([]Entry, error)
	// DeleteEntry deletes the entry with the ID, or returns ErrNotFound.
	DeleteEntry(ctx context.Context, id string) error
}

// Serials keeps the record of every issued certificate, and the
// reservations of serials not yet bound to one.
//
// The invariant serial records keep is that revocation by SPIFFE ID finds
// every certificate that left the authority. A certificate's serial is
// either recorded durably before it leaves (RecordSerial), or comes from a
// durable reservation (ReserveSerials) and is bound without waiting
// (BindSerial); at start-up RevokeUnbound revokes the reserved serials of
// an earlier run that were never bound, since their certificates may have
// left before a crash.
type Serials interface {
	// RecordSerial stores the record of an issued certificate and returns
	// once it is durable. ErrExists for a serial stored with the same
	// NotAfter. Concurrent calls may be committed together.
	RecordSerial(ctx context.Context, r Serial) error
	// ReserveSerials records a block of serials before they are used,
	// durably when it returns.
	ReserveSerials(ctx context.Context, r Reservation) error
	// ReleaseSerials gives back reserved serials that will not be used,
	// so that no later start revokes them. Others are ignored.
	ReleaseSerials(ctx context.Context, serials []string) error
	// BindSerial records the certificate a reserved serial went into, and
	// returns once it is queued. SerialsFor, RevokeID and RevokeSerial see
	// it at once; Close writes it.
	BindSerial(ctx context.Context, r Serial) error
	// RevokeUnbound revokes, until their reservation's NotAfter, the
	// serials reserved by an earlier run and never bound, and forgets
	// those reservations; reservations of this run are left alone. It
	// returns what it revoked, ordered by serial.
	RevokeUnbound(ctx context.Context, now time.Time, reason string) ([]RevokedSerial, error)
	// SerialsFor returns the records of spiffeID with NotAfter after now,
	// ordered by serial, bindings still queued included.
	SerialsFor(ctx context.Context, spiffeID string, now time.Time) ([]Serial, error)
	// PruneSerials deletes the records and reservations with NotAfter
	// before expiredBefore and returns how many records it deleted.
	PruneSerials(ctx context.Context, expiredBefore time.Time) (int, error)
}

// Keys keeps the records of the CA and JWT signing keys (never the
// private keys).
type Keys interface {
	// PutKey inserts or replaces the record of a key.
	PutKey(ctx context.Context, k Key) error
	// ListKeys returns every key ordered by (CreatedAt, ID).
	ListKeys(ctx context.Context) ([]Key, error)
	// DeleteKey deletes the record of a key: ErrNotFound if there is none.
	DeleteKey(ctx context.Context, id string) error
}

// Revocations keeps revoked SPIFFE IDs and certificates, and the number
// of the revocation list.
type Revocations interface {
	// RevokeID records the revocation of r.SPIFFEID and revokes every
	// certificate of it unexpired at now, atomically: a binding made
	// meanwhile is either revoked or not yet visible to the revocation,
	// never lost between the two. It returns the certificates revoked
	// now; one revoked before keeps its record. A block is never lifted
	// by a later revocation.
	RevokeID(ctx context.Context, r Revocation, now time.Time) ([]RevokedSerial, error)
	// RevokeSerial revokes one recorded, unexpired certificate (else
	// ErrNotFound). One revoked before keeps its record, returned with
	// ErrExists.
	RevokeSerial(ctx context.Context, serial, reason string, adminUID uint32, now time.Time) (RevokedSerial, error)
	// Unblock clears the block of a revoked ID; ErrNotFound if it is not
	// blocked.
	Unblock(ctx context.Context, spiffeID string) error
	// ListRevocations returns the ID revocations ordered by SPIFFE ID and
	// the revoked certificates ordered by serial.
	ListRevocations(ctx context.Context) ([]Revocation, []RevokedSerial, error)
	// PruneRevocations deletes revoked certificates with NotAfter before
	// now, and unblocked ID revocations older than keep.
	PruneRevocations(ctx context.Context, now time.Time, keep time.Duration) (int, error)
	// NextCRLNumber returns a number greater than every number it
	// returned before, across restarts (and replicas), and at least
	// atLeast.
	NextCRLNumber(ctx context.Context, atLeast uint64) (uint64, error)
}

// Clients keeps the OAuth clients of the token endpoint.
type Clients interface {
	// CreateClient stores a new client; ErrExists if the ID is taken.
	CreateClient(ctx context.Context, c Client) error
	// GetClient returns the client with the ID, or ErrNotFound.
	GetClient(ctx context.Context, id string) (Client, error)
	// ListClients returns every client ordered by (CreatedAt, ID).
	ListClients(ctx context.Context) ([]Client, error)
	// DeleteClient deletes the client with the ID, or returns ErrNotFound.
	DeleteClient(ctx context.Context, id string) error
}

// Nodes keeps agents' nodes and the join tokens that attest them.
type Nodes interface {
	// CreateJoinToken stores a new token; ErrExists if the hash is taken.
	CreateJoinToken(ctx context.Context, j JoinToken) error
	// GetJoinToken returns the token with the hash, used or not, or
	// ErrNotFound.
	GetJoinToken(ctx context.Context, hash string) (JoinToken, error)
	// ListJoinTokens returns every token ordered by (CreatedAt, Hash).
	ListJoinTokens(ctx context.Context) ([]JoinToken, error)
	// ConsumeJoinToken uses a token at now and records its node's
	// attestation atomically: of concurrent calls with one token exactly
	// one succeeds. ErrNotFound, ErrTokenUsed, ErrTokenExpired.
	ConsumeJoinToken(ctx context.Context, hash string, now time.Time) (JoinToken, Node, error)
	// PruneJoinTokens deletes the tokens that expired before the time.
	PruneJoinTokens(ctx context.Context, expiredBefore time.Time) (int, error)
	// PutNode inserts or replaces a node.
	PutNode(ctx context.Context, n Node) error
	// GetNode returns the node with the name, or ErrNotFound.
	GetNode(ctx context.Context, name string) (Node, error)
	// ListNodes returns every node ordered by name.
	ListNodes(ctx context.Context) ([]Node, error)
	// EvictNode marks a node evicted and deletes its unused tokens
	// atomically; it returns the node and how many tokens it deleted.
	EvictNode(ctx context.Context, name string, at time.Time, adminUID uint32) (Node, int, error)
}

// Audit keeps the hash-chained audit trail and its signed head.
type Audit interface {
	// AuditHead returns the head and the last record (zero values when
	// the trail is empty).
	AuditHead(ctx context.Context) (AuditHead, AuditRecord, error)
	// AppendAudit stores rec and head atomically; rec must follow the
	// stored head, else nothing is written and the error wraps ErrExists
	// (another writer moved the head) or ErrInvalid.
	AppendAudit(ctx context.Context, rec AuditRecord, head AuditHead) error
	// PruneAudit deletes the records up to through and appends rec with
	// head, atomically; head must be anchored at record through.
	PruneAudit(ctx context.Context, through uint64, rec AuditRecord, head AuditHead) (int, error)
	// ScanAudit calls fn with the records above after, in order, and
	// returns the head of the same read.
	ScanAudit(ctx context.Context, after uint64, fn func(AuditRecord, error) bool) (AuditHead, error)
}

// FileBackup is the optional part of a Backend that copies the whole
// database as one file while the server runs (ca.Authority.Backup). Only
// an embedded store has such a file: a networked store (storage/etcd) is
// backed up with its own servers' snapshot tools, so this stays outside
// Backend and is found by type assertion.
type FileBackup interface {
	// Backup calls fn with a consistent view of the database: its size,
	// the key records in it, and a function that writes it to w.
	Backup(ctx context.Context, fn func(size int64, keys []Key, writeDB func(io.Writer) (int64, error)) error) error
}

// Change says which kinds of record changed, as a set of bits.
type Change uint32

// The kinds of record a Watcher reports changes of.
const (
	// ChangeEntries: an entry was created, changed or deleted.
	ChangeEntries Change = 1 << iota
	// ChangeRevocations: an ID or a certificate was revoked or unblocked.
	ChangeRevocations
	// ChangeNodes: a node was attested or evicted.
	ChangeNodes
	// ChangeKeys: a key record was added or changed (rotation).
	ChangeKeys

	// ChangeAll is every kind: what a watcher reports when it may have
	// missed changes (it reconnected after its history was compacted).
	ChangeAll = ChangeEntries | ChangeRevocations | ChangeNodes | ChangeKeys
)

// Watcher is the optional part of a Backend that several servers share
// (storage/etcd): it reports the changes any of them makes, so that each
// server publishes them to its own streams. A store only one process
// opens (storage/bbolt) has nothing to report and does not implement it.
type Watcher interface {
	// Watch calls fn, from one goroutine, with the kinds of record that
	// changed (its own changes included), until ctx is done; it then
	// returns ctx.Err(). Bursts of changes may be reported together.
	Watch(ctx context.Context, fn func(Change)) error
}

// KeyCreator is the optional part of a Backend several servers share
// (storage/etcd): it makes the first key of a kind exactly once, however
// many servers start at the same time.
type KeyCreator interface {
	// CreateFirstKey stores k unless a key record whose ID starts with
	// idPrefix exists, atomically; ErrExists if one does (another server
	// made it first: list the keys again to use it).
	CreateFirstKey(ctx context.Context, k Key, idPrefix string) error
}

// Elector is the optional part of a Backend several servers share
// (storage/etcd): it elects one of them to do the work that must be done
// once for all (root rotation, pruning, revoking the serials of a server
// that died). A store only one process opens has nothing to elect: that
// process does it all.
type Elector interface {
	// Lead reports whether this server leads now, and returns a channel
	// that is closed when that may have changed. The first call starts
	// the campaign. A leader that loses its store stops leading once its
	// lease runs out, at most the store's lease TTL later; two servers
	// may therefore both believe they lead for that long, so the work
	// done under the lead must be safe to repeat.
	Lead() (bool, <-chan struct{})
}
