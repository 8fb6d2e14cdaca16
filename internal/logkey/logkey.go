// Package logkey names the attribute keys of badge's log records, so that
// operators can filter on the same names in every package and binary.
package logkey

// Attribute keys of log records.
const (
	Error       = "error"
	TrustDomain = "trust_domain"
	SPIFFEID    = "spiffe_id"
	EntryID     = "entry_id"
	Serial      = "serial"
	KeyID       = "key_id"
	Count       = "count"
	PID         = "pid"
	UID         = "uid"
	GID         = "gid"
	Method      = "method"
	Selectors   = "selectors"
	AdminUID    = "admin_uid"
	Audit       = "audit"
	Node        = "node"
)
