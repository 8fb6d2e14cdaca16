package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"sync"
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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return svidKey{}, fmt.Errorf("ca: generating SVID key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return svidKey{}, fmt.Errorf("ca: encoding SVID key: %w", err)
	}
	return svidKey{key: key, der: der}, nil
}

// keyPool generates SVID keys ahead of demand in one background goroutine.
// Invariants: every key is generated for the pool alone and handed out by
// take at most once (a channel receive), never logged or stored; the pool
// holds at most its capacity; after close no key is generated and the keys
// left are dropped. An empty pool does not make a caller wait for the
// generator: take generates inline.
type keyPool struct {
	keys chan svidKey
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// newKeyPool starts a pool of size keys.
func newKeyPool(size int) *keyPool {
	p := &keyPool{keys: make(chan svidKey, size), stop: make(chan struct{}), done: make(chan struct{})}
	go p.fill()
	return p
}

// fill keeps the pool full until close. A failed generation ends the
// filling; take then generates inline and reports the error to its caller.
func (p *keyPool) fill() {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		k, err := newSVIDKey()
		if err != nil {
			return
		}
		select {
		case p.keys <- k:
		case <-p.stop:
			return
		}
	}
}

// take returns a key no one else has been or will be given. A nil pool
// generates every key inline.
func (p *keyPool) take() (svidKey, error) {
	if p == nil {
		return newSVIDKey()
	}
	select {
	case k := <-p.keys:
		return k, nil
	default:
		return newSVIDKey()
	}
}

// close stops the generator, waits for it and drops the keys left.
func (p *keyPool) close() {
	if p == nil {
		return
	}
	p.once.Do(func() { close(p.stop) })
	<-p.done
	for {
		select {
		case <-p.keys:
		default:
			return
		}
	}
}
