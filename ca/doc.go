// Package ca is the certificate authority of one SPIFFE trust domain.
//
// An [Authority] owns the key hierarchy (a self-signed root, or the
// roots of an [Upstream] authority that signs in its place (upstream.go),
// and an intermediate signing CA under it, replaced at half its life), the
// JWT signing key, every one rotated with overlap on a persisted schedule
// (a next key is published before it signs, a replaced one stays trusted
// until what it signed has expired: see rotation.go, [Authority.RotateKey]
// and [Authority.KeyStatuses]), the
// registration entries, and the signing of X.509-SVIDs. Everything a
// Workload API call needs is published as an immutable [Snapshot]: the
// entries indexed by selector, the trust bundle, and a channel that closes
// when a newer snapshot replaces it. A stream waits on that channel, so one
// change reaches every open stream without polling and without a lock on the
// hot path.
//
// The path of one request is short: the Workload API server (package
// ca/workload) attests the caller and asks its Source what the caller
// should hold. On the server's own socket that is the [WorkloadSource]
// ([Authority.WorkloadSource]), which asks the current snapshot which
// entries match, hands out again each SVID the stream holds that is still
// current (same entry revision, short of half its life, not revoked), and
// calls [Authority.SignX509SVID] for the others; signing takes a serial
// from a block reserved durably beforehand and queues its binding to the
// SPIFFE ID before the certificate leaves the process (no disk flush per
// SVID). Revocation waits for queued bindings, and a start after a crash
// revokes every reserved serial whose binding was lost (see serials.go).
//
// Revocation ([Authority.RevokeID], [Authority.RevokeSerial],
// [Authority.Unblock]) turns a SPIFFE ID into the serials recorded for it,
// signs a CRL with the intermediate ([Snapshot.CRL], its number handed out
// by the store so it only grows), and publishes a new snapshot: streams
// send the new list, replace a revoked SVID with a fresh key, and stop
// matching the entries of a blocked ID. Revocation write-holds the lock
// that signing read-holds, so no certificate of a blocked ID is signed
// after its serials were collected. Whether a credential is revoked is
// answered by [Snapshot.CheckRevocation] alone, for every caller.
// Revocation records are pruned only Config.PruneMargin past what they
// refuse, on a clock that never runs ahead of the monotonic clock.
//
// JWT-SVIDs are signed with an ES256 key kept like the CA keys (kind "jwt",
// kid the RFC 7638 thumbprint) and published as a JWK Set per snapshot
// ([Snapshot.JWKS]); [Authority.SignJWTSVID] caches a token per entry
// revision, audience list and signing key until half its life, and
// [Authority.ValidateJWTSVID] refuses, with a [TokenError] naming the
// reason, what the SPIFFE JWT-SVID specification refuses and tokens of IDs
// revoked since they were issued. OAuth clients ([Authority.CreateClient])
// get tokens for their SPIFFE ID by secret, stored only as an argon2id hash.
//
// Nodes ([Authority.CreateJoinToken], [Authority.AttestJoinToken],
// [Authority.RegisterNode], [Authority.EvictNode]) are the hosts of
// agents, known by the node SVID spiffe://TRUST_DOMAIN/badge/node/NAME. A
// join token is stored only as its SHA-256 and consumed once, in one store
// transaction, after its node SVID is signed. Entries scoped to nodes are never matched on the server's
// own socket ([Snapshot.Match]); [Snapshot.EntriesForNode] is an agent's
// view. Eviction revokes and blocks the node SVID ID like [Authority.RevokeID]
// and publishes a snapshot in which [Snapshot.NodeEvicted] holds.
//
// Every admin action is recorded with [Authority.Audit], the one method
// other code calls to add to the audit trail: records chained by SHA-256,
// the head signed by the intermediate after each append, checked by
// [Authority.VerifyAudit], pruned after Config.AuditRetention with the
// chain still verifiable (see audit.go). [Authority.Backup] writes the
// database as of one read transaction and the key files it refers to.
//
// Security invariants:
//   - an SVID never lives longer than Config.MaxSVIDTTL after issuance, and
//     its NotBefore is backdated by at most [Backdate];
//   - CA private keys stay in files of mode 0600 in the key directory
//     (written atomically) and are never logged;
//   - a workload's private key is generated per call and returned only to
//     that caller;
//   - an SVID is byte for byte what x509.CreateCertificate makes of its
//     entry's template: the per-entry encoder (leafcert.go) splices the
//     serial, validity and key into a TBS x509.CreateCertificate encoded,
//     and where the splice is not proven at run time, or the signer is not
//     the in-process P-256 key, x509.CreateCertificate signs;
//   - a JWT-SVID's exp is at most Config.JWTTTL after its iat, and no token
//     is signed for a blocked ID;
//   - every serial is recorded before its certificate leaves the process,
//     so revoking an ID revokes every unexpired certificate it has;
//   - a join token is never stored or logged, only its hash, and attests
//     one node once; an evicted node is served nothing until it attests
//     with a token made after its eviction.
//   - an audit head is signed only over a chain that verified when the
//     authority opened it; one that did not is carried forward as tainted;
//   - CA private keys leave the key directory only in a backup, asked for
//     on the admin socket (root or the server's uid) and recorded.
package ca
