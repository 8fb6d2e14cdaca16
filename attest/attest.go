package attest

// CONTRACT STUB: the exported API below is fixed; the attest helper implements it.

import (
	"net"
)

// Peer is the process on the other end of a Unix-socket connection, as the
// kernel reported it when the connection was accepted.
type Peer struct {
	PID int32
	UID uint32
	GID uint32
	// unexported: pidfd
}

// PeerFromConn reads the peer credentials (SO_PEERCRED) and a pidfd
// (SO_PEERPIDFD, else pidfd_open) of an accepted Unix-socket connection.
func PeerFromConn(c *net.UnixConn) (*Peer, error) { panic("todo") }

// Close releases the pidfd.
func (p *Peer) Close() error { panic("todo") }

// Alive reports whether the process that connected is still running.
func (p *Peer) Alive() bool { panic("todo") }

// Selector is one fact about a caller, such as unix:uid:1001.
type Selector struct {
	Type  string // "unix", "systemd", "docker"
	Key   string // "uid", "user", "gid", ...
	Value string
}

// ParseSelector parses TYPE:KEY:VALUE, validating type, key and value.
func ParseSelector(s string) (Selector, error) { panic("todo") }

// String returns TYPE:KEY:VALUE.
func (s Selector) String() string { return s.Type + ":" + s.Key + ":" + s.Value }

// Kind is a bit set of selector kinds; the attestor computes only the kinds asked for.
type Kind uint16

const (
	KindUID Kind = 1 << iota
	KindUser
	KindGID
	KindGroup
	KindSupplementaryGID
	KindPath
	KindSHA256
	KindSystemdUnit
	KindDockerContainer

	KindAll = KindUID | KindUser | KindGID | KindGroup | KindSupplementaryGID | KindPath | KindSHA256 | KindSystemdUnit | KindDockerContainer
)

// KindOf returns the kind of a (valid) selector.
func KindOf(s Selector) Kind { panic("todo") }

// Set is the set of selectors of one caller.
type Set map[Selector]struct{}

// Matches reports whether every selector in want is in s.
func (s Set) Matches(want []Selector) bool { panic("todo") }

// Config configures an Attestor. The zero value reads the real /proc.
type Config struct {
	ProcRoot string // default "/proc"
}

// Attestor turns peers into selectors, caching user/group names and
// executable hashes (by file identity).
type Attestor struct{}

func New(cfg Config) *Attestor { panic("todo") }

// Attest returns the selectors of kinds for p, and verifies afterwards that
// the process that connected is still the one inspected.
func (a *Attestor) Attest(p *Peer, kinds Kind) (Set, error) { panic("todo") }
