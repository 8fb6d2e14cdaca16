package attest

import (
	"cmp"
	"errors"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Selector is one fact about a caller, such as unix:uid:1001.
//
// A Selector obtained from ParseSelector or from Attestor.Attest is valid:
// its Type and Key are known and its Value is in canonical form, so two
// selectors describe the same fact exactly when they are equal.
type Selector struct {
	Type  string // "unix", "systemd", "docker"
	Key   string // "uid", "user", "gid", ...
	Value string
}

// String returns TYPE:KEY:VALUE.
func (s Selector) String() string { return s.Type + ":" + s.Key + ":" + s.Value }

// Errors returned (inside a *SelectorError) by ParseSelector. Every one of
// them also matches ErrInvalidSelector with errors.Is.
var (
	ErrInvalidSelector = errors.New("attest: invalid selector")
	ErrSelectorSyntax  = errors.New("attest: selector is not TYPE:KEY:VALUE")
	ErrUnknownType     = errors.New("attest: unknown selector type")
	ErrUnknownKey      = errors.New("attest: unknown selector key for its type")
	ErrEmptyValue      = errors.New("attest: empty selector value")
	ErrInvalidValue    = errors.New("attest: invalid selector value")
)

// SelectorError reports why a selector is not valid. Err is one of
// ErrSelectorSyntax, ErrUnknownType, ErrUnknownKey, ErrEmptyValue and
// ErrInvalidValue; errors.Is(err, ErrInvalidSelector) holds for all of them.
type SelectorError struct {
	Input  string // the text given to ParseSelector
	Err    error  // the class of the problem (see above)
	Reason string // what exactly is wrong, for people
}

func (e *SelectorError) Error() string {
	in := e.Input
	if len(in) > 128 {
		in = in[:128] + "..."
	}
	return "attest: invalid selector " + strconv.Quote(in) + ": " + e.Reason
}

// Unwrap returns the class of the problem, one of the Err* sentinels.
func (e *SelectorError) Unwrap() error { return e.Err }

// Is makes every SelectorError match ErrInvalidSelector.
func (e *SelectorError) Is(target error) bool { return target == ErrInvalidSelector }

// Kind is a bit set of selector kinds; the attestor computes only the kinds asked for.
type Kind uint16

const (
	KindUID              Kind = 1 << iota // unix:uid:N
	KindUser                              // unix:user:NAME (of the uid)
	KindGID                               // unix:gid:N (primary group)
	KindGroup                             // unix:group:NAME (of the primary gid)
	KindSupplementaryGID                  // unix:supplementary_gid:N, one per group
	KindPath                              // unix:path:/abs/exe
	KindSHA256                            // unix:sha256:HEX of the executable
	KindSystemdUnit                       // systemd:unit:NAME.service
	KindDockerContainer                   // docker:container_id:ID

	KindAll = KindUID | KindUser | KindGID | KindGroup | KindSupplementaryGID | KindPath | KindSHA256 | KindSystemdUnit | KindDockerContainer
)

// kindNames are the TYPE:KEY of each kind, in bit order.
var kindNames = [...]string{
	"unix:uid", "unix:user", "unix:gid", "unix:group", "unix:supplementary_gid",
	"unix:path", "unix:sha256", "systemd:unit", "docker:container_id",
}

// String lists the kinds in k as TYPE:KEY, comma separated.
func (k Kind) String() string {
	var b strings.Builder
	for i, name := range kindNames {
		if k&(1<<i) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(",")
		}
		b.WriteString(name)
	}
	return b.String()
}

// Selector types and keys.
const (
	typeUnix    = "unix"
	typeSystemd = "systemd"
	typeDocker  = "docker"

	keyUID              = "uid"
	keyUser             = "user"
	keyGID              = "gid"
	keyGroup            = "group"
	keySupplementaryGID = "supplementary_gid"
	keyPath             = "path"
	keySHA256           = "sha256"
	keyUnit             = "unit"
	keyContainerID      = "container_id"
)

