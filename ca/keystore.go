package ca

// Key custody: where the private keys of the CA and JWT keys live. By
// default each is a file in Config.KeyDir (PKCS#8 PEM, mode 0600, written
// atomically, refused if anyone else can read or replace it). With
// Config.KeyManager a key is generated in, and used from, a key manager
// of go.step.sm/crypto/kms (a PKCS#11 token: an HSM), and never leaves
// it: the daemon holds only signers, and the record's private key
// reference is the key's URI, without the PIN. The backend must be linked
// into the binary by its blank import (cmd/badge links PKCS#11).

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/uri"
)

// ErrKeyManager is wrapped by the errors of a key manager URI that cannot
// be used.
var ErrKeyManager = errors.New("ca: key manager")

// keyStore creates, opens and deletes the private keys of signing keys.
type keyStore interface {
	// create generates a P-256 key for a key of kind and returns its
	// signer and the reference to record; a key file is named by
	// fileName, from the PKIX DER public key.
	create(ctx context.Context, kind string, fileName func(pkix []byte) (string, error)) (crypto.Signer, string, error)
	// open returns the signer of rec, checked against pub.
	open(rec keyRef, pub crypto.PublicKey) (crypto.Signer, error)
	// remove deletes the private key of rec; one already gone is no error.
	remove(rec keyRef) error
	// owns reports whether ref is a reference of this store.
	owns(ref string) bool
	close() error
}

// keyRef is what a store needs of a key record.
type keyRef struct{ id, ref string }

// isKeyFile reports whether a private key reference names a file in the key
// directory (and not a key manager URI).
func isKeyFile(ref string) bool {
	return ref != "" && filepath.Base(ref) == ref && !strings.Contains(ref, ":")
}

// fileStore keeps each private key in a file of the key directory.
type fileStore struct{ dir string }

func (s fileStore) create(_ context.Context, _ string, fileName func([]byte) (string, error)) (crypto.Signer, string, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generating: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, "", err
	}
	file, err := fileName(pub)
	if err != nil {
		return nil, "", err
	}
	if err := writeKeyFile(s.dir, file, priv); err != nil {
		return nil, "", err
	}
	return priv, file, nil
}

func (s fileStore) open(rec keyRef, pub crypto.PublicKey) (crypto.Signer, error) {
	return readKeyFile(s.dir, rec.id, rec.ref, pub)
}

func (s fileStore) remove(rec keyRef) error {
	if !isKeyFile(rec.ref) {
		return nil
	}
	if err := os.Remove(filepath.Join(s.dir, rec.ref)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ca: removing the key file of %s: %w", rec.id, err)
	}
	return nil
}

func (fileStore) owns(ref string) bool { return isKeyFile(ref) }
func (fileStore) close() error         { return nil }

// kmsStore keeps the private keys in a key manager of go.step.sm/crypto/kms.
type kmsStore struct {
	km     apiv1.KeyManager
	scheme string
	base   string // the reference prefix: scheme and the path attributes of the URI, without the PIN
}

// openKeyStore returns the store of Config.KeyManager: files in KeyDir
// when it is empty, else the key manager it names.
func openKeyStore(ctx context.Context, c *Config) (keyStore, error) {
	if c.KeyManager == "" {
		return fileStore{dir: c.KeyDir}, nil
	}
	base, err := CheckKeyManager(c.KeyManager)
	if err != nil {
		return nil, err
	}
	km, err := kms.New(ctx, apiv1.Options{URI: c.KeyManager})
	if err != nil {
		return nil, fmt.Errorf("%w: opening %s: %v", ErrKeyManager, base, err)
	}
	return &kmsStore{km: km, scheme: strings.SplitN(base, ":", 2)[0], base: base}, nil
}

