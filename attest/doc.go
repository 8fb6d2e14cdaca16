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
// a busy binary is hashed once. Hashing is bounded: one executable at a
// time, server-wide, and Config.HashBudget bytes per uid per minute (1 GiB
// by default), so a user who keeps changing a large executable is refused
// (ErrHashBudget) instead of keeping a core busy. Only Linux is supported;
// elsewhere PeerFromConn, Attest and Verify fail with errors.ErrUnsupported.
//
// # Security invariant
//
// Every selector in a Set returned by Attest describes the process that
// connected, as it was when it connected, and comes from the kernel, never
// from the caller: uid and gid from SO_PEERCRED, everything else from
// /proc/<pid> of that process.
//
// PIDs are reused, so /proc/<pid> alone could describe another process.
// A Peer therefore holds a pidfd of the connecting process (SO_PEERPIDFD,
// which names the process that called connect(2)), and Attest, after its
// last read of /proc, checks through it that the process is still alive. A
// live process keeps its PID, so every file read was that process's; if it
// has exited, Attest returns ErrPeerGone and no selectors. A zombie (exited,
// not yet reaped by its parent, which an attacker's parent need never do)
// keeps its PID and passes the pidfd check, so Verify also asks /proc
// whether the process still has an executable or is in state Z.
//
// A process can also exec(2) another binary and keep the connection, or
// pass it to another process and exit. PeerFromConn therefore records the
// executable the process runs when the connection is accepted (the file
// /proc/<pid>/exe leads to: device, inode and birth time; one statx(2)).
// Verify checks that the process is alive and runs that same file, and
// Attest ends with Verify: after an exec, Attest and Verify return
// ErrPeerChanged. unix:path and unix:sha256 are read from a descriptor of
// the executable once it is checked to be that very file, so they describe
// it even if the process execs (and execs back) while Attest runs. The
// server calls Verify again before everything it sends on a connection, so
// an identity goes to no process but the one that connected, and not to it
// after an exec.
//
// Attest never returns a Set with more than the process has. It may return
// fewer: selectors the server may not read (a server that is not root gets
// EACCES for other users' /proc/<pid>/exe, and for all of /proc/<pid> when
// /proc is mounted with hidepid), and unix:path and unix:sha256 of a process
// whose executable could not be recorded at connect, are left out, with a
// rate-limited log line. This is safe because matching is monotone: an
// entry matches when all of its selectors are in the caller's Set, there
// are no negative selectors, and an entry with no selectors matches no
// one; so a smaller Set can only match fewer entries, never another one.
// A non-root server can thus serve unix:uid entries to every user while
// its unix:path entries match only its own uid's processes.
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
//   - A selector proves what the kernel says about the process, not who
//     wrote the code that runs in it. Any uid that may execute a binary
//     can run it with code of its own inside (LD_PRELOAD for a dynamically
//     linked binary, ptrace where permitted, or a copy of its bytes, which
//     has the same unix:sha256), and can make any path name its own binary
//     in a mount namespace of its own. So unix:path and unix:sha256 narrow
//     an entry to a program; they never keep out a user who may run that
//     program. Entries should pin a uid or gid (or a system service or a
//     container) that the users to keep out do not have.
//   - The executable is recorded when the server accepts the connection,
//     not at connect(2). A process that connects and execs another binary
//     before the server accepts (microseconds when the server is idle,
//     longer when its accept queue is long) is recorded with the new
//     binary. Nothing in /proc tells an exec that happened after connect(2)
//     from one before it.
//   - On kernels older than 6.5 (no SO_PEERPIDFD) the pidfd is taken with
//     pidfd_open(2) when PeerFromConn runs, which leaves a short window for
//     PID reuse between connect(2) and that call.
//   - /proc (Config.ProcRoot) must belong to the PID namespace the
//     connections are accepted in.
package attest
