// Package keypool makes private keys ahead of demand, so that issuing an
// X.509-SVID does not wait for key generation, and encodes P-256 keys as
// PKCS#8 without the reflection-driven ASN.1 encoder: what the server's
// SVID keys (package ca) and the workload keys of `badge agent` share.
//
// Invariants of a Pool: every item is generated for the pool alone and
// handed out by Take at most once (a channel receive), never logged or
// stored; the pool holds at most its size; after stop, no item is
// generated and the items left are dropped. An empty pool does not make a
// caller wait for the generator: Take generates inline.
package keypool

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"sync"
)

// Pool holds items (keys, with whatever goes with them) generated ahead of
// demand by a background goroutine.
type Pool[T any] struct {
	items chan T
	gen   func() (T, error)
}

// New returns an empty pool of size items made by gen; Start fills it.
func New[T any](size int, gen func() (T, error)) *Pool[T] {
	return &Pool[T]{items: make(chan T, size), gen: gen}
}

// Take returns an item no one else has been or will be given: one from the
// pool, or, if it is empty, one generated now.
func (p *Pool[T]) Take() (T, error) {
	select {
	case it := <-p.items:
		return it, nil
	default:
		return p.gen()
	}
}

// Len returns how many items the pool holds now.
func (p *Pool[T]) Len() int { return len(p.items) }

// Start keeps the pool full in a new goroutine until stop is called. A
// failed generation ends the filling: Take then generates inline and
// reports the error to its caller. stop waits for the goroutine, drops the
// items left, and may be called more than once.
func (p *Pool[T]) Start() (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		p.fill(quit)
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
		p.drain()
	}
}

// fill generates items until quit closes or generation fails.
func (p *Pool[T]) fill(quit <-chan struct{}) {
	for {
		select {
		case <-quit:
			return
		default:
		}
		it, err := p.gen()
		if err != nil {
			return
		}
		select {
		case p.items <- it:
		case <-quit:
			return
		}
	}
}

// drain drops the items the pool holds.
func (p *Pool[T]) drain() {
	for {
		select {
		case <-p.items:
		default:
			return
		}
	}
}

// Key is a fresh P-256 key and its PKCS#8 encoding (DER).
type Key struct {
	Private *ecdsa.PrivateKey
	PKCS8   []byte
}

// NewP256 generates a P-256 key and encodes it.
func NewP256() (Key, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("generating a P-256 key: %w", err)
	}
	der, err := MarshalPKCS8(key)
	if err != nil {
		return Key{}, fmt.Errorf("encoding a P-256 key: %w", err)
	}
	return Key{Private: key, PKCS8: der}, nil
}

// MarshalPKCS8 returns the PKCS#8 encoding of key, the bytes of
// x509.MarshalPKCS8PrivateKey: from a template for a P-256 key, from
// x509.MarshalPKCS8PrivateKey for any other.
func MarshalPKCS8(key *ecdsa.PrivateKey) ([]byte, error) { return pkcs8().marshal(key) }

// pkcs8P256 encodes P-256 private keys as x509.MarshalPKCS8PrivateKey does,
// without its reflection-driven ASN.1 encoder on every key. The PKCS#8
// encoding of a P-256 key has one length whatever the key: the private
// scalar (32 bytes) and the uncompressed public point (65 bytes) sit at
// fixed offsets of x509.MarshalPKCS8PrivateKey's encoding of a reference
// key, and are copied into that template. Invariant: the bytes are
// x509.MarshalPKCS8PrivateKey's for every P-256 key (TestPKCS8P256, and
// newPKCS8P256 re-encodes the reference key through the template); a
// template that cannot prove it is not used (tmpl nil) and every key is
// encoded by x509.MarshalPKCS8PrivateKey.
type pkcs8P256 struct {
	tmpl           []byte
	scalar, public int // offsets of the private scalar and the public point
}

// pkcs8 is the encoder, made on first use.
var pkcs8 = sync.OnceValue(newPKCS8P256)

// newPKCS8P256 finds the template in the encoding of a fresh reference key.
func newPKCS8P256() pkcs8P256 {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pkcs8P256{}
	}
	der, errDER := x509.MarshalPKCS8PrivateKey(key)
	d, errD := key.Bytes()
	q, errQ := key.PublicKey.Bytes()
	if errDER != nil || errD != nil || errQ != nil || len(d) != 32 || len(q) != 65 {
		return pkcs8P256{}
	}
	p := pkcs8P256{scalar: bytes.Index(der, d), public: bytes.Index(der, q)}
	if p.scalar < 0 || p.public < 0 || bytes.Count(der, d) != 1 || bytes.Count(der, q) != 1 {
		return pkcs8P256{}
	}
	p.tmpl = bytes.Clone(der)
	clear(p.tmpl[p.scalar : p.scalar+32])
	clear(p.tmpl[p.public : p.public+65])
	if again, err := p.marshal(key); err != nil || !bytes.Equal(again, der) {
		return pkcs8P256{}
	}
	return p
}

// marshal returns the PKCS#8 DER encoding of key.
func (p pkcs8P256) marshal(key *ecdsa.PrivateKey) ([]byte, error) {
	if p.tmpl == nil || key.Curve != elliptic.P256() {
		return x509.MarshalPKCS8PrivateKey(key)
	}
	d, err := key.Bytes()
	if err != nil {
		return nil, err
	}
	q, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	if len(d) != 32 || len(q) != 65 {
		return x509.MarshalPKCS8PrivateKey(key)
	}
	der := bytes.Clone(p.tmpl)
	copy(der[p.scalar:], d)
	copy(der[p.public:], q)
	return der, nil
}
