package storage

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors returned by every store. Implementations wrap them with %w and a
// message naming the record or the file, so test them with errors.Is.
var (
	// ErrNotFound is returned when the requested record does not exist.
	ErrNotFound = errors.New("storage: not found")
	// ErrExists is returned when a record with the same ID or serial is
	// already stored.
	ErrExists = errors.New("storage: already exists")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("storage: closed")
	// ErrInvalid is returned when a record cannot be stored as given, for
	// example an entry without an ID or a serial that is not lower-case hex.
	ErrInvalid = errors.New("storage: invalid record")
	// ErrCorrupt is returned when the database file or a record in it cannot
	// be read: the file is not a database, is truncated, or holds a record
	// that does not decode. Nothing is repaired or deleted automatically.
	ErrCorrupt = errors.New("storage: database is corrupt")
	// ErrLocked is returned by Open when another process holds the
	// database, typically a second server started with the same data
	// directory.
	ErrLocked = errors.New("storage: database is locked by another process")
	// ErrSchema is returned by Open when the database was written with a
	// schema this version does not know, typically by a newer release.
	ErrSchema = errors.New("storage: unsupported database schema")
	// ErrUnavailable is returned by a networked store when its servers
	// cannot be reached or do not answer in time; the message names the
	// endpoints. Nothing is known to be written; the call may be retried.
	ErrUnavailable = errors.New("storage: store unavailable")
)

// MaxIDLen is the longest ID, SPIFFE ID or private key reference a store
// accepts, in bytes. It is the limit the SPIFFE specification sets for a
// SPIFFE ID.
const MaxIDLen = 2048

// maxSerialHexLen is 20 octets, the longest serial RFC 5280 allows.
const maxSerialHexLen = 40

// Entry is a registration entry: callers whose selectors include all of
// Selectors get an SVID for SPIFFEID.
type Entry struct {
	// ID identifies the entry; it is chosen by the caller and never reused.
	ID string `json:"id"`
	// SPIFFEID is the identity issued to matching workloads.
	SPIFFEID string `json:"spiffe_id"`
	// Selectors are the conditions a caller must all meet, each in
	// canonical TYPE:KEY:VALUE form, sorted.
	Selectors []string `json:"selectors"` // canonical TYPE:KEY:VALUE, sorted
	// TTL is the lifetime of the SVIDs issued for the entry; zero means the
	// server default.
	TTL time.Duration `json:"ttl,omitempty"`
	// DNSNames are added to the X.509-SVID as DNS subject alternative names.
	DNSNames []string `json:"dns_names,omitempty"`
	// Nodes are the names of the agents' nodes that serve the entry, sorted,
	// or the single value "*" for every node. Empty: the entry is served on
	// the server's own Workload API socket only (every entry stored before
	// nodes existed is such an entry).
	Nodes []string `json:"nodes,omitempty"`
	// CreatedAt is when the entry was created; entries are listed in
	// (CreatedAt, ID) order.
	CreatedAt time.Time `json:"created_at"`
	// Revision counts changes to the entry; SVIDs record the revision they
	// were issued for.
	Revision uint64 `json:"revision"`
}

// Validate reports whether e can be stored. The error wraps ErrInvalid.
// It checks only what a store needs (non-empty IDs of bounded length);
// the syntax of SPIFFE IDs and selectors is checked by the authority.
func (e Entry) Validate() error {
	if err := checkID("entry id", e.ID); err != nil {
		return err
	}
	for _, n := range e.Nodes {
		if err := checkNodeName("entry node", n); err != nil {
			return fmt.Errorf("entry %s: %w", e.ID, err)
		}
	}
	return checkID("entry spiffe_id", e.SPIFFEID)
}

