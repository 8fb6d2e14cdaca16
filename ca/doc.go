// Package ca is the certificate authority of one SPIFFE trust domain.
//
// An [Authority] owns the key hierarchy (a self-signed root and an
// intermediate signing CA under it, replaced at half its life), the
// registration entries, and the signing of X.509-SVIDs. Everything a
// Workload API call needs is published as an immutable [Snapshot]: the
// entries indexed by selector, the trust bundle, and a channel that closes
// when a newer snapshot replaces it. A stream waits on that channel, so one
// change reaches every open stream without polling and without a lock on the
// hot path.
//
// The path of one request is short: the Workload API server (package
// ca/workload) attests the caller, asks the current snapshot which entries
// match, and calls [Authority.SignX509SVID] for each; signing records the
// serial durably in the store before the certificate leaves the process.
//
// Security invariants:
//   - an SVID never lives longer than Config.MaxSVIDTTL after issuance, and
//     its NotBefore is backdated by at most [Backdate];
//   - CA private keys stay in files of mode 0600 in the key directory
//     (written atomically) and are never logged;
//   - a workload's private key is generated per call and returned only to
//     that caller.
package ca
