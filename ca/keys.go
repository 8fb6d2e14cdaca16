package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"

	"github.com/badge-dev/badge/internal/atomicfile"
	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// Key kinds as recorded in the store.
const (
	kindRoot         = "x509-root"
	kindIntermediate = "x509-intermediate"
)

// caKey is one CA certificate with its signer.
type caKey struct {
	id     string
	kind   string
	cert   *x509.Certificate
	signer crypto.Signer
	rec    storage.Key
}

// rotateAt is when the key should be replaced: half-way through its life.
func (k *caKey) rotateAt() time.Time {
	return k.cert.NotBefore.Add(k.cert.NotAfter.Sub(k.cert.NotBefore) / 2)
}

// keySet is the CA key hierarchy: one root and the intermediate signed by it
// that signs SVIDs. An SVID carries its own chain, so a replaced
// intermediate is not needed after rotation.
type keySet struct {
	root  *caKey
	inter *caKey
	jwt   *jwtKeySet
}

func (ks *keySet) current() *caKey { return ks.inter }

// loadKeys loads the active root and intermediate from the store and key
// directory, creating whichever is missing, expired or past half its life.
func loadKeys(ctx context.Context, cfg *Config) (*keySet, error) {
	if err := localtrust.MkdirPrivate(cfg.KeyDir); err != nil {
		if errors.Is(err, localtrust.ErrUntrustedPath) {
			return nil, fmt.Errorf("ca: key directory %w", err)
		}
		return nil, fmt.Errorf("ca: creating key directory: %w", err)
	}
	recs, err := cfg.Store.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca: loading key records: %w", err)
	}
	now := cfg.Time()
	ks := &keySet{}
	// Newest first, so the first usable record of each kind wins.
	slices.Reverse(recs)
	for _, rec := range recs {
		if rec.Kind != kindRoot || rec.State != storage.KeyActive || !now.Before(rec.NotAfter) {
			continue
		}
		k, err := loadKey(cfg.KeyDir, rec)
		if err != nil {
			return nil, err
		}
		ks.root = k
		break
	}
	if ks.root == nil {
		if ks.root, err = createRoot(ctx, cfg); err != nil {
			return nil, err
		}
		cfg.Logger.Info("created root CA", slog.String(logkey.KeyID, ks.root.id),
			slog.String("expires", ks.root.cert.NotAfter.UTC().Format(time.RFC3339)))
	}
	for _, rec := range recs {
		if rec.Kind != kindIntermediate || rec.State != storage.KeyActive || !now.Before(rec.NotAfter) {
			continue
		}
		k, err := loadKey(cfg.KeyDir, rec)
		if err != nil {
			return nil, err
		}
		if k.cert.CheckSignatureFrom(ks.root.cert) != nil {
			continue // issued by a root that is no longer in use
		}
		ks.inter = k
		break
	}
	if ks.inter == nil || !now.Before(ks.inter.rotateAt()) {
		if _, err := ks.rotate(ctx, cfg); err != nil {
			return nil, err
		}
	}
	if ks.jwt, err = loadJWTKeys(ctx, cfg, recs); err != nil {
		return nil, err
	}
	if left := ks.root.cert.NotAfter.Sub(now); left < 2*cfg.IntermediateTTL {
		cfg.Logger.Warn("root CA expires soon", slog.String(logkey.KeyID, ks.root.id), slog.Duration("left", left))
	}
	return ks, nil
}

// rotate creates a new intermediate under the root, makes it the signing
// key and records the previous one as retired.
func (ks *keySet) rotate(ctx context.Context, cfg *Config) (*caKey, error) {
	k, err := createIntermediate(ctx, cfg, ks.root)
	if err != nil {
		return nil, err
	}
	if old := ks.inter; old != nil {
		old.rec.State = storage.KeyRetired
		if err := cfg.Store.PutKey(ctx, old.rec); err != nil {
			// The new key is recorded as active and is newer, so a restart
			// still picks it; the stale state is only cosmetic.
			cfg.Logger.Warn("recording retired intermediate failed", slog.String(logkey.KeyID, old.id), slog.Any(logkey.Error, err))
		}
	}
	ks.inter = k
	return k, nil
}

func createRoot(ctx context.Context, cfg *Config) (*caKey, error) {
	now := cfg.Time()
	tmpl := &x509.Certificate{
		Subject: pkix.Name{Organization: []string{"badge"}, CommonName: "badge root CA " + cfg.TrustDomain.Name()},
	}
	data := x509util.CreateTemplateData(tmpl.Subject.CommonName, []string{cfg.TrustDomain.IDString()})
	data.SetSubject(x509util.Subject{CommonName: tmpl.Subject.CommonName, Organization: x509util.MultiString{"badge"}})
	return createCA(ctx, cfg, kindRoot, tmpl, x509util.DefaultRootTemplate, data, nil, now.Add(cfg.RootTTL))
}