// Serial records one issued certificate.
type Serial struct {
	// Serial is the certificate serial number in lower-case hexadecimal,
	// at most 40 digits (20 octets).
	Serial string `json:"serial"` // lower-case hex
	// SPIFFEID is the identity in the certificate.
	SPIFFEID string `json:"spiffe_id"`
	// EntryID is the registration entry the certificate was issued for.
	EntryID string `json:"entry_id"`
	// NotBefore is the start of the certificate's validity.
	NotBefore time.Time `json:"not_before"`
	// NotAfter is the end of the certificate's validity; the record is
	// pruned after it.
	NotAfter time.Time `json:"not_after"`
	// IssuedAt is when the certificate was signed.
	IssuedAt time.Time `json:"issued_at"`
}

// Validate reports whether s can be stored. The error wraps ErrInvalid.
func (s Serial) Validate() error {
	if err := validSerial(s.Serial); err != nil {
		return err
	}
	if err := checkID("serial spiffe_id", s.SPIFFEID); err != nil {
		return err
	}
	if len(s.EntryID) > MaxIDLen {
		return fmt.Errorf("%w: serial entry_id is longer than %d bytes", ErrInvalid, MaxIDLen)
	}
	if s.NotAfter.IsZero() {
		return fmt.Errorf("%w: serial %s has no not_after", ErrInvalid, s.Serial)
	}
	return nil
}

// MaxReservation is the most serials one Reservation may hold.
const MaxReservation = 1 << 16

// Reservation is a block of certificate serial numbers recorded durably
// before any of them is used. A serial is then bound to the certificate it
// went into (a Serial record) without waiting for the disk; after a crash,
// the serials of a reservation that were never bound are revoked, since a
// certificate carrying one may have left the process.
type Reservation struct {
	// Serials are the reserved serials, each in the form of Serial.Serial.
	Serials []string
	// NotAfter bounds the validity of every certificate issued with one
	// of the serials; the reservation is pruned after it.
	NotAfter time.Time
}

// Validate reports whether r can be stored. The error wraps ErrInvalid.
func (r Reservation) Validate() error {
	if len(r.Serials) == 0 || len(r.Serials) > MaxReservation {
		return fmt.Errorf("%w: reservation of %d serials: want 1 to %d", ErrInvalid, len(r.Serials), MaxReservation)
	}
	for _, s := range r.Serials {
		if err := validSerial(s); err != nil {
			return err
		}
	}
	if r.NotAfter.IsZero() {
		return fmt.Errorf("%w: reservation has no not_after", ErrInvalid)
	}
	return nil
}

// validSerial checks the form of a serial: 1 to 40 lower-case hex digits.
func validSerial(s string) error {
	if s == "" || len(s) > maxSerialHexLen {
		return fmt.Errorf("%w: serial %q: want 1 to %d hex digits", ErrInvalid, s, maxSerialHexLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w: serial %q is not lower-case hex", ErrInvalid, s)
		}
	}
	return nil
}

// KeyState is where a signing key is in its life.
type KeyState string

// The states of a signing key, in the order it goes through them.
const (
	// KeyPrepared is a key that is published in the bundle but not yet
	// used for signing.
	KeyPrepared KeyState = "prepared"
	// KeyActive is the key currently used for signing.
	KeyActive KeyState = "active"
	// KeyRetired is a key no longer used for signing; it stays in the
	// bundle until what it signed has expired.
	KeyRetired KeyState = "retired"
)

