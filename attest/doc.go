// Package attest tells who is calling on a Unix socket: it turns an accepted
// connection into a Peer (pid, uid, gid and a pidfd, from the kernel), the
// Peer into a Set of selectors, and matches registration entries against
// that Set.
//
// # Model
//
// A selector is one fact about a caller, written TYPE:KEY:VALUE:
//
//	unix:uid:N                  uid at connect(2) time (SO_PEERCRED)
//	unix:user:NAME              name of that uid
//	unix:gid:N                  primary gid at connect(2) time (SO_PEERCRED)
//	unix:group:NAME             name of that gid
//	unix:supplementary_gid:N    one per supplementary group (/proc/<pid>/status)
//	unix:path:/abs/exe          the executable (/proc/<pid>/exe)
//	unix:sha256:HEX             SHA-256 of the executable that is running
//	systemd:unit:NAME.service   the system service the process belongs to
//	docker:container_id:ID      the Docker container (64 hex digits)
//
// ParseSelector validates a selector strictly (see there for each value's
// canonical form), so that equal facts are equal values and Set.Matches can
// be a plain set lookup. An entry matches a caller when all of its
// selectors are in the caller's Set; an entry with no selectors matches no
// one.
//
// The server reads a Peer once per connection, decides which kinds of
// selectors its entries use (KindsOf), and asks the Attestor for just those:
//
//	p, err := attest.PeerFromConn(conn)
//	if err != nil { ... }
//	defer p.Close()
//	set, err := attestor.Attest(p, attest.KindsOf(selectorsOfAllEntries))
//	if err != nil { ... } // deny
//	if set.Matches(entry.Selectors) { ... }
//
// The Attestor caches user and group names for Config.NameTTL and
// executable hashes by file identity (device, inode, size, mtime, ctime), so
// a busy binary is hashed once. Only Linux is supported; elsewhere
// PeerFromConn and Attest fail with errors.ErrUnsupported.
//
// # Security invariant
//
// Every selector in a Set returned by Attest describes the process that
// connected, and comes from the kernel, never from the caller: uid and gid
// from SO_PEERCRED, everything else from /proc/<pid> of that process. PIDs
// are reused, so /proc/<pid> alone could describe another process. Attest
// therefore holds a pidfd of the connecting process (SO_PEERPIDFD, which
// names the process that called connect(2)) and, after its last read of /proc,
// checks through it that the process is still alive. A live process keeps
// its PID, so every file read was that process's; if it has exited, Attest
// returns ErrPeerGone and no selectors. Attest never returns a partial Set.
//
// Facts the kernel does not reliably attach to a process are left out rather
// than guessed. A deleted executable has no unix:path. For systemd:unit and
// docker:container_id only the outermost, system-assigned part of a cgroup
// path is trusted: a service with Delegate=yes, a user's own systemd and a
// container can all create cgroups with any name below their own. So, as
// systemd itself does, the unit is the first component after the leading
// slices: /system.slice/web.service/worker is web.service, and a user unit
// /user.slice/user-1000.slice/user@1000.service/app.slice/web.service is
// user@1000.service, never web.service. A container is recognised only as
// /docker/<id> (cgroupfs driver) or as that first component
// docker-<id>.scope (systemd driver). If cgroup hierarchies disagree, the
// selector is left out.
//
// # Limits of what a selector proves
//
//   - Attestation describes the process at the moment of attestation. A
//     process can connect, pass the socket to another process and then
//     exec a different binary; no socket-based attestor can tell. Entries
//     should therefore pin a uid (or a container), not only a path or hash.
//   - unix:path is the path in the process's own mount namespace. A user
//     who can create mount namespaces can make any path name its own
//     binary, so a path is meaningful only together with unix:uid, or
//     combined with unix:sha256.
//   - On kernels older than 6.5 (no SO_PEERPIDFD) the pidfd is taken with
//     pidfd_open(2) when PeerFromConn runs, which leaves a short window for
//     PID reuse between connect(2) and that call.
//   - /proc (Config.ProcRoot) must belong to the PID namespace the
//     connections are accepted in.
package attest