// kindOf maps a type and key to its kind, or 0 if the pair is unknown. The
// second result reports whether the type itself is known.
func kindOf(typ, key string) (Kind, bool) {
	switch typ {
	case typeUnix:
		switch key {
		case keyUID:
			return KindUID, true
		case keyUser:
			return KindUser, true
		case keyGID:
			return KindGID, true
		case keyGroup:
			return KindGroup, true
		case keySupplementaryGID:
			return KindSupplementaryGID, true
		case keyPath:
			return KindPath, true
		case keySHA256:
			return KindSHA256, true
		}
		return 0, true
	case typeSystemd:
		if key == keyUnit {
			return KindSystemdUnit, true
		}
		return 0, true
	case typeDocker:
		if key == keyContainerID {
			return KindDockerContainer, true
		}
		return 0, true
	}
	return 0, false
}

// KindOf returns the kind of a (valid) selector, or 0 if its type and key
// are unknown. It does not look at the value.
func KindOf(s Selector) Kind {
	k, _ := kindOf(s.Type, s.Key)
	return k
}

// KindsOf returns the kinds of all the selectors: what an attestor must
// compute so that entries with these selectors can match.
func KindsOf(sels []Selector) Kind {
	var k Kind
	for _, s := range sels {
		k |= KindOf(s)
	}
	return k
}

// ParseSelector parses TYPE:KEY:VALUE, validating type, key and value.
//
// Only the first two colons separate fields, so a value may contain ':'
// (paths, systemd unit names). Values must be in canonical form:
//
//	unix:uid:N, unix:gid:N, unix:supplementary_gid:N
//	    decimal 0..4294967294 without sign or leading zeros
//	unix:user:NAME, unix:group:NAME
//	    printable UTF-8 without spaces, ':' or '/', not starting with '-', at most 256 bytes
//	unix:path:/abs/exe
//	    an absolute, clean path (as the kernel reports it) of printable UTF-8, under 4096 bytes
//	unix:sha256:HEX
//	    64 lowercase hexadecimal digits
//	systemd:unit:NAME.service
//	    a systemd service unit name (letters, digits, ":-_.\@"), at most 255 bytes
//	docker:container_id:ID
//	    the full 64-digit lowercase hexadecimal container ID; the 12-digit
//	    short form is rejected, because selectors match exactly and the
//	    cgroup always names the full ID
//
// Errors are *SelectorError.
func ParseSelector(s string) (Selector, error) {
	typ, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Selector{}, selErr(s, ErrSelectorSyntax, "want TYPE:KEY:VALUE, found no ':'")
	}
	key, val, ok := strings.Cut(rest, ":")
	if !ok {
		return Selector{}, selErr(s, ErrSelectorSyntax, "want TYPE:KEY:VALUE, found only one ':'")
	}
	if typ == "" {
		return Selector{}, selErr(s, ErrSelectorSyntax, "empty type")
	}
	if key == "" {
		return Selector{}, selErr(s, ErrSelectorSyntax, "empty key")
	}
	kind, knownType := kindOf(typ, key)
	if !knownType {
		return Selector{}, selErr(s, ErrUnknownType, "unknown type "+strconv.Quote(typ)+" (want unix, systemd or docker)")
	}
	if kind == 0 {
		return Selector{}, selErr(s, ErrUnknownKey, "unknown key "+strconv.Quote(key)+" for type "+typ)
	}
	if val == "" {
		return Selector{}, selErr(s, ErrEmptyValue, "empty value for "+typ+":"+key)
	}
	if reason := checkValue(kind, val); reason != "" {
		return Selector{}, selErr(s, ErrInvalidValue, typ+":"+key+": "+reason)
	}
	return Selector{Type: typ, Key: key, Value: val}, nil
}

func selErr(in string, err error, reason string) *SelectorError {
	return &SelectorError{Input: in, Err: err, Reason: reason}
}