// Key is a CA or JWT signing key.
type Key struct {
	// ID identifies the key.
	ID string `json:"id"`
	// Kind is what the key signs: "x509-root", "x509-intermediate" or "jwt".
	Kind string `json:"kind"` // "x509-root", "x509-intermediate", "jwt"
	// PublicKey is the public key in PKIX DER form.
	PublicKey []byte `json:"public_key"` // PKIX DER
	// PrivateRef locates the private key: a file name in the data
	// directory, a KMS URI, or SealedRef for a key sealed in Sealed. The
	// private key itself is never stored in the clear.
	PrivateRef string `json:"private_ref"` // file name in the data dir, or a KMS URI
	// Sealed is, for a key whose PrivateRef is SealedRef (a root shared by
	// the servers of a store), the private key encrypted under the
	// operator's key-encryption key: AES-256-GCM, the nonce first, the
	// key's ID as additional data. Empty for every other key.
	Sealed []byte `json:"sealed,omitempty"`
	// Owner is the replica id of the server that owns the key, on a store
	// several servers share: only that server holds its private key, signs
	// with it and rotates it (intermediates and JWT keys). Empty for a key
	// every server shares (roots) and on a store only one server opens.
	Owner string `json:"owner,omitempty"`
	// Certificate is the DER certificate of an X.509 key; empty for JWT keys.
	Certificate []byte `json:"certificate,omitempty"` // DER, for X.509 keys
	// CreatedAt is when the key was made; keys are listed in (CreatedAt, ID)
	// order.
	CreatedAt time.Time `json:"created_at"`
	// NotAfter is when the key stops being valid: its certificate's
	// NotAfter, or for a JWT key the latest exp a token it signs may carry.
	NotAfter time.Time `json:"not_after"`
	// State is where the key is in its life.
	State KeyState `json:"state"`
	// ActivatesAt is when the key starts signing: the time a prepared key
	// becomes active, or became active for an active or retired key.
	// Zero for a key that was never scheduled (records of schema 6 and
	// earlier before migration).
	ActivatesAt time.Time `json:"activates_at,omitzero"`
	// RetiresAt is when an active key is due to stop signing, or when a
	// retired key stopped. Zero: not scheduled yet.
	RetiresAt time.Time `json:"retires_at,omitzero"`
	// RemoveAt is when a retired key leaves the trust bundle (or JWKS)
	// and its record and private key are deleted: once everything it
	// signed has expired. Zero for a key that is not retired.
	RemoveAt time.Time `json:"remove_at,omitzero"`
	// UpstreamChain holds, for an intermediate signed by an upstream
	// authority, the upstream's intermediate certificates (DER) between
	// Certificate and a root, in order; SVIDs carry them in their chain.
	UpstreamChain [][]byte `json:"upstream_chain,omitempty"`
	// UpstreamRoots holds, for an intermediate signed by an upstream
	// authority, the upstream's root certificates (DER) it chains to: they
	// are in the trust bundle while the intermediate has not expired.
	UpstreamRoots [][]byte `json:"upstream_roots,omitempty"`
}

// SealedRef is the PrivateRef of a key whose private key is sealed in
// its record (Key.Sealed).
const SealedRef = "sealed:aes-256-gcm"

// Validate reports whether k can be stored. The error wraps ErrInvalid.
func (k Key) Validate() error {
	if err := checkID("key id", k.ID); err != nil {
		return err
	}
	if len(k.PrivateRef) > MaxIDLen {
		return fmt.Errorf("%w: key %s: private_ref is longer than %d bytes", ErrInvalid, k.ID, MaxIDLen)
	}
	if len(k.Owner) > MaxIDLen || len(k.Sealed) > MaxIDLen {
		return fmt.Errorf("%w: key %s: owner or sealed key is longer than %d bytes", ErrInvalid, k.ID, MaxIDLen)
	}
	if (k.PrivateRef == SealedRef) != (len(k.Sealed) > 0) {
		return fmt.Errorf("%w: key %s: a sealed key needs private_ref %q and its sealed private key, and only a sealed key has one", ErrInvalid, k.ID, SealedRef)
	}
	switch k.State {
	case KeyPrepared, KeyActive, KeyRetired:
		return nil
	}
	return fmt.Errorf("%w: key %s: unknown state %q", ErrInvalid, k.ID, k.State)
}

// checkID rejects empty and over-long identifiers, and NUL bytes, which
// stores use as a separator in index keys.
func checkID(what, v string) error {
	switch {
	case v == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	case len(v) > MaxIDLen:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalid, what, MaxIDLen)
	case strings.IndexByte(v, 0) >= 0:
		return fmt.Errorf("%w: %s %q contains a NUL byte", ErrInvalid, what, v)
	}
	return nil
}

