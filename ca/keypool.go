package ca

import (
	"bytes"
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
	der, err := pkcs8().marshal(key)
	if err != nil {
		return svidKey{}, fmt.Errorf("ca: encoding SVID key: %w", err)
	}
	return svidKey{key: key, der: der}, nil
}

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

// pkcs8 is the encoder of the SVID keys, made on first use.
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