// CheckKeyManager checks a Config.KeyManager URI: a PKCS#11 URI naming its
// token (pkcs11:module-path=...;token=...?pin-value=... or pin-source=...).
// It returns the URI without its query (where the PIN is), fit for logs.
func CheckKeyManager(raw string) (string, error) {
	u, err := uri.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w %q: not a key manager URI: %v", ErrKeyManager, redactQuery(raw), err)
	}
	switch u.Scheme {
	case "pkcs11":
		if u.Get("token") == "" && u.Get("serial") == "" && u.Get("slot-id") == "" {
			return "", fmt.Errorf("%w %q: a pkcs11 URI needs token, serial or slot-id", ErrKeyManager, redactQuery(raw))
		}
		if u.Get("id") != "" || u.Get("object") != "" {
			return "", fmt.Errorf("%w %q: name the token, not a key (no id or object): badge names its keys", ErrKeyManager, redactQuery(raw))
		}
	default:
		return "", fmt.Errorf("%w %q: unsupported type %q (this badge supports pkcs11; files in the data dir without --key-manager)",
			ErrKeyManager, redactQuery(raw), u.Scheme)
	}
	return redactQuery(raw), nil
}

// redactQuery drops the query of a URI, where key managers take the PIN.
func redactQuery(raw string) string {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		return raw[:i]
	}
	return raw
}

func (s *kmsStore) create(_ context.Context, kind string, _ func([]byte) (string, error)) (crypto.Signer, string, error) {
	// The PKCS#11 CKA_ID: random, so that no two keys share it; the
	// label says whose key it is.
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, "", err
	}
	name := "badge-" + kind + "-" + hex.EncodeToString(id[:8])
	ref := s.base + ";id=" + hex.EncodeToString(id) + ";object=" + url.PathEscape(name)
	resp, err := s.km.CreateKey(&apiv1.CreateKeyRequest{Name: ref, SignatureAlgorithm: apiv1.ECDSAWithSHA256})
	if err != nil {
		return nil, "", fmt.Errorf("%w: creating key %s: %v", ErrKeyManager, name, err)
	}
	signer, err := s.km.CreateSigner(&resp.CreateSignerRequest)
	if err != nil {
		return nil, "", fmt.Errorf("%w: key %s: %v", ErrKeyManager, name, err)
	}
	return signer, ref, nil
}

func (s *kmsStore) open(rec keyRef, pub crypto.PublicKey) (crypto.Signer, error) {
	if !s.owns(rec.ref) {
		return nil, fmt.Errorf("%w: key %s is %q, not a key of %s; a key manager is set when the data dir is made and kept",
			ErrKeyManager, rec.id, rec.ref, s.base)
	}
	signer, err := s.km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: rec.ref})
	if err != nil {
		return nil, fmt.Errorf("%w: key %s (%s): %v", ErrKeyManager, rec.id, rec.ref, err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if p, ok := signer.Public().(equaler); !ok || !p.Equal(pub) {
		return nil, fmt.Errorf("%w: key %s (%s) does not match the public key of its record", ErrKeyManager, rec.id, rec.ref)
	}
	return signer, nil
}

func (s *kmsStore) remove(rec keyRef) error {
	if !s.owns(rec.ref) {
		return nil
	}
	switch d := s.km.(type) {
	case interface{ DeleteKey(string) error }: // PKCS#11
		if err := d.DeleteKey(rec.ref); err != nil {
			return fmt.Errorf("%w: deleting key %s: %v", ErrKeyManager, rec.id, err)
		}
	case apiv1.KeyDeleter:
		if err := d.DeleteKey(&apiv1.DeleteKeyRequest{Name: rec.ref}); err != nil && !errors.Is(err, apiv1.NotFoundError{}) {
			return fmt.Errorf("%w: deleting key %s: %v", ErrKeyManager, rec.id, err)
		}
	}
	return nil
}

func (s *kmsStore) owns(ref string) bool { return strings.HasPrefix(ref, s.base+";") }

func (s *kmsStore) close() error { return s.km.Close() }