// Revocation is the revocation of a SPIFFE ID: every certificate and token
// issued to it before RevokedAt is revoked, and a blocked ID is issued
// nothing more until it is unblocked.
type Revocation struct {
	// SPIFFEID is the revoked identity.
	SPIFFEID string `json:"spiffe_id"`
	// RevokedAt is when the revocation was recorded.
	RevokedAt time.Time `json:"revoked_at"`
	// Reason is the admin's free-text reason, for the audit trail.
	Reason string `json:"reason,omitempty"`
	// Blocked stops all issuance to the ID.
	Blocked bool `json:"blocked"`
	// AdminUID is the uid of the admin who revoked it.
	AdminUID uint32 `json:"admin_uid"`
}

// Validate reports whether r can be stored. The error wraps ErrInvalid.
func (r Revocation) Validate() error {
	if err := checkID("revocation spiffe_id", r.SPIFFEID); err != nil {
		return err
	}
	if r.RevokedAt.IsZero() {
		return fmt.Errorf("%w: revocation of %s has no revoked_at", ErrInvalid, r.SPIFFEID)
	}
	return nil
}

// RevokedSerial is one revoked certificate. It is kept until the
// certificate expires, so the revocation list stays short.
type RevokedSerial struct {
	// Serial is the certificate serial in lower-case hexadecimal.
	Serial string `json:"serial"`
	// SPIFFEID is the identity in the certificate.
	SPIFFEID string `json:"spiffe_id"`
	// NotAfter is when the certificate expires; the record is pruned after it.
	NotAfter time.Time `json:"not_after"`
	// RevokedAt is when it was revoked.
	RevokedAt time.Time `json:"revoked_at"`
	// Reason is the admin's free-text reason.
	Reason string `json:"reason,omitempty"`
	// AdminUID is the uid of the admin who revoked it.
	AdminUID uint32 `json:"admin_uid"`
}

// Client is an OAuth 2.0 client of the token endpoint: a workload that
// cannot reach a Workload API socket authenticates with a secret and
// receives JWT-SVIDs for SPIFFEID. Only a slow hash of the secret is
// stored, never the secret.
type Client struct {
	// ID is the client_id the client authenticates with.
	ID string `json:"id"`
	// SPIFFEID is the identity of the tokens issued to the client.
	SPIFFEID string `json:"spiffe_id"`
	// SecretHash is the hash of the secret in PHC string format, such as
	// $argon2id$v=19$m=19456,t=2,p=1$SALT$HASH: the algorithm, its
	// parameters and the per-client salt travel with the hash.
	SecretHash string `json:"secret_hash"`
	// CreatedAt is when the client was registered; clients are listed in
	// (CreatedAt, ID) order.
	CreatedAt time.Time `json:"created_at"`
}

// Validate reports whether c can be stored. The error wraps ErrInvalid.
func (c Client) Validate() error {
	if err := checkID("client id", c.ID); err != nil {
		return err
	}
	if err := checkID("client spiffe_id", c.SPIFFEID); err != nil {
		return err
	}
	if c.SecretHash == "" || len(c.SecretHash) > MaxIDLen {
		return fmt.Errorf("%w: client %s: secret_hash must have 1 to %d bytes", ErrInvalid, c.ID, MaxIDLen)
	}
	return nil
}

// Errors of join tokens. An unknown token is storage.ErrNotFound; the
// three are distinct so that the server can log why it refused a node,
// though it tells the node no more than "refused".
var (
	// ErrTokenExpired is returned when a join token is presented after its
	// expiry.
	ErrTokenExpired = errors.New("storage: join token expired")
	// ErrTokenUsed is returned when a join token is presented a second
	// time: a token attests one node, once.
	ErrTokenUsed = errors.New("storage: join token already used")
)

// MaxNodeNameLen is the longest node name, in bytes: the longest DNS name.
const MaxNodeNameLen = 253

// tokenHashLen is the length of a join token hash: SHA-256, lower-case hex.
const tokenHashLen = 64