// checkValue returns why v is not a valid value of kind k, or "".
func checkValue(k Kind, v string) string {
	switch k {
	case KindUID, KindGID, KindSupplementaryGID:
		if _, ok := parseID(v); !ok {
			return "want a decimal number from 0 to 4294967294 without sign or leading zeros"
		}
	case KindUser, KindGroup:
		if !validName(v) {
			return "want a name of printable UTF-8 without spaces, ':' or '/', not starting with '-', at most 256 bytes"
		}
	case KindPath:
		return pathProblem(v)
	case KindSHA256:
		if !isLowerHex(v, 64) {
			return "want 64 lowercase hexadecimal digits"
		}
	case KindSystemdUnit:
		if !validServiceUnit(v) {
			return "want a systemd service unit name such as foo.service or foo@bar.service (letters, digits, \":-_.\\@\", at most 255 bytes)"
		}
	case KindDockerContainer:
		if len(v) == 12 && isLowerHex(v, 12) {
			return "want the full 64-digit container ID, not the 12-digit short form"
		}
		if !isLowerHex(v, 64) {
			return "want 64 lowercase hexadecimal digits"
		}
	}
	return ""
}

func formatID(id uint32) string { return strconv.FormatUint(uint64(id), 10) }

// maxID is the largest valid uid or gid: (uid_t)-1 means "no id".
const maxID = 1<<32 - 2

// parseID parses a canonical decimal uid or gid.
func parseID[T ~string | ~[]byte](s T) (uint32, bool) {
	if len(s) == 0 || len(s) > 10 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n > maxID {
		return 0, false
	}
	return uint32(n), true
}

// validName reports whether s can be a user or group name selector value.
// The rule is deliberately wider than POSIX portable names (directory
// services hand out names like "user@domain") but rejects what would make
// logs or the TYPE:KEY:VALUE form ambiguous.
func validName(s string) bool {
	if s == "" || len(s) > 256 || s[0] == '-' || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == ':' || r == '/' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// maxPath is the longest path the kernel reports (PATH_MAX includes the NUL).
const maxPath = 4095

// pathProblem returns why p is not a valid path selector value, or "".
func pathProblem(p string) string {
	switch {
	case p[0] != '/':
		return "want an absolute path"
	case len(p) > maxPath:
		return "path longer than 4095 bytes"
	case !utf8.ValidString(p):
		return "path is not valid UTF-8"
	case path.Clean(p) != p:
		return "want a clean path (no //, /./, /../ or trailing /), as the kernel reports it; that is " + strconv.Quote(path.Clean(p))
	}
	for _, r := range p {
		if !unicode.IsPrint(r) && r != ' ' {
			return "path contains a control or non-printable character"
		}
	}
	return ""
}

func isLowerHex[T ~string | ~[]byte](s T, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// maxUnitName is systemd's UNIT_NAME_MAX without the NUL.
const maxUnitName = 255

// validUnitName reports whether s is a systemd unit name with the given
// suffix (".service", ".slice", ".scope"), following systemd's
// unit_name_is_valid: allowed characters, a non-empty prefix, and an
// optional "@instance" (or "@" for a template) before the suffix.
func validUnitName[T ~string | ~[]byte](s T, suffix string) bool {
	if len(s) <= len(suffix) || len(s) > maxUnitName || string(s[len(s)-len(suffix):]) != suffix {
		return false
	}
	if s[0] == '@' || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == ':', c == '-', c == '_', c == '.', c == '\\', c == '@':
		default:
			return false
		}
	}
	return true
}

func validServiceUnit[T ~string | ~[]byte](s T) bool { return validUnitName(s, ".service") }

// Set is the set of selectors of one caller.
type Set map[Selector]struct{}

// Matches reports whether every selector in want is in s. An empty want
// never matches: an entry without selectors must not match every caller.
func (s Set) Matches(want []Selector) bool {
	if len(want) == 0 {
		return false
	}
	for _, w := range want {
		if _, ok := s[w]; !ok {
			return false
		}
	}
	return true
}

// Selectors returns the selectors of s sorted by type, key and value, for
// stable output (logs, JSON, tests).
func (s Set) Selectors() []Selector {
	out := make([]Selector, 0, len(s))
	for sel := range s {
		out = append(out, sel)
	}
	slices.SortFunc(out, compareSelectors)
	return out
}

func compareSelectors(a, b Selector) int {
	if c := cmp.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return cmp.Compare(a.Value, b.Value)
}
