// Package untrusted shapes values a caller sent before they are quoted in
// an error or a log record, so that a caller cannot make either as long
// as it likes.
//
// The SDK keeps its own copy (sdk/jwt.go truncated): sdk imports nothing
// else from this module.
package untrusted

// MaxLen is the most bytes of a value that Clip keeps.
const MaxLen = 64

// Clip returns s, cut to its first MaxLen bytes and marked with "..." if
// it is longer.
func Clip(s string) string {
	if len(s) > MaxLen {
		return s[:MaxLen] + "..."
	}
	return s
}