// How a node proved which node it is.
const (
	// AttestJoinToken is a node attested by a one-time join token.
	AttestJoinToken = "join_token"
	// AttestX509PoP is a node attested by proof of possession of a host
	// certificate from the operator's PKI.
	AttestX509PoP = "x509pop"
)

// JoinToken is a one-time token that lets an agent attest as Node. Only
// the hash of the token is stored: the token has 256 bits of entropy, so
// a fast hash is enough to make the stored record useless to a reader of
// the database, and it doubles as the lookup key.
type JoinToken struct {
	// Hash is the SHA-256 of the token, lower-case hex; the record's key.
	Hash string `json:"hash"`
	// Node is the name of the node the token attests.
	Node string `json:"node"`
	// CreatedAt is when the token was made.
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is the first instant the token is refused.
	ExpiresAt time.Time `json:"expires_at"`
	// UsedAt is when the token was consumed; zero while unused.
	UsedAt time.Time `json:"used_at,omitzero"`
	// AdminUID is the uid of the admin who made the token.
	AdminUID uint32 `json:"admin_uid"`
}

// Validate reports whether j can be stored. The error wraps ErrInvalid.
func (j JoinToken) Validate() error {
	if len(j.Hash) != tokenHashLen {
		return fmt.Errorf("%w: join token hash has %d characters, want %d hex digits", ErrInvalid, len(j.Hash), tokenHashLen)
	}
	for i := 0; i < len(j.Hash); i++ {
		if c := j.Hash[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w: join token hash is not lower-case hex", ErrInvalid)
		}
	}
	if err := checkNodeName("join token node", j.Node); err != nil {
		return err
	}
	if !j.ExpiresAt.After(j.CreatedAt) {
		return fmt.Errorf("%w: join token for node %s expires (%s) before it is created (%s)", ErrInvalid, j.Node, j.ExpiresAt, j.CreatedAt)
	}
	return nil
}

// Node is an agent's host, known since it first attested.
type Node struct {
	// Name is the node's name: a lower-case DNS name. Its node SVID is
	// spiffe://TRUST_DOMAIN/badge/node/NAME.
	Name string `json:"name"`
	// Attestation is how the node last proved its name: AttestJoinToken or
	// AttestX509PoP.
	Attestation string `json:"attestation"`
	// FirstAttestedAt is when the node first attested.
	FirstAttestedAt time.Time `json:"first_attested_at"`
	// LastAttestedAt is when the node last attested.
	LastAttestedAt time.Time `json:"last_attested_at"`
	// SVIDSerial is the serial (lower-case hex) of the node's current node
	// SVID; empty before the first is signed.
	SVIDSerial string `json:"svid_serial,omitempty"`
	// EvictedAt is when an admin evicted the node; zero if it is not
	// evicted. An evicted node is refused until it attests with new proof.
	EvictedAt time.Time `json:"evicted_at,omitzero"`
	// EvictedBy is the uid of the admin who evicted the node.
	EvictedBy uint32 `json:"evicted_by,omitempty"`
}

// Evicted reports whether the node is evicted.
func (n Node) Evicted() bool { return !n.EvictedAt.IsZero() }

// Validate reports whether n can be stored. The error wraps ErrInvalid.
func (n Node) Validate() error {
	if err := checkNodeName("node name", n.Name); err != nil {
		return err
	}
	switch n.Attestation {
	case AttestJoinToken, AttestX509PoP:
	default:
		return fmt.Errorf("%w: node %s: unknown attestation %q", ErrInvalid, n.Name, n.Attestation)
	}
	if len(n.SVIDSerial) > maxSerialHexLen {
		return fmt.Errorf("%w: node %s: svid_serial is longer than %d hex digits", ErrInvalid, n.Name, maxSerialHexLen)
	}
	return nil
}

// checkNodeName rejects what no store can key a node by: the syntax of a
// node name is checked by the authority.
func checkNodeName(what, v string) error {
	if len(v) > MaxNodeNameLen {
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalid, what, MaxNodeNameLen)
	}
	return checkID(what, v)
}

