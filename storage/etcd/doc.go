// Package etcd keeps badge's state in an etcd cluster, so that several
// badge servers of one trust domain share it. It implements
// storage.Backend (see package storage for the contract) with the client
// of go.etcd.io/etcd/client/v3 only; tests start a real etcd member in
// process.
//
// Every key is under /badge/TRUST_DOMAIN/, so one cluster serves several
// trust domains. Values are the JSON records storage/bbolt stores:
//
//	entries/ID                         storage.Entry
//	keys/ID                            storage.Key
//	clients/ID                         storage.Client
//	nodes/NAME                         storage.Node
//	join-tokens/HASH                   storage.JoinToken
//	serials/EXPIRY/SERIAL              storage.Serial, by expiry: pruning deletes the front
//	serial-ids/SPIFFE_ID\x00EXPIRY/SERIAL  the same record, by SPIFFE ID
//	reservations/REPLICA/RUN/SEQ       {"not_after", "serials"}
//	runs/REPLICA                       RUN, under a lease: the replica is alive
//	revoked-ids/SPIFFE_ID              storage.Revocation
//	revoked-serials/SERIAL             storage.RevokedSerial
//	audit/SEQ                          storage.AuditRecord (SEQ: 20 digits)
//	meta/audit-head                    storage.AuditHead
//	meta/crl-number                    decimal
//	meta/schema                        the layout version, "1"
//
// EXPIRY is the NotAfter in 24 hex digits whose order is time order.
// A record written by a call that must recognise its own write when it
// repeats it (a create, a join token's use, the audit head, a revoked
// certificate...) has one more JSON field, "write_id", random per call;
// readers ignore it.
//
// What bbolt does in one transaction is a transaction here too, with
// comparisons on the mod revisions of what it read, so that it holds
// across servers: using a join token and recording its node (exactly one
// of concurrent uses wins); the audit head; the revocation-list number
// (strictly increasing across servers). Revoking an ID revokes the
// certificates read first, then writes the ID's record in a transaction
// that also reads the certificates recorded since, by any server, and
// revokes those too: none recorded before the ID's record is missed, and
// steady issuance to the ID cannot starve the revocation. Serial records
// are written by one committer in batches of up to MaxTxnOps/2 records
// per transaction.
//
// Reservations of serials are made per replica and run. Each run keeps
// runs/REPLICA under a lease; RevokeUnbound treats as abandoned the
// reservations of an earlier run of the same replica (a restart after a
// crash) and those of a replica whose lease expired.
//
// Every call has a deadline (Options.Timeout), and runs as attempts
// whose requests each have a shorter one (Options.AttemptTimeout): an
// attempt that fails because a member died, the leader changed or no
// leader is elected yet is run again after a backoff, so that losing one
// member of three returns no error. Every write is safe to repeat, even
// when an earlier attempt committed it and its answer was lost (see
// retry.go). When etcd cannot be reached within the deadline the error
// wraps storage.ErrUnavailable and names the endpoints.
//
// The server that leads (Lead) compacts etcd's history every
// Options.CompactInterval, to the revision it read one interval earlier
// (see compact.go): the serial records written and deleted at the rate
// of issuance would otherwise fill etcd's quota.
//
// What stays on each server's disk is what is per replica: the private
// key files and the replica's identity.
package etcd
