package ca

import (
	"crypto/ecdsa"
	"fmt"

	"github.com/badge-dev/badge/internal/keypool"
)

// svidKeyPoolSize is how many SVID keys the authority keeps generated ahead
// of demand: enough to absorb a burst of fresh connections without key
// generation on their path, small enough that few private keys wait in
// memory.
const svidKeyPoolSize = 16

// svidKey is a fresh P-256 key and its PKCS#8 encoding.
type svidKey struct {
	key *ecdsa.PrivateKey
	der []byte
}

// newSVIDKey generates a key for one X.509-SVID.
func newSVIDKey() (svidKey, error) {
	k, err := keypool.NewP256()
	if err != nil {
		return svidKey{}, fmt.Errorf("ca: SVID key: %w", err)
	}
	return svidKey{key: k.Private, der: k.PKCS8}, nil
}

// keyPool generates SVID keys ahead of demand in one background goroutine,
// with the invariants of keypool.Pool: every key is handed out by take at
// most once, never logged or stored; after close no key is generated and
// the keys left are dropped; an empty pool generates inline.
type keyPool struct {
	keys *keypool.Pool[svidKey]
	stop func()
}

// newKeyPool starts a pool of size keys.
func newKeyPool(size int) *keyPool {
	p := keypool.New(size, newSVIDKey)
	return &keyPool{keys: p, stop: p.Start()}
}

// take returns a key no one else has been or will be given. A nil pool
// generates every key inline.
func (p *keyPool) take() (svidKey, error) {
	if p == nil {
		return newSVIDKey()
	}
	return p.keys.Take()
}

// close stops the generator, waits for it and drops the keys left.
func (p *keyPool) close() {
	if p != nil {
		p.stop()
	}
}