// AuditRecord is one entry of the audit trail: an admin action and its
// result. Records are numbered from 1 without gaps and chained: Prev is the
// Hash of the record before (or of the last pruned one), and Hash covers
// every other field. The store keeps them as given; the authority computes
// the hashes and verifies the chain.
type AuditRecord struct {
	// Seq is the record's number, one more than the record before it.
	Seq uint64 `json:"seq"`
	// Time is when the action was done.
	Time time.Time `json:"time"`
	// AdminUID is the uid of the admin who asked for the action; for what
	// the server does on its own (a scheduled key rotation, pruning the
	// trail) it is the server's uid.
	AdminUID uint32 `json:"admin_uid"`
	// Action names what was done, such as "entry.create" or "revoke.id".
	Action string `json:"action"`
	// Target is what it was done to: an entry id, a SPIFFE ID, a serial,
	// a key id.
	Target string `json:"target,omitempty"`
	// Detail adds what the action was given, such as a revocation reason.
	Detail string `json:"detail,omitempty"`
	// Result is "ok", or the error the action failed with.
	Result string `json:"result"`
	// Prev is the hash of the previous record, lower-case hex.
	Prev string `json:"prev"`
	// Hash is the record's hash, lower-case hex.
	Hash string `json:"hash"`
}

// Limits of an audit record's text fields, in bytes. The authority
// shortens longer values before recording them.
const (
	MaxAuditAction = 64
	MaxAuditText   = 4096
)

// Validate reports whether r can be stored. The error wraps ErrInvalid.
func (r AuditRecord) Validate() error {
	switch {
	case r.Seq == 0:
		return fmt.Errorf("%w: audit record has no seq", ErrInvalid)
	case r.Time.IsZero():
		return fmt.Errorf("%w: audit record %d has no time", ErrInvalid, r.Seq)
	case r.Action == "" || len(r.Action) > MaxAuditAction:
		return fmt.Errorf("%w: audit record %d: action must have 1 to %d bytes", ErrInvalid, r.Seq, MaxAuditAction)
	case len(r.Target) > MaxAuditText || len(r.Detail) > MaxAuditText || len(r.Result) > MaxAuditText:
		return fmt.Errorf("%w: audit record %d: target, detail and result are limited to %d bytes", ErrInvalid, r.Seq, MaxAuditText)
	case r.Result == "":
		return fmt.Errorf("%w: audit record %d has no result", ErrInvalid, r.Seq)
	case !isHex(r.Hash) || !isHex(r.Prev):
		return fmt.Errorf("%w: audit record %d: prev and hash must be lower-case hex", ErrInvalid, r.Seq)
	}
	return nil
}

// AuditHead is the signed end of the audit trail: the last record's number
// and hash, the anchor the first kept record chains to (the last pruned
// record, or seq 0 and an empty hash), and the signature of the CA over
// all of it.
type AuditHead struct {
	// Seq and Hash are those of the last record; Seq 0 means no record yet.
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	// AnchorSeq and AnchorHash are those of the last pruned record: the
	// first kept record has Seq AnchorSeq+1 and Prev AnchorHash.
	AnchorSeq  uint64 `json:"anchor_seq"`
	AnchorHash string `json:"anchor_hash"`
	// Taint, when set, says why the trail could not be verified when the
	// server last opened it; it is carried into every later head, so that
	// a head forged without the CA key is not blessed by the next
	// signature, until pruning passes TaintSeq.
	Taint    string `json:"taint,omitempty"`
	TaintSeq uint64 `json:"taint_seq,omitempty"`
	// SignedAt is when the head was signed.
	SignedAt time.Time `json:"signed_at"`
	// Signature is the signer's ASN.1 signature over the head's other
	// fields (see ca.AuditHeadDigest).
	Signature []byte `json:"signature"`
	// Chain is the signer's certificate followed by its issuers, DER.
	Chain [][]byte `json:"chain"`
}

// isHex reports whether s is empty or lower-case hexadecimal.
func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