func createIntermediate(ctx context.Context, cfg *Config, root *caKey) (*caKey, error) {
	now := cfg.Time()
	notAfter := now.Add(cfg.IntermediateTTL)
	if notAfter.After(root.cert.NotAfter) {
		notAfter = root.cert.NotAfter
	}
	if notAfter.Sub(now) < 2*cfg.MaxSVIDTTL {
		return nil, fmt.Errorf("ca: root CA %s expires at %s, too soon to issue an intermediate", root.id, root.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	cn := "badge intermediate CA " + cfg.TrustDomain.Name()
	tmpl := &x509.Certificate{Subject: pkix.Name{Organization: []string{"badge"}, CommonName: cn}}
	data := x509util.CreateTemplateData(cn, []string{cfg.TrustDomain.IDString()})
	data.SetSubject(x509util.Subject{CommonName: cn, Organization: x509util.MultiString{"badge"}})
	return createCA(ctx, cfg, kindIntermediate, tmpl, x509util.DefaultIntermediateTemplate, data, root, notAfter)
}

// createCA generates a key, signs its certificate (self-signed when parent
// is nil), writes the key file and records the key. The key file is written
// before the record: a crash in between leaves an unused file, never a
// record without its key.
func createCA(ctx context.Context, cfg *Config, kind string, tmpl *x509.Certificate, text string, data x509util.TemplateData, parent *caKey, notAfter time.Time) (*caKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generating %s key: %w", kind, err)
	}
	tmpl.PublicKey = priv.Public()
	c, err := x509util.NewCertificateFromX509(tmpl, x509util.WithTemplate(text, data))
	if err != nil {
		return nil, fmt.Errorf("ca: %s template: %w", kind, err)
	}
	x := c.GetCertificate()
	x.URIs = []*url.URL{cfg.TrustDomain.ID().URL()} // step's default CA templates drop .SANs
	now := cfg.Time()
	x.NotBefore = now.Add(-Backdate)
	x.NotAfter = notAfter
	signerCert, signer := x, crypto.Signer(priv)
	if parent != nil {
		signerCert, signer = parent.cert, parent.signer
	}
	cert, err := x509util.CreateCertificate(x, signerCert, priv.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("ca: signing %s certificate: %w", kind, err)
	}
	id := kind + "-" + hex.EncodeToString(cert.SubjectKeyId)[:16]
	file := id + ".key"
	if err := writeKeyFile(cfg.KeyDir, file, priv); err != nil {
		return nil, fmt.Errorf("ca: %s key: %w", kind, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, err
	}
	rec := storage.Key{
		ID: id, Kind: kind, PublicKey: pub, PrivateRef: file, Certificate: cert.Raw,
		CreatedAt: now, NotAfter: cert.NotAfter, State: storage.KeyActive,
	}
	if err := cfg.Store.PutKey(ctx, rec); err != nil {
		return nil, fmt.Errorf("ca: recording %s key: %w", kind, err)
	}
	return &caKey{id: id, kind: kind, cert: cert, signer: priv, rec: rec}, nil
}

// loadKey reads the certificate from the record and the private key from its
// file, and checks that they belong together.
func loadKey(dir string, rec storage.Key) (*caKey, error) {
	cert, err := x509.ParseCertificate(rec.Certificate)
	if err != nil {
		return nil, fmt.Errorf("ca: key %s: parsing certificate: %w", rec.ID, err)
	}
	signer, err := readKeyFile(dir, rec, cert.PublicKey)
	if err != nil {
		return nil, err
	}
	if rec.Kind != kindRoot && rec.Kind != kindIntermediate {
		return nil, errors.New("ca: unknown key kind " + rec.Kind)
	}
	return &caKey{id: rec.ID, kind: rec.Kind, cert: cert, signer: signer, rec: rec}, nil
}

// writeKeyFile writes priv, PKCS#8 PEM, to file in the key directory dir
// with mode 0600, atomically (see atomicfile.WriteFile).
func writeKeyFile(dir, file string, priv crypto.PrivateKey) error {
	block, err := pemutil.Serialize(priv, pemutil.WithPKCS8(true))
	if err != nil {
		return fmt.Errorf("encoding: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	return nil
}

// readKeyFile reads the private key of rec from the key directory dir. It
// refuses a reference that is not a plain file name, a symbolic link, a
// file owned by another uid than this process's or that others may read,
// and a key whose public half is not pub. The checks apply to the open
// file, so the file cannot be swapped between check and read.
func readKeyFile(dir string, rec storage.Key, pub crypto.PublicKey) (crypto.Signer, error) {
	if filepath.Base(rec.PrivateRef) != rec.PrivateRef {
		return nil, fmt.Errorf("ca: key %s: private key reference %q is not a file name in the key directory", rec.ID, rec.PrivateRef)
	}
	path := filepath.Join(dir, rec.PrivateRef)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("ca: key %s: %w", rec.ID, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ca: key %s: %w", rec.ID, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("ca: key file %s is not a regular file", path)
	}
	if owner, uid := localtrust.OwnerOf(fi), uint32(os.Geteuid()); owner != uid {
		return nil, fmt.Errorf("ca: %w: key file %s is owned by uid %d with mode %#o; it must be owned by uid %d, this server's",
			localtrust.ErrUntrustedPath, path, owner, fi.Mode().Perm(), uid)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("ca: key file %s has mode %#o; it must be readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("ca: key %s: reading %s: %w", rec.ID, path, err)
	}
	v, err := pemutil.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("ca: key %s: reading %s: %w", rec.ID, path, err)
	}
	signer, ok := v.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: key file %s does not hold a private key", path)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if p, ok := signer.Public().(equaler); !ok || !p.Equal(pub) {
		return nil, fmt.Errorf("ca: key file %s does not match the public key of key %s", path, rec.ID)
	}
	return signer, nil
}
