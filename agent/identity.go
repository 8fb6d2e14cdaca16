package agent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/badge-dev/badge/internal/atomicfile"
	"github.com/badge-dev/badge/internal/localtrust"
)

// The node identity is kept in one file of the data dir, written
// atomically with mode 0600, so that a crash leaves either the old key and
// node SVID or the new ones, never a key with another key's certificate.

// IdentityFile is the name of the node identity file in the data dir.
const IdentityFile = "node.json"

// nodePath is the path prefix of node SVIDs: spiffe://TD/badge/node/NAME.
const nodePath = "/badge/node/"

// serverPath is the path of the server's SPIFFE ID.
const serverPath = "/badge/server"

// How a node proved which node it is.
const (
	byJoinToken = "join_token"
	byX509PoP   = "x509pop"
)

// identityFile is the JSON document of IdentityFile.
type identityFile struct {
	Node       string `json:"node"`
	AttestedBy string `json:"attested_by"`
	// JoinTokenSHA256 is the hash of the join token last used, so that
	// the token is never sent again: not the token itself.
	JoinTokenSHA256 string   `json:"join_token_sha256,omitempty"`
	Key             []byte   `json:"key"`    // PKCS#8 DER
	SVID            [][]byte `json:"svid"`   // leaf then intermediates, DER
	Bundle          [][]byte `json:"bundle"` // root certificates, DER
}

// identity is the agent's node identity: its node SVID and key, and the
// trust bundle it was last given.
type identity struct {
	node       string
	attestedBy string
	tokenHash  string
	id         spiffeid.ID
	key        crypto.Signer
	chain      []*x509.Certificate
	bundle     []*x509.Certificate
	cert       *tls.Certificate // chain and key, for the TLS client
}

// notAfter is when the node SVID expires.
func (id *identity) notAfter() time.Time { return id.chain[0].NotAfter }

// refreshAt is when the node SVID is due for renewal: half its life.
func (id *identity) refreshAt() time.Time {
	return refreshOf(id.chain[0].NotBefore, id.chain[0].NotAfter)
}

// ErrCorruptIdentity is wrapped by the error of a node identity file that
// cannot be read back.
var ErrCorruptIdentity = errors.New("agent: corrupt node identity file")

// newIdentity checks the node SVID the server signed for key: the leaf
// must certify key, name spiffe://TD/badge/node/NAME and, unless now is
// zero, chain to bundle at now.
func newIdentity(node, by string, key crypto.Signer, svid, bundle [][]byte, now time.Time) (*identity, error) {
	chain, _, err := parseCerts(svid)
	if err != nil {
		return nil, fmt.Errorf("node SVID: %w", err)
	}
	roots, _, err := parseCerts(bundle)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if len(chain) == 0 {
		return nil, errors.New("no node SVID")
	}
	if len(roots) == 0 {
		return nil, errors.New("empty trust bundle")
	}
	leaf := chain[0]
	if !publicKeyEqual(leaf.PublicKey, key.Public()) {
		return nil, errors.New("the node SVID does not certify the node key")
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("node SVID: %w", err)
	}
	name, ok := strings.CutPrefix(id.Path(), nodePath)
	if !ok || name == "" || (node != "" && name != node) {
		return nil, fmt.Errorf("node SVID names %s, want %s%s", id, nodePath, node)
	}
	if !now.IsZero() {
		if err := verifyChain(chain, roots, now, x509.ExtKeyUsageClientAuth); err != nil {
			return nil, fmt.Errorf("node SVID: %w", err)
		}
	}
	ders := make([][]byte, len(chain))
	for i, c := range chain {
		ders[i] = c.Raw
	}
	return &identity{node: name, attestedBy: by, id: id, key: key, chain: chain, bundle: roots,
		cert: &tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: leaf}}, nil
}

// verifyChain verifies chain[0] up to one of roots at now, for usage.
func verifyChain(chain, roots []*x509.Certificate, now time.Time, usage x509.ExtKeyUsage) error {
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{usage}}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := chain[0].Verify(opts)
	return err
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// loadIdentity reads the node identity of dir; nil when there is none.
// The file must pass localtrust.CheckPrivatePath.
func loadIdentity(dir string) (*identity, error) {
	path := filepath.Join(dir, IdentityFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := localtrust.CheckPrivatePath(path); err != nil {
		return nil, fmt.Errorf("node identity %w", err)
	}
	id, err := parseIdentity(data)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v (move it away to attest the node afresh)", ErrCorruptIdentity, path, err)
	}
	return id, nil
}

// parseIdentity parses the document of IdentityFile. Expiry is not
// checked: an expired node SVID still names the node.
func parseIdentity(data []byte) (*identity, error) {
	var f identityFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if f.AttestedBy != byJoinToken && f.AttestedBy != byX509PoP {
		return nil, fmt.Errorf("attested_by %q: want %s or %s", f.AttestedBy, byJoinToken, byX509PoP)
	}
	k, err := x509.ParsePKCS8PrivateKey(f.Key)
	if err != nil {
		return nil, fmt.Errorf("key: %v", err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key: %T is not a signing key", k)
	}
	// The chain was verified when the server sent it; it is not verified
	// again, so that a node SVID whose root has since left the bundle
	// still names the node for re-attestation.
	id, err := newIdentity(f.Node, f.AttestedBy, key, f.SVID, f.Bundle, time.Time{})
	if err != nil {
		return nil, err
	}
	id.tokenHash = f.JoinTokenSHA256
	return id, nil
}

// save writes id to dir atomically, mode 0600.
func (id *identity) save(dir string) error {
	key, err := x509.MarshalPKCS8PrivateKey(id.key)
	if err != nil {
		return err
	}
	f := identityFile{Node: id.node, AttestedBy: id.attestedBy, JoinTokenSHA256: id.tokenHash, Key: key}
	for _, c := range id.chain {
		f.SVID = append(f.SVID, c.Raw)
	}
	for _, c := range id.bundle {
		f.Bundle = append(f.Bundle, c.Raw)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, IdentityFile), data, 0o600)
}

// tokenHash is the hex SHA-256 of a join token: what the data dir keeps.
func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// newKey makes a node or workload key: ECDSA P-256, as the server's SVIDs.
func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// newNodeKey makes a node key and the CSR that asks for its node SVID.
func newNodeKey() (crypto.Signer, []byte, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := csrFor(key)
	return key, csr, err
}

// csrFor returns a PKCS#10 request, DER, for key: the server uses only its
// public key and signature.
func csrFor(key crypto.Signer) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
}
