package ca

// Key custody: where the private keys of the CA and JWT keys live. By
// default each is a file in Config.KeyDir (PKCS#8 PEM, mode 0600, written
// atomically, refused if anyone else can read or replace it). With
// Config.KeyManager a key is generated in, and used from, a key manager
// of go.step.sm/crypto/kms (a PKCS#11 token: an HSM; AWS KMS, Google
// Cloud KMS, Azure Key Vault), and never leaves it: the daemon holds only
// signers, and the record's private key reference is the key's URI,
// without the PIN and without credentials, which is all a restart needs
// to open the same key. The backend must be linked into the binary by its
// blank import (cmd/badge links PKCS#11 always, the cloud ones with
// -tags cloudkms). A retired key is deleted from a PKCS#11 token; the
// library cannot delete cloud keys, so those are left in place with a
// warning that names them.

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
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/uri"

	"github.com/badge-dev/badge/internal/logkey"
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
	km  apiv1.KeyManager
	b   *kmsBackend
	log *slog.Logger
}

// openKeyStore returns the store of Config.KeyManager: files in KeyDir
// when it is empty, else the key manager it names.
func openKeyStore(ctx context.Context, c *Config) (keyStore, error) {
	if c.KeyManager == "" {
		return fileStore{dir: c.KeyDir}, nil
	}
	b, err := checkKeyManager(c.KeyManager)
	if err != nil {
		return nil, err
	}
	km, err := kms.New(ctx, apiv1.Options{URI: c.KeyManager})
	if err != nil {
		return nil, fmt.Errorf("%w: opening %s: %v", ErrKeyManager, b.display, err)
	}
	return &kmsStore{km: km, b: b, log: c.Logger}, nil
}

// CloudKMSTag is the build tag with which cmd/badge links the cloud key
// managers (awskms, cloudkms, azurekms); a binary without them refuses
// their URIs, naming it.
const CloudKMSTag = "cloudkms"

// CheckKeyManager checks a Config.KeyManager URI, and that this binary
// links its backend. It returns the URI without its query (where PKCS#11
// takes the PIN), fit for logs. Badge names the keys it makes, so a URI
// names where they go, never a key:
//
//   - pkcs11:module-path=...;token=...?pin-value=... (or serial, slot-id;
//     pin-source=FILE): a PKCS#11 token, an HSM.
//   - awskms:region=REGION (and profile=, credentials-file=): AWS KMS, with
//     the SDK's credentials from the environment (AWS_ACCESS_KEY_ID...,
//     AWS_PROFILE, an instance role).
//   - cloudkms:key-ring=projects/P/locations/L/keyRings/R (and
//     credentials-file=): Google Cloud KMS; the key ring is made if
//     missing; credentials from GOOGLE_APPLICATION_CREDENTIALS or the
//     metadata server.
//   - azurekms:vault=NAME (and environment=, ?hsm=true): Azure Key Vault,
//     with credentials from the environment (AZURE_TENANT_ID,
//     AZURE_CLIENT_ID, AZURE_CLIENT_SECRET..., a managed identity).
//
// No URI may carry a cloud credential: badge logs the URI and records
// keys under it.
func CheckKeyManager(raw string) (string, error) {
	b, err := checkKeyManager(raw)
	if err != nil {
		return "", err
	}
	return b.display, nil
}

// checkKeyManager is CheckKeyManager, returning the backend's naming.
func checkKeyManager(raw string) (*kmsBackend, error) {
	b, err := parseKeyManager(raw)
	if err != nil {
		return nil, err
	}
	if _, ok := apiv1.LoadKeyManagerNewFunc(apiv1.Type(b.scheme)); !ok {
		if b.scheme == "pkcs11" {
			return nil, fmt.Errorf("%w %q: this binary does not link the pkcs11 key manager (import go.step.sm/crypto/kms/pkcs11)", ErrKeyManager, b.display)
		}
		return nil, fmt.Errorf("%w %q: this badge is built without the %s key manager: build it with -tags %s (go build -tags %s ./cmd/badge)",
			ErrKeyManager, b.display, b.scheme, CloudKMSTag, CloudKMSTag)
	}
	return b, nil
}

