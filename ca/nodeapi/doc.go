// Package nodeapi serves the Node service of internal/nodeproto on the
// server's agent listener (badge server --agent-listen): how `badge agent`
// on other hosts attests, receives what its node serves, and gets CSRs
// signed.
//
// # What the listener trusts
//
// The TLS handshake alone decides who calls; no request field names the
// caller. The listener speaks TLS 1.3 only, with session resumption
// disabled, so every connection proves possession of its certificate's key
// afresh, and it presents the server's own SVID (spiffe://TD/badge/server,
// renewed at half its life). Client certificates are requested, not
// required, and checked in tls.Config.VerifyConnection on every handshake.
// A connection is of exactly one class:
//
//   - anonymous (no client certificate): only Attest with a one-time join
//     token is answered;
//   - x509pop (a certificate without a SPIFFE ID that chains, with the
//     client-authentication usage, to a CA of Config.NodeCAs, valid now):
//     only Attest without a token, for the node the certificate names
//     (its first DNS SAN, else its CN, lower-cased; a valid node name);
//   - node (an X.509-SVID spiffe://TD/badge/node/NAME that chains to the
//     current trust bundle, is valid now, whose serial is not revoked,
//     whose ID is not blocked and whose node is not evicted): every method
//     but Attest, for node NAME only.
//
// Any other certificate (an SVID of another trust domain or of a workload,
// an expired or revoked node SVID, an evicted node's, a certificate of an
// unknown CA) fails the handshake. A node connection is checked again on
// every call, against the newest snapshot, and is closed when its node is
// evicted or its node SVID revoked (its Sync stream ends first, with
// PermissionDenied: the node needs new proof) or expired (Unauthenticated:
// the agent dials again with the node SVID it renewed). A connection is
// thus good until the node SVID it presented expires; an agent dials anew
// after each RenewNode.
//
// An agent gets certificates only for entries scoped to its node (by name
// or '*'), with the entry's SPIFFE ID, DNS names and lifetime; the CSR
// contributes its public key alone, after its signature is checked. Every
// serial is recorded like a local workload's, so revocation by ID finds it.
//
// # Limits
//
// Connections per address (and in all), the TLS handshake deadline,
// header list and message sizes bound every caller. Per node: open Sync
// streams, calls in progress, and a token bucket charged for every
// certificate and token signed. Failed attestations from one address
// (an IPv4 address or IPv6 /64) back off exponentially, so guessing costs
// the store no write. Refusals by a limit are ResourceExhausted and logged
// at most once per node (or address) per LogInterval.
//
// # Sync
//
// Sync sends the whole state the node serves when it opens, and again
// whenever a new authority snapshot changes it (entries, blocked IDs,
// bundle, JWT bundle, CRL), driven by Snapshot.Done: no polling. A slow
// agent is sent the newest state once it takes the previous one; nothing
// queues per stream.
package nodeapi
