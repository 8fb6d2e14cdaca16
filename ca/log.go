package ca

// Attribute keys used in log records across the authority, so that
// operators can filter on the same names everywhere.
const (
	LogError       = "error"
	LogTrustDomain = "trust_domain"
	LogSPIFFEID    = "spiffe_id"
	LogEntryID     = "entry_id"
	LogSerial      = "serial"
	LogKeyID       = "key_id"
	LogCount       = "count"
	LogPID         = "pid"
	LogUID         = "uid"
	LogGID         = "gid"
	LogMethod      = "method"
	LogSelectors   = "selectors"
	LogAdminUID    = "admin_uid"
	LogAudit       = "audit"
	LogNode        = "node"
)