// kmsBackend is how badge names keys in one key manager and records them.
type kmsBackend struct {
	scheme  string
	display string // the URI without its query, for logs and errors
	// prefix starts the reference of every key of this key manager.
	prefix string
	// request is the Name of the CreateKeyRequest of a new key called
	// name, with id a random 16 bytes.
	request func(name string, id []byte) string
	// ref is the reference to record of a key made by request req.
	ref func(req string, resp *apiv1.CreateKeyResponse) (string, error)
}

// The key ring of Google Cloud KMS, as its API names it.
var gcpKeyRing = regexp.MustCompile(`^projects/[a-z][a-z0-9.:-]{4,61}[a-z0-9]/locations/[a-zA-Z0-9_-]{1,63}/keyRings/[a-zA-Z0-9_-]{1,63}$`)

// An Azure Key Vault name.
var azureVault = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$`)

// An AWS region.
var awsRegion = regexp.MustCompile(`^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$`)

// parseKeyManager checks the syntax of a key manager URI and returns its
// backend's naming; it does not look at what the binary links.
func parseKeyManager(raw string) (*kmsBackend, error) {
	display := RedactKeyManager(raw)
	u, err := uri.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w %q: not a key manager URI: %v", ErrKeyManager, display, err)
	}
	bad := func(format string, args ...any) (*kmsBackend, error) {
		return nil, fmt.Errorf("%w %q: "+format, append([]any{ErrKeyManager, display}, args...)...)
	}
	for _, secret := range cloudSecrets {
		if u.Has(secret) {
			return bad("%s in the URI: give cloud credentials through the environment, as the provider's SDK reads them", secret)
		}
	}
	scheme := strings.ToLower(u.Scheme)
	b := &kmsBackend{scheme: scheme, display: display}
	switch scheme {
	case "pkcs11":
		if u.Get("token") == "" && u.Get("serial") == "" && u.Get("slot-id") == "" {
			return bad("a pkcs11 URI needs token, serial or slot-id")
		}
		if u.Get("id") != "" || u.Get("object") != "" {
			return bad("name the token, not a key (no id or object): badge names its keys")
		}
		b.prefix = display + ";"
		b.request = func(name string, id []byte) string {
			// The CKA_ID is random, so that no two keys share it; the
			// label says whose key it is.
			return display + ";id=" + hex.EncodeToString(id) + ";object=" + url.PathEscape(name)
		}
		b.ref = func(req string, _ *apiv1.CreateKeyResponse) (string, error) { return req, nil }
	case "awskms":
		region := u.Get("region")
		if !awsRegion.MatchString(region) {
			return bad("an awskms URI needs region=REGION (such as us-east-1), which the keys are made in; got %q", region)
		}
		if u.Has("key-id") || u.Has("name") {
			return bad("name the region, not a key (no key-id or name): badge names its keys")
		}
		b.prefix = "awskms:region=" + region + ";key-id="
		// The library makes the key with name as its description and
		// tag, and the alias alias/NAME-KEYID8.
		b.request = func(name string, _ []byte) string { return name }
		b.ref = func(_ string, resp *apiv1.CreateKeyResponse) (string, error) {
			k, err := uri.ParseWithScheme("awskms", resp.Name)
			if err != nil || k.Get("key-id") == "" {
				return "", fmt.Errorf("the key manager named the new key %q, without a key-id", resp.Name)
			}
			return b.prefix + k.Get("key-id"), nil
		}
	case "cloudkms":
		ring := u.Get("key-ring")
		if !gcpKeyRing.MatchString(ring) {
			return bad("a cloudkms URI needs key-ring=projects/PROJECT/locations/LOCATION/keyRings/RING; got %q", ring)
		}
		if u.Has("resource") {
			return bad("name the key ring, not a key (no resource): badge names its keys")
		}
		b.prefix = "cloudkms:" + ring + "/cryptoKeys/"
		b.request = func(name string, _ []byte) string { return ring + "/cryptoKeys/" + name }
		b.ref = func(req string, resp *apiv1.CreateKeyResponse) (string, error) {
			// The first version of the key: cloudkms:projects/.../cryptoKeys/NAME/cryptoKeyVersions/1.
			if !strings.HasPrefix(resp.Name, "cloudkms:"+req+"/cryptoKeyVersions/") {
				return "", fmt.Errorf("the key manager named the new key %q, not a version of %s", resp.Name, req)
			}
			return resp.Name, nil
		}
	case "azurekms":
		vault := u.Get("vault")
		if !azureVault.MatchString(vault) {
			return bad("an azurekms URI needs vault=NAME, the key vault the keys are made in; got %q", vault)
		}
		if u.Has("name") || u.Has("version") {
			return bad("name the vault, not a key (no name or version): badge names its keys")
		}
		hsm := ""
		if u.GetBool("hsm") {
			hsm = "?hsm=true"
		}
		b.prefix = "azurekms:vault=" + vault + ";name="
		b.request = func(name string, _ []byte) string { return b.prefix + name + hsm }
		b.ref = func(req string, resp *apiv1.CreateKeyResponse) (string, error) {
			// The version the vault gave the key, when it says.
			ref := strings.TrimSuffix(req, hsm)
			if k, err := uri.ParseWithScheme("azurekms", resp.Name); err == nil && k.Get("version") != "" {
				ref += "?version=" + url.QueryEscape(k.Get("version"))
			}
			return ref, nil
		}
	default:
		return bad("unsupported type %q (badge supports pkcs11, and awskms, cloudkms and azurekms when built with -tags %s; files in the data dir without --key-manager)",
			u.Scheme, CloudKMSTag)
	}
	return b, nil
}

// cloudSecrets are the URI attributes that would carry a cloud credential:
// refused, and never shown.
var cloudSecrets = []string{"client-secret", "access-key", "secret-access-key", "session-token"}

// RedactKeyManager returns a key manager URI fit for logs: without its
// query (where PKCS#11 takes the PIN), and with the value of any attribute
// that carries a credential replaced.
func RedactKeyManager(raw string) string {
	raw, _, _ = strings.Cut(raw, "?")
	scheme, opaque, ok := strings.Cut(raw, ":")
	if !ok {
		return raw
	}
	parts := strings.Split(opaque, ";")
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		k, _ = url.QueryUnescape(k)
		if slices.Contains(cloudSecrets, strings.ToLower(strings.TrimSpace(k))) {
			parts[i] = k + "=(redacted)"
		}
	}
	return scheme + ":" + strings.Join(parts, ";")
}

func (s *kmsStore) create(_ context.Context, kind string, _ func([]byte) (string, error)) (crypto.Signer, string, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, "", err
	}
	name := kmsKeyName(kind, id)
	resp, err := s.km.CreateKey(&apiv1.CreateKeyRequest{Name: s.b.request(name, id), SignatureAlgorithm: apiv1.ECDSAWithSHA256})
	if err != nil {
		return nil, "", fmt.Errorf("%w: creating key %s: %v", ErrKeyManager, name, err)
	}
	ref, err := s.b.ref(s.b.request(name, id), resp)
	if err != nil {
		return nil, "", fmt.Errorf("%w: key %s: %v", ErrKeyManager, name, err)
	}
	signer, err := s.km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: ref})
	if err != nil {
		return nil, "", fmt.Errorf("%w: key %s (%s): %v", ErrKeyManager, name, ref, err)
	}
	return signer, ref, nil
}

// kmsKeyName is the name of a new key of kind in a key manager (its
// PKCS#11 label, AWS alias, Google key id, Azure key name): whose key it
// is, and 8 random bytes of id.
func kmsKeyName(kind string, id []byte) string {
	return "badge-" + kind + "-" + hex.EncodeToString(id[:8])
}

func (s *kmsStore) open(rec keyRef, pub crypto.PublicKey) (crypto.Signer, error) {
	if !s.owns(rec.ref) {
		return nil, fmt.Errorf("%w: key %s is %q, not a key of %s; a key manager is set when the data dir is made and kept",
			ErrKeyManager, rec.id, rec.ref, s.b.display)
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
	default:
		// go.step.sm/crypto cannot delete, disable or schedule the
		// deletion of a key in this key manager: the key stays, unused.
		s.log.Warn("the key manager cannot delete keys: the retired key is left in it; disable it or schedule its deletion there",
			slog.String(logkey.KeyID, rec.id), slog.String("key", rec.ref))
	}
	return nil
}

func (s *kmsStore) owns(ref string) bool {
	return strings.HasPrefix(ref, s.b.prefix) && len(ref) > len(s.b.prefix)
}

func (s *kmsStore) close() error { return s.km.Close() }
