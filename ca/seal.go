package ca

// The shared root key of servers that share a store (storage/etcd):
// without a key manager every server must sign intermediates with the
// same root, so its private key is kept in its record, sealed under a
// key-encryption key (KEK) the operator gives each server
// (Config.RootKEK): AES-256-GCM with a random nonce, and the record's ID
// as additional data, so that a sealed key moved to another record does
// not open. Only the root is sealed; intermediates and JWT keys are each
// server's own, in its key directory, and never leave it.

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/storage"
)

// RootKEKSize is the size of a root key-encryption key: 32 bytes, an
// AES-256 key.
const RootKEKSize = 32

// ErrSealed is wrapped by the errors of a sealed key that does not open:
// the wrong key-encryption key, or a record altered.
var ErrSealed = errors.New("ca: sealed root key")

// ReadRootKEK reads a key-encryption key file: exactly RootKEKSize bytes
// (such as `head -c 32 /dev/urandom`), a regular file owned by this
// process's uid that no one else may read.
func ReadRootKEK(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("ca: root key-encryption key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ca: root key-encryption key: %w", err)
	}
	switch owner, uid := localtrust.OwnerOf(fi), uint32(os.Geteuid()); {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("ca: root key-encryption key %s is not a regular file", path)
	case owner != uid:
		return nil, fmt.Errorf("ca: %w: root key-encryption key %s is owned by uid %d; it must be owned by uid %d, this server's",
			localtrust.ErrUntrustedPath, path, owner, uid)
	case fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("ca: root key-encryption key %s has mode %#o; it must be readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	}
	kek, err := io.ReadAll(io.LimitReader(f, RootKEKSize+1))
	if err != nil {
		return nil, fmt.Errorf("ca: root key-encryption key %s: %w", path, err)
	}
	if len(kek) != RootKEKSize {
		return nil, fmt.Errorf("ca: root key-encryption key %s holds %d bytes, want exactly %d random bytes (head -c 32 /dev/urandom > %s)",
			path, len(kek), RootKEKSize, path)
	}
	return kek, nil
}

// sealKey returns priv, PKCS#8 DER, sealed under kek for the record id.
func sealKey(kek []byte, id string, priv crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(der)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, der, []byte(id)), nil
}

// unsealKey opens the sealed private key of rec under kek and checks it
// against pub.
func unsealKey(kek []byte, rec storage.Key, pub crypto.PublicKey) (crypto.Signer, error) {
	if kek == nil {
		return nil, fmt.Errorf("%w: key %s is sealed in its record; this server needs the root key-encryption key (--root-kek)", ErrSealed, rec.ID)
	}
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, err
	}
	if len(rec.Sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: key %s: %d bytes is too short", ErrSealed, rec.ID, len(rec.Sealed))
	}
	n := aead.NonceSize()
	der, err := aead.Open(nil, rec.Sealed[:n], rec.Sealed[n:], []byte(rec.ID))
	if err != nil {
		return nil, fmt.Errorf("%w: key %s does not open: the root key-encryption key is not the one it was sealed with, or the record was altered", ErrSealed, rec.ID)
	}
	v, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %v", ErrSealed, rec.ID, err)
	}
	signer, ok := v.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: key %s: %T is not a signing key", ErrSealed, rec.ID, v)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if p, ok := signer.Public().(equaler); !ok || !p.Equal(pub) {
		return nil, fmt.Errorf("%w: key %s does not match the public key of its record", ErrSealed, rec.ID)
	}
	return signer, nil
}

func newAEAD(kek []byte) (cipher.AEAD, error) {
	if len(kek) != RootKEKSize {
		return nil, fmt.Errorf("%w: the key-encryption key has %d bytes, want %d", ErrSealed, len(kek), RootKEKSize)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// newSealedKey generates a P-256 key of kind and returns its signer and
// its record, the private key sealed in it under kek.
func newSealedKey(cfg *Config, kind string) (crypto.Signer, storage.Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, storage.Key{}, fmt.Errorf("ca: %s key: generating: %w", kind, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, storage.Key{}, err
	}
	id := caKeyID(kind, pub)
	sealed, err := sealKey(cfg.RootKEK, id, priv)
	if err != nil {
		return nil, storage.Key{}, fmt.Errorf("ca: %s key: sealing: %w", kind, err)
	}
	return priv, storage.Key{ID: id, Kind: kind, PublicKey: pub, PrivateRef: storage.SealedRef, Sealed: sealed, CreatedAt: cfg.Time()}, nil
}

// openSigner returns the signer of rec: unsealed from the record, or
// opened in the key store; checked against pub.
func (c *Config) openSigner(rec storage.Key, pub crypto.PublicKey) (crypto.Signer, error) {
	if rec.PrivateRef == storage.SealedRef {
		return unsealKey(c.RootKEK, rec, pub)
	}
	return c.keys.open(keyRef{rec.ID, rec.PrivateRef}, pub)
}
