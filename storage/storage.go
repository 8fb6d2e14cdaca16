package storage

// CONTRACT STUB: the exported API below is fixed; the storage helper implements it.

import (
	"errors"
	"time"
)

var (
	ErrNotFound = errors.New("storage: not found")
	ErrExists   = errors.New("storage: already exists")
	ErrClosed   = errors.New("storage: closed")
)

// Entry is a registration entry: callers whose selectors include all of
// Selectors get an SVID for SPIFFEID.
type Entry struct {
	ID        string        `json:"id"`
	SPIFFEID  string        `json:"spiffe_id"`
	Selectors []string      `json:"selectors"` // canonical TYPE:KEY:VALUE, sorted
	TTL       time.Duration `json:"ttl,omitempty"`
	DNSNames  []string      `json:"dns_names,omitempty"`
	CreatedAt time.Time     `json:"created_at"`
	Revision  uint64        `json:"revision"`
}

// Serial records one issued certificate.
type Serial struct {
	Serial    string    `json:"serial"` // lower-case hex
	SPIFFEID  string    `json:"spiffe_id"`
	EntryID   string    `json:"entry_id"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	IssuedAt  time.Time `json:"issued_at"`
}

// KeyState is where a signing key is in its life.
type KeyState string

const (
	KeyPrepared KeyState = "prepared"
	KeyActive   KeyState = "active"
	KeyRetired  KeyState = "retired"
)

// Key is a CA or JWT signing key.
type Key struct {
	ID          string    `json:"id"`
	Kind        string    `json:"kind"`                  // "x509-root", "x509-intermediate", "jwt"
	PublicKey   []byte    `json:"public_key"`            // PKIX DER
	PrivateRef  string    `json:"private_ref"`           // file name in the data dir, or a KMS URI
	Certificate []byte    `json:"certificate,omitempty"` // DER, for X.509 keys
	CreatedAt   time.Time `json:"created_at"`
	NotAfter    time.Time `json:"not_after"`
	State       KeyState  `json:"state"`
}
