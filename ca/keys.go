package ca

import (
	"cmp"
	"context"
	"crypto"
	"crypto/sha256"
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
	"strings"
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

// caKey is one CA key: its record, its certificate and its signer. A
// prepared intermediate has no certificate yet (it is signed when the key
// becomes active); a retired root kept in the bundle has no signer.
// A caKey is never changed once built: a new state is a new caKey, so
// that snapshots holding the old one read a consistent value.
type caKey struct {
	id     string
	kind   string
	cert   *x509.Certificate
	signer crypto.Signer
	rec    storage.Key
	// until is, for a root of an upstream authority (no record: rec is
	// zero), when the last unexpired intermediate it signed expires: it
	// leaves the bundle then (upstreamRoots).
	until time.Time
}

// rotateAt is when an intermediate should be replaced: half-way through
// its life. The life of one an upstream signed counts from when it
// started to sign, not from its NotBefore: an upstream may backdate it
// further than badge does (step-ca: a minute), and half of the life
// before activation must not be counted.
func (k *caKey) rotateAt() time.Time {
	start := k.cert.NotBefore
	if len(k.rec.UpstreamRoots) > 0 && k.rec.ActivatesAt.After(start) {
		start = k.rec.ActivatesAt
	}
	return start.Add(k.cert.NotAfter.Sub(start) / 2)
}

// with returns a copy of k with the record rec.
func (k *caKey) with(rec storage.Key) *caKey {
	c := *k
	c.rec = rec
	return &c
}

// keySet is the key hierarchy: the roots of the trust bundle (the active
// one, the next one once prepared, and retired ones until the last
// certificate chaining to them has expired), the intermediate signed by
// the active root that signs SVIDs with the next intermediate key
// prepared, and the JWT keys. An SVID carries its own chain, so a
// replaced intermediate is needed by no one. A keySet is replaced, never
// changed, once published.
type keySet struct {
	roots     []*caKey // the bundle, in (CreatedAt, ID) order
	root      *caKey   // the active root, one of roots
	nextRoot  *caKey   // the prepared root, one of roots; nil if none
	inter     *caKey   // the active intermediate
	nextInter *caKey   // the prepared intermediate (no certificate); nil if none
	jwt       *jwtKeySet
}

func (ks *keySet) current() *caKey { return ks.inter }

func (ks *keySet) clone() *keySet {
	c := *ks
	c.roots = slices.Clone(ks.roots)
	return &c
}

// rootOverlap is how long a root stays valid after it stops signing
// intermediates: a third of its life, and at least an intermediate's life,
// so that the last intermediate it signs is never cut short.
func (c *Config) rootOverlap() time.Duration { return max(c.RootTTL/3, c.IntermediateTTL) }

// rootSigning is how long a root signs intermediates.
func (c *Config) rootSigning() time.Duration { return c.RootTTL - c.rootOverlap() }

// retiresAt is when the active key of rec is due to be replaced: its
// record says so, or (for records written before keys had a schedule) it
// follows from the configuration.
func (c *Config) retiresAt(k *caKey) time.Time {
	switch {
	case !k.rec.RetiresAt.IsZero() && k.kind != kindIntermediate:
		return k.rec.RetiresAt
	case k.kind == kindRoot:
		return k.cert.NotAfter.Add(-c.rootOverlap())
	default:
		return k.rotateAt()
	}
}

// keyFixes are the records loadKeys found in a state a crash can leave
// (two active keys of one kind, several prepared ones): the superseded
// ones, retired, to be written back.
type keyFixes []storage.Key

// loadKeys loads the key hierarchy from the store and key directory:
// every root still in the bundle, the active intermediate and the
// prepared one, and the JWT keys. It creates nothing but a first root;
// advanceKeysLocked then activates, prepares and creates what the
// schedule asks for, so a restart resumes a rotation where it stood. Of
// two keys of a kind recorded active (a crash between activating one and
// retiring the other), the newer one is active and the other is retired:
// a retired key never signs again.
func loadKeys(ctx context.Context, cfg *Config) (*keySet, keyFixes, error) {
	return loadKeysOnce(ctx, cfg, false)
}

func loadKeysOnce(ctx context.Context, cfg *Config, retried bool) (*keySet, keyFixes, error) {
	if err := localtrust.MkdirPrivate(cfg.KeyDir); err != nil {
		if errors.Is(err, localtrust.ErrUntrustedPath) {
			return nil, nil, fmt.Errorf("ca: key directory %w", err)
		}
		return nil, nil, fmt.Errorf("ca: creating key directory: %w", err)
	}
	recs, err := cfg.Store.ListKeys(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: loading key records: %w", err)
	}
	now := cfg.Time()
	ks := &keySet{}
	var fixes keyFixes
	// Oldest first (the store's order), so the last active one wins.
	var inters []storage.Key
	for _, rec := range recs {
		if rec.Kind == kindIntermediate {
			inters = append(inters, rec)
		}
	}
	for _, rec := range recs {
		if rec.Kind != kindRoot || !now.Before(rec.NotAfter) || rec.State == storage.KeyRetired && !now.Before(removeAt(rec)) {
			continue
		}
		var k *caKey
		if rec.State == storage.KeyRetired {
			// Only its certificate is needed, for the bundle.
			cert, err := x509.ParseCertificate(rec.Certificate)
			if err != nil {
				return nil, nil, fmt.Errorf("ca: key %s: parsing certificate: %w", rec.ID, err)
			}
			k = &caKey{id: rec.ID, kind: rec.Kind, cert: cert, rec: rec}
		} else if k, err = loadKey(cfg, rec); err != nil {
			return nil, nil, err
		}
		switch rec.State {
		case storage.KeyActive:
			if ks.root != nil {
				old := retire(ks.root.rec, now, rootRemoveAt(ks.root, inters, now))
				fixes = append(fixes, old)
				ks.replaceRoot(ks.root, ks.root.with(old))
			}
			ks.root = k
		case storage.KeyPrepared:
			if ks.nextRoot != nil {
				// Never signed anything: leaves the bundle at once.
				fixes = append(fixes, retire(ks.nextRoot.rec, now, now))
				ks.roots = slices.DeleteFunc(ks.roots, func(r *caKey) bool { return r == ks.nextRoot })
			}
			ks.nextRoot = k
		}
		ks.roots = append(ks.roots, k)
	}
	if n := ks.nextRoot; n != nil && n.rec.ActivatesAt.IsZero() && ks.root != nil {
		// Prepared with no schedule: it signs a full lead after it entered
		// the bundle, and not before the active root is due to retire.
		rec := n.rec
		rec.ActivatesAt = laterOf(rec.CreatedAt.Add(cfg.RootPrepareLead), cfg.retiresAt(ks.root))
		fixes = append(fixes, rec)
		ks.replaceRoot(n, n.with(rec))
	}
	if ks.root == nil && ks.nextRoot != nil {
		// The active root is gone (expired while the server was down, or
		// never recorded): the prepared one is in the bundle already.
		ks.root, ks.nextRoot = ks.nextRoot, nil
		rec := activate(ks.root.rec, now, ks.root.cert.NotAfter.Add(-cfg.rootOverlap()))
		fixes = append(fixes, rec)
		ks.replaceRoot(ks.root, ks.root.with(rec))
	}
	if cfg.Upstream != nil {
		// The upstream's roots replace this authority's own: an own root
		// signs no more, and stays in the bundle until the last
		// intermediate it signed has expired.
		for _, r := range []*caKey{ks.nextRoot, ks.root} {
			if r == nil {
				continue
			}
			remove := now
			if r == ks.root {
				remove = rootRemoveAt(r, inters, now)
			}
			rec := retire(r.rec, now, remove)
			fixes = append(fixes, rec)
			ks.replaceRoot(r, r.with(rec))
		}
		ks.root, ks.nextRoot = nil, nil
		ks.roots = upstreamRoots(ks, inters, now)
	} else if ks.root == nil {
		k, err := createRoot(ctx, cfg, now, storage.KeyActive)
		if errors.Is(err, storage.ErrExists) && !retried {
			// Another server sharing the store made the first root
			// meanwhile: use it.
			return loadKeysOnce(ctx, cfg, true)
		}
		if err != nil {
			return nil, nil, err
		}
		cfg.Logger.Info("created root CA", slog.String(logkey.KeyID, k.id),
			slog.String("expires", k.cert.NotAfter.UTC().Format(time.RFC3339)))
		ks.root = k
		ks.roots = append(ks.roots, k)
	}
	if cfg.Upstream == nil {
		// After leaving an upstream, its roots stay in the bundle until
		// the last intermediate it signed has expired; its active
		// intermediate, in the bundle so, is replaced at once by the
		// schedule, which finds it not under the active root, and retired
		// until it expires.
		ks.roots = upstreamRoots(ks, inters, now)
	}
	for _, rec := range inters {
		if !cfg.owns(rec) {
			continue // another server's: it signs with it, this one never
		}
		switch {
		case rec.State == storage.KeyActive && now.Before(rec.NotAfter):
			k, err := loadKey(cfg, rec)
			if err != nil {
				return nil, nil, err
			}
			if !ks.inBundle(k) {
				continue // issued by a root that left the bundle
			}
			if ks.inter != nil {
				fixes = append(fixes, retire(ks.inter.rec, now, ks.inter.cert.NotAfter))
			}
			ks.inter = k
		case rec.State == storage.KeyPrepared:
			k, err := loadPreparedKey(cfg, rec)
			if err != nil {
				return nil, nil, err
			}
			if ks.nextInter != nil {
				fixes = append(fixes, retire(ks.nextInter.rec, now, now))
			}
			ks.nextInter = k
		}
	}
	jwt, jwtFixes, err := loadJWTKeys(cfg, recs)
	if err != nil {
		return nil, nil, err
	}
	ks.jwt = jwt
	return ks, append(fixes, jwtFixes...), nil
}

// inBundle reports whether the certificate of k was signed by a root of
// the bundle, directly or through the upstream intermediates recorded
// with it. Only signatures are judged, not validity periods.
func (ks *keySet) inBundle(k *caKey) bool {
	for _, r := range ks.roots {
		if k.cert.CheckSignatureFrom(r.cert) == nil {
			return true
		}
	}
	if len(k.rec.UpstreamChain) == 0 {
		return false
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range ks.roots {
		roots.AddCert(r.cert)
	}
	for _, der := range k.rec.UpstreamChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return false
		}
		inter.AddCert(c)
	}
	_, err := k.cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: k.cert.NotBefore.Add(time.Second),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// replaceRoot puts new in place of old in the bundle and the set.
func (ks *keySet) replaceRoot(old, new *caKey) {
	for i, r := range ks.roots {
		if r == old {
			ks.roots[i] = new
		}
	}
	if ks.root == old {
		ks.root = new
	}
	if ks.nextRoot == old {
		ks.nextRoot = new
	}
}

// removeAt is when a retired key's record and private key go: its
// RemoveAt, or its expiry for records that have none.
func removeAt(rec storage.Key) time.Time {
	if rec.RemoveAt.IsZero() {
		return rec.NotAfter
	}
	return rec.RemoveAt
}

// retire returns rec retired at now, to be removed at remove.
func retire(rec storage.Key, now, remove time.Time) storage.Key {
	rec.State = storage.KeyRetired
	rec.RetiresAt = now
	rec.RemoveAt = remove
	return rec
}

// activate returns rec active from now, due to retire at retires.
func activate(rec storage.Key, now, retires time.Time) storage.Key {
	rec.State = storage.KeyActive
	rec.ActivatesAt = now
	rec.RetiresAt = retires
	return rec
}

// rootRemoveAt is when a root retired now leaves the bundle: when the
// last intermediate it signed expires (an SVID never outlives its
// intermediate), and not before now.
func rootRemoveAt(root *caKey, inters []storage.Key, now time.Time) time.Time {
	out := now
	for _, rec := range inters {
		if rec.Kind != kindIntermediate || len(rec.Certificate) == 0 || !rec.NotAfter.After(out) {
			continue
		}
		if c, err := x509.ParseCertificate(rec.Certificate); err == nil && c.CheckSignatureFrom(root.cert) == nil {
			out = rec.NotAfter
		}
	}
	return out
}

// createRoot generates a root key and its self-signed certificate, valid
// for RootTTL from when it activates, writes the key file and records it
// in state (prepared or active).
func createRoot(ctx context.Context, cfg *Config, activates time.Time, state storage.KeyState) (*caKey, error) {
	cn := "badge root CA " + cfg.TrustDomain.Name()
	tmpl := &x509.Certificate{Subject: pkix.Name{Organization: []string{"badge"}, CommonName: cn}}
	data := x509util.CreateTemplateData(cn, []string{cfg.TrustDomain.IDString()})
	data.SetSubject(x509util.Subject{CommonName: cn, Organization: x509util.MultiString{"badge"}})
	priv, rec, err := newKey(ctx, cfg, kindRoot)
	if err != nil {
		return nil, err
	}
	cert, err := signCA(cfg, kindRoot, tmpl, x509util.DefaultRootTemplate, data, priv, nil, activates.Add(cfg.RootTTL))
	if err != nil {
		return nil, err
	}
	rec.Certificate, rec.NotAfter = cert.Raw, cert.NotAfter
	rec.State, rec.ActivatesAt, rec.RetiresAt = state, activates, cert.NotAfter.Add(-cfg.rootOverlap())
	if kc, ok := cfg.Store.(storage.KeyCreator); ok && state == storage.KeyActive {
		// The first root of a store several servers share: exactly one
		// of them makes it.
		if err := kc.CreateFirstKey(ctx, rec, kindRoot+"-"); err != nil {
			if rmErr := cfg.keys.remove(keyRef{rec.ID, rec.PrivateRef}); rmErr != nil {
				cfg.Logger.Warn("removing an unused root key failed", slog.String(logkey.KeyID, rec.ID), slog.Any(logkey.Error, rmErr))
			}
			return nil, fmt.Errorf("ca: recording the first root key: %w", err)
		}
	} else if err := saveKey(ctx, cfg, rec); err != nil {
		return nil, err
	}
	return &caKey{id: rec.ID, kind: kindRoot, cert: cert, signer: priv, rec: rec}, nil
}

// prepareIntermediate generates the next intermediate key, due to sign
// from activates, and records it as prepared. Its certificate is signed
// when it becomes active, by the root active then.
func prepareIntermediate(ctx context.Context, cfg *Config, activates time.Time) (*caKey, error) {
	priv, rec, err := newKey(ctx, cfg, kindIntermediate)
	if err != nil {
		return nil, err
	}
	rec.State, rec.ActivatesAt, rec.NotAfter = storage.KeyPrepared, activates, activates.Add(cfg.IntermediateTTL)
	if err := saveKey(ctx, cfg, rec); err != nil {
		return nil, err
	}
	return &caKey{id: rec.ID, kind: kindIntermediate, signer: priv, rec: rec}, nil
}

// activateIntermediate signs the certificate of the prepared intermediate
// next with root, valid for IntermediateTTL from now (at most until the
// root expires), and records it active. Under an upstream see
// Authority.activateUnderUpstream.
func activateIntermediate(ctx context.Context, cfg *Config, root, next *caKey) (*caKey, error) {
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
	cert, err := signCA(cfg, kindIntermediate, tmpl, x509util.DefaultIntermediateTemplate, data, next.signer, root, notAfter)
	if err != nil {
		return nil, err
	}
	k := &caKey{id: next.id, kind: kindIntermediate, cert: cert, signer: next.signer}
	k.rec = activate(next.rec, now, k.rotateAt())
	k.rec.Certificate, k.rec.NotAfter = cert.Raw, cert.NotAfter
	if err := cfg.Store.PutKey(ctx, k.rec); err != nil {
		return nil, fmt.Errorf("ca: recording %s key: %w", kindIntermediate, err)
	}
	return k, nil
}

// caKeyID is the id of a CA key: its kind and the start of the SHA-256
// of its public key (PKIX DER).
func caKeyID(kind string, pkix []byte) string {
	sum := sha256.Sum256(pkix)
	return kind + "-" + hex.EncodeToString(sum[:8])
}

// newKey generates an ECDSA P-256 key where the key store keeps private
// keys (a file named after the id, or a key manager), and returns its
// signer and the record of a new key of kind: id, public key, private
// key reference and creation time.
func newKey(ctx context.Context, cfg *Config, kind string) (crypto.Signer, storage.Key, error) {
	if kind == kindRoot && cfg.RootKEK != nil && cfg.KeyManager == "" {
		return newSealedKey(cfg, kind)
	}
	signer, ref, err := cfg.keys.create(ctx, kind, func(pkix []byte) (string, error) { return caKeyID(kind, pkix) + ".key", nil })
	if err != nil {
		return nil, storage.Key{}, fmt.Errorf("ca: %s key: %w", kind, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, storage.Key{}, err
	}
	rec := storage.Key{ID: caKeyID(kind, pub), Kind: kind, PublicKey: pub, PrivateRef: ref, CreatedAt: cfg.Time()}
	if kind != kindRoot {
		rec.Owner = cfg.ReplicaID
	}
	return signer, rec, nil
}

// saveKey records a key whose private key the key store holds already: a
// crash in between leaves an unused private key, never a record without
// its key.
func saveKey(ctx context.Context, cfg *Config, rec storage.Key) error {
	if err := cfg.Store.PutKey(ctx, rec); err != nil {
		return fmt.Errorf("ca: recording %s key: %w", rec.Kind, err)
	}
	return nil
}

// signCA signs the CA certificate of key, by parent or, when parent is
// nil, by key itself (a root), valid from Backdate ago until notAfter.
func signCA(cfg *Config, kind string, tmpl *x509.Certificate, text string, data x509util.TemplateData, key crypto.Signer, parent *caKey, notAfter time.Time) (*x509.Certificate, error) {
	tmpl.PublicKey = key.Public()
	c, err := x509util.NewCertificateFromX509(tmpl, x509util.WithTemplate(text, data))
	if err != nil {
		return nil, fmt.Errorf("ca: %s template: %w", kind, err)
	}
	x := c.GetCertificate()
	x.URIs = []*url.URL{cfg.TrustDomain.ID().URL()} // step's default CA templates drop .SANs
	x.NotBefore = cfg.Time().Add(-Backdate)
	x.NotAfter = notAfter
	signerCert, signer := x, key
	if parent != nil {
		signerCert, signer = parent.cert, parent.signer
	}
	cert, err := x509util.CreateCertificate(x, signerCert, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("ca: signing %s certificate: %w", kind, err)
	}
	return cert, nil
}

// loadKey reads the certificate from the record and opens the private key
// in the key store, and checks that they belong together.
func loadKey(cfg *Config, rec storage.Key) (*caKey, error) {
	if rec.Kind != kindRoot && rec.Kind != kindIntermediate {
		return nil, errors.New("ca: unknown key kind " + rec.Kind)
	}
	cert, err := x509.ParseCertificate(rec.Certificate)
	if err != nil {
		return nil, fmt.Errorf("ca: key %s: parsing certificate: %w", rec.ID, err)
	}
	signer, err := cfg.openSigner(rec, cert.PublicKey)
	if err != nil {
		return nil, err
	}
	return &caKey{id: rec.ID, kind: rec.Kind, cert: cert, signer: signer, rec: rec}, nil
}

// loadPreparedKey opens the private key of a prepared intermediate, which
// has no certificate yet, and checks it against the record's public key.
func loadPreparedKey(cfg *Config, rec storage.Key) (*caKey, error) {
	pub, err := x509.ParsePKIXPublicKey(rec.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca: key %s: parsing public key: %w", rec.ID, err)
	}
	signer, err := cfg.openSigner(rec, pub)
	if err != nil {
		return nil, err
	}
	return &caKey{id: rec.ID, kind: rec.Kind, signer: signer, rec: rec}, nil
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

// readKeyFile reads the private key of key id from the file ref in the key
// directory dir. It refuses a reference that is not a plain file name
// (such as a key manager's URI), a symbolic link, a file owned by another
// uid than this process's or that others may read, and a key whose public
// half is not pub. The checks apply to the open file, so the file cannot
// be swapped between check and read.
func readKeyFile(dir, id, ref string, pub crypto.PublicKey) (crypto.Signer, error) {
	if !isKeyFile(ref) {
		return nil, fmt.Errorf("ca: key %s: private key reference %q is not a file name in the key directory (a key manager's key needs --key-manager)", id, ref)
	}
	rec := struct{ ID string }{id}
	path := filepath.Join(dir, ref)
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

// keyCompare orders keys by (CreatedAt, ID), as the store lists them.
func keyCompare(a, b storage.Key) int {
	return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
}
