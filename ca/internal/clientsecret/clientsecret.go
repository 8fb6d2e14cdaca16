// Package clientsecret makes and checks the secrets of OAuth clients: 32
// random bytes shown once, stored only as an argon2id hash with a
// per-client salt, in the PHC string format
// ($argon2id$v=19$m=19456,t=2,p=1$SALT$HASH).
//
// It is the one place that knows how a secret is hashed: the authority
// hashes a new client's secret with New (reached from the admin API) and
// checks a presented one with Check (reached from the public listener's
// token endpoint).
//
// Invariant: Check costs one argon2id hash whatever it is given (a
// matching secret, a wrong one, no stored hash, an unreadable one), and
// compares in constant time, so its timing tells nothing about which.
package clientsecret

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Client secrets and their hash.
const (
	secretBytes = 32
	saltBytes   = 16
	// Argon2id parameters: OWASP's recommended minimum (19 MiB, two
	// passes, one lane), about 20-40 ms of one core per check.
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

// New returns a fresh secret and its hash, the only form to store.
func New() (secret, hash string, err error) {
	raw := make([]byte, secretBytes)
	salt := make([]byte, saltBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", "", fmt.Errorf("generating client secret: %w", err)
	}
	if _, err := rand.Read(salt); err != nil {
		return "", "", fmt.Errorf("generating salt: %w", err)
	}
	secret = base64.RawURLEncoding.EncodeToString(raw)
	return secret, encodePHC(defaultArgon, salt, hashSecret(secret, salt, defaultArgon)), nil
}

// Check reports whether secret matches hash. An empty hash (no such
// client) costs the same as a real one and does not match. A hash that
// cannot be read does not match either, and its error is returned so the
// caller can report the damaged record.
func Check(hash, secret string) (bool, error) {
	if hash == "" {
		hash = dummyHash
	}
	p, salt, want, err := decodePHC(hash)
	if err != nil {
		p, salt, want, _ = decodePHC(dummyHash)
	}
	got := hashSecret(secret, salt, p)
	return subtle.ConstantTimeCompare(got, want) == 1 && err == nil, err
}

type argonParams struct {
	time    uint32
	memory  uint32
	threads uint8
}

var defaultArgon = argonParams{time: argonTime, memory: argonMemory, threads: argonThreads}

func hashSecret(secret string, salt []byte, p argonParams) []byte {
	return argon2.IDKey([]byte(secret), salt, p.time, p.memory, p.threads, argonKeyLen)
}

// encodePHC writes an argon2id hash in the PHC string format.
func encodePHC(p argonParams, salt, hash []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.memory, p.time, p.threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(hash))
}

// decodePHC reads an argon2id PHC string, refusing parameters outside
// sane bounds so that a damaged record cannot make a check cost minutes.
func decodePHC(s string) (argonParams, []byte, []byte, error) {
	var p argonParams
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, errors.New("not an argon2id PHC string")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, nil, nil, fmt.Errorf("argon2 version %q", parts[2])
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &p.threads); err != nil {
		return p, nil, nil, fmt.Errorf("argon2 parameters %q: %v", parts[3], err)
	}
	if p.memory < 8*1024 || p.memory > 1<<20 || p.time < 1 || p.time > 10 || p.threads < 1 || p.threads > 16 {
		return p, nil, nil, fmt.Errorf("argon2 parameters %q out of bounds", parts[3])
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return p, nil, nil, errors.New("argon2 salt")
	}
	hash, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(hash) != argonKeyLen {
		return p, nil, nil, errors.New("argon2 hash")
	}
	return p, salt, hash, nil
}

// dummyHash is checked against for unknown clients, so that they cost
// the same as known ones.
var dummyHash = encodePHC(defaultArgon, make([]byte, saltBytes), make([]byte, argonKeyLen))
