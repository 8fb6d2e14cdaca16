package ca

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// IDRevocation is a revocation of every certificate (and token) issued to a
// SPIFFE ID before RevokedAt. A blocked ID gets no new SVIDs or tokens
// until it is unblocked.
type IDRevocation struct {
	ID        spiffeid.ID
	RevokedAt time.Time
	Reason    string
	Blocked   bool
}

// Revoked reports whether id has been revoked, and how. A credential of id
// issued before RevokedAt must be refused; a blocked id gets none at all.
func (s *Snapshot) Revoked(id spiffeid.ID) (IDRevocation, bool) {
	r, ok := s.revokedIDs[id]
	return r, ok
}

// SerialRevoked reports whether the certificate with this serial (lower-case
// hex, as in X509SVID.Serial) has been revoked.
func (s *Snapshot) SerialRevoked(serial string) bool {
	_, ok := s.revokedSerials[serial]
	return ok
}
