package ca

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/internal/untrusted"
	"github.com/badge-dev/badge/storage"
)

// Nodes: `badge agent` serves the Workload API on hosts other than the
// server's. An agent proves which node it is, once, with a join token an
// admin made for that node (or, later, with a host certificate: x509pop),
// and is then known by the node SVID spiffe://TRUST_DOMAIN/badge/node/NAME.
// Entries scoped to nodes (storage.Entry.Nodes) are served only by the
// agents of those nodes, never on the server's own socket.
//
// A join token is 32 random bytes (base64url, 43 characters), shown once;
// the store keeps its SHA-256. A slow password hash (argon2id, as for
// OAuth client secrets) buys nothing for a secret of 256 bits, which no one
// can guess whatever the hash costs, and would let anyone who can reach
// the agent listener spend 19 MiB and tens of milliseconds of the server
// per attempt. SHA-256 is also deterministic, so the hash is the lookup
// key: one read, no scan, no per-token salt. The lookup's timing may tell
// something of the stored hashes, never of a token: a hash does not lead
// back to its token, so no constant-time comparison is needed.
//
// Evicting a node revokes and blocks its node SVID ID, cancels its unused
// tokens and publishes a snapshot in which [Snapshot.NodeEvicted] is true,
// so that an agent listener can close the node's channel. Only new proof
// brings the node back: a token made after the eviction (a consumed one
// lifts the eviction and the block), or for x509pop a host certificate
// whose NotBefore is after the eviction: one the operator's PKI issued
// since, which the certificate of an evicted (perhaps stolen) host cannot
// be, whatever its key.

// NodePath is the path prefix of node SVIDs: spiffe://TD/badge/node/NAME.
const NodePath = reservedPath + "/node/"

// Join tokens.
const (
	// DefaultJoinTokenTTL is how long a join token may be used when the
	// admin sets no TTL.
	DefaultJoinTokenTTL = time.Hour
	// MinJoinTokenTTL and MaxJoinTokenTTL bound the TTL of a join token.
	MinJoinTokenTTL = time.Minute
	MaxJoinTokenTTL = 24 * time.Hour
	// MaxJoinTokenLen bounds a presented token; longer ones are refused
	// without hashing.
	MaxJoinTokenLen = 512

	joinTokenBytes = 32
	// maxEntryNodes bounds the nodes of one entry; "*" covers any number.
	maxEntryNodes = 256
	// AllNodes scopes an entry to every node.
	AllNodes = "*"
)

// Errors of node attestation. A refused token also matches the storage
// sentinel of its reason: storage.ErrNotFound (unknown),
// storage.ErrTokenUsed or storage.ErrTokenExpired.
var (
	// ErrJoinTokenRefused is matched by every refusal of a join token.
	ErrJoinTokenRefused = errors.New("join token refused")
	// ErrNodeEvicted is returned when an evicted node asks for anything
	// without new proof.
	ErrNodeEvicted = errors.New("node is evicted")
)

// NodeStore is the part of a Store that keeps nodes and join tokens
// (storage.Nodes).
type NodeStore = storage.Nodes

// ParseNodeName checks a node name: a lower-case DNS name of 1 to 253
// bytes, labels of 1 to 63 characters a-z, 0-9 and '-' that neither start
// nor end with '-'. It returns the name unchanged, or an *InvalidError on
// field "node" naming the input.
func ParseNodeName(s string) (string, error) {
	if s == "" || len(s) > storage.MaxNodeNameLen {
		return "", invalid("node", untrusted.Clip(s), "a node name has 1 to %d characters", storage.MaxNodeNameLen)
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return "", invalid("node", s, "each dot-separated label must have 1 to 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "", invalid("node", s, "a label must not start or end with '-'")
		}
		for _, c := range []byte(label) {
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			case c >= 'A' && c <= 'Z':
				return "", invalid("node", s, "must be lower case")
			default:
				return "", invalid("node", s, "character %q is not allowed (a node name is a lower-case DNS name)", c)
			}
		}
	}
	return s, nil
}

// parseNodes checks the nodes of an entry and returns them sorted and
// without repeats: nil (the server's own socket), ["*"] (every node), or
// node names.
func parseNodes(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > maxEntryNodes {
		return nil, invalid("node", untrusted.Clip(strings.Join(in, ",")), "more than %d nodes (use %q for every node)", maxEntryNodes, AllNodes)
	}
	if slices.Contains(in, AllNodes) {
		for _, n := range in {
			if n != AllNodes {
				return nil, invalid("node", n, "%q already means every node; give it alone", AllNodes)
			}
		}
		return []string{AllNodes}, nil
	}
	out := make([]string, 0, len(in))
	for _, n := range in {
		name, err := ParseNodeName(n)
		if err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// NodeID returns the SPIFFE ID of the node SVID of the named node,
// spiffe://TRUST_DOMAIN/badge/node/NAME.
func (a *Authority) NodeID(name string) (spiffeid.ID, error) {
	if _, err := ParseNodeName(name); err != nil {
		return spiffeid.ID{}, err
	}
	return a.cfg.TrustDomain.ID().AppendPath(NodePath + name)
}

// JoinTokenRequest asks for a join token.
type JoinTokenRequest struct {
	// Node is the name the agent that presents the token will have.
	Node string
	// TTL is how long the token can be used; zero means
	// DefaultJoinTokenTTL.
	TTL time.Duration
	// AdminUID is the uid of the admin who asked, for the audit trail.
	AdminUID uint32
}

// CreateJoinToken makes a one-time token for an agent to attest as
// req.Node, and returns its record and the token itself, which is not
// stored (only its hash) and cannot be shown again. The token is never
// logged.
func (a *Authority) CreateJoinToken(ctx context.Context, req JoinTokenRequest) (storage.JoinToken, string, error) {
	name, err := ParseNodeName(req.Node)
	if err != nil {
		return storage.JoinToken{}, "", err
	}
	ttl := req.TTL
	switch {
	case ttl == 0:
		ttl = DefaultJoinTokenTTL
	case ttl < MinJoinTokenTTL || ttl > MaxJoinTokenTTL:
		return storage.JoinToken{}, "", invalid("ttl", ttl.String(), "a join token lives from %s to %s", MinJoinTokenTTL, MaxJoinTokenTTL)
	}
	ns := a.store
	raw := make([]byte, joinTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return storage.JoinToken{}, "", fmt.Errorf("ca: generating join token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	now := a.cfg.Time().UTC()
	j := storage.JoinToken{Hash: hashJoinToken(token), Node: name, CreatedAt: now, ExpiresAt: now.Add(ttl), AdminUID: req.AdminUID}
	if err := ns.CreateJoinToken(ctx, j); err != nil {
		return storage.JoinToken{}, "", fmt.Errorf("storing join token: %w", err)
	}
	a.log.Info("join token created", slog.String(logkey.Node, name), slog.Time("expires_at", j.ExpiresAt),
		slog.Int(logkey.AdminUID, int(req.AdminUID)), slog.Bool(logkey.Audit, true))
	return j, token, nil
}

// hashJoinToken is the stored form of a join token.
func hashJoinToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ConsumeJoinToken uses a join token: in one store transaction the token
// is marked used and its node recorded as attested by join token now. Of
// concurrent calls with one token exactly one succeeds. A node evicted
// before is no longer evicted, and the block on its node SVID ID is
// lifted: the token is new proof, since eviction cancels the tokens made
// before it. A refusal matches ErrJoinTokenRefused and the storage
// sentinel of its reason (ErrNotFound, ErrTokenUsed, ErrTokenExpired); it
// is logged with the reason, never with the token.
//
// It spends the token before anything is signed: the agent listener uses
// AttestJoinToken, which signs first.
func (a *Authority) ConsumeJoinToken(ctx context.Context, token string) (storage.Node, error) {
	if err := a.checkJoinTokenLen(token); err != nil {
		return storage.Node{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.consumeJoinTokenLocked(ctx, hashJoinToken(token))
}

// AttestJoinToken attests the node a join token was made for and signs
// its node SVID for the public key of the certificate request csr, valid
// for ttl, as SignNodeSVID does. The token is spent only once the node
// SVID is signed: a refused CSR, a store that cannot reserve the serial or
// a failed signature leave it usable. Of concurrent calls with one token
// exactly one succeeds (the store's ConsumeJoinToken decides; the others'
// certificates are dropped unsent, their serials reserved and never
// used). Refusals are those of ConsumeJoinToken, and ErrNodeEvicted when
// the node SVID ID is blocked other than by the node's eviction (which
// the token lifts).
//
// The token is looked up by its hash first, a read; it is spent in the
// store's one transaction afterwards. Once it is spent, the
// node SVID is returned even if recording its serial in the node record
// (SetNodeSVID) then fails: the serial is already reserved and bound to
// the node's ID, so revocation and eviction reach it, and only the node
// listing lacks it until the next renewal.
func (a *Authority) AttestJoinToken(ctx context.Context, token string, csr []byte, ttl time.Duration) (storage.Node, *X509SVID, error) {
	if ttl < MinNodeSVIDTTL || ttl > MaxNodeSVIDTTL {
		return storage.Node{}, nil, invalid("node_svid_ttl", ttl.String(), "a node SVID lives from %s to %s", MinNodeSVIDTTL, MaxNodeSVIDTTL)
	}
	if err := a.checkJoinTokenLen(token); err != nil {
		return storage.Node{}, nil, err
	}
	pub, err := ParseCSR(csr)
	if err != nil {
		return storage.Node{}, nil, err
	}
	hash := hashJoinToken(token)
	tok, err := a.usableJoinToken(ctx, hash)
	if err != nil {
		return storage.Node{}, nil, a.joinTokenRefused(tok, err)
	}
	e, err := a.nodeEntry(tok.Node)
	if err != nil {
		return storage.Node{}, nil, err
	}
	// Eviction write-holds issueMu: none comes between the checks here and
	// the token spent below.
	a.issueMu.RLock()
	defer a.issueMu.RUnlock()
	s := a.Snapshot()
	if err := s.CheckRevocation(X509Credential(e.ID, "")); err != nil && !(errors.Is(err, ErrBlocked) && s.NodeEvicted(tok.Node)) {
		if errors.Is(err, ErrBlocked) {
			return storage.Node{}, nil, fmt.Errorf("ca: node SVID for %s: %w (%w)", e.ID, ErrNodeEvicted, err)
		}
		return storage.Node{}, nil, fmt.Errorf("ca: node SVID for %s: %w", e.ID, err)
	}
	now := a.cfg.Time()
	serials, hexes, err := newSerials(1)
	if err != nil {
		return storage.Node{}, nil, err
	}
	if err := a.store.ReserveSerials(ctx, storage.Reservation{Serials: hexes, NotAfter: now.Add(ttl)}); err != nil {
		return storage.Node{}, nil, fmt.Errorf("ca: reserving the serial of a node SVID: %w", err)
	}
	svid, err := a.signLocked(ctx, s, e, pub, serials[0], now, ttl)
	if err != nil {
		return storage.Node{}, nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	node, err := a.consumeJoinTokenLocked(ctx, hash)
	if err != nil {
		return storage.Node{}, nil, err
	}
	// node is the record the store just wrote: it gets the serial, as
	// SetNodeSVID would give it.
	rec := node
	rec.SVIDSerial = svid.Serial
	if err := a.store.PutNode(ctx, rec); err != nil {
		a.log.Error("recording the serial of a node SVID failed; the node is attested and holds it", slog.String(logkey.Node, node.Name),
			slog.String(logkey.Serial, svid.Serial), slog.Any(logkey.Error, err))
		return node, svid, nil
	}
	return rec, svid, nil
}

// checkJoinTokenLen refuses, without hashing it, a token of a length no
// token has.
func (a *Authority) checkJoinTokenLen(token string) error {
	if token == "" || len(token) > MaxJoinTokenLen {
		a.log.Warn("join token refused", slog.String("reason", "malformed"), slog.Bool(logkey.Audit, true))
		return fmt.Errorf("%w: %w: a join token has 1 to %d bytes", ErrJoinTokenRefused, storage.ErrNotFound, MaxJoinTokenLen)
	}
	return nil
}

// usableJoinToken returns the stored token of hash if it is unused and
// unexpired, else the refusal the store's ConsumeJoinToken would give
// (with the token, when known, for the log). It reads that one record:
// a damaged record of another token does not stop this one.
func (a *Authority) usableJoinToken(ctx context.Context, hash string) (storage.JoinToken, error) {
	j, err := a.store.GetJoinToken(ctx, hash)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		// The refusal is the one ConsumeJoinToken gives, without the
		// hash the store's error names.
		return storage.JoinToken{}, fmt.Errorf("join token: %w", storage.ErrNotFound)
	case err != nil:
		return storage.JoinToken{}, fmt.Errorf("reading join token: %w", err)
	}
	now := a.cfg.Time().UTC()
	switch {
	case !j.UsedAt.IsZero():
		return j, fmt.Errorf("join token for node %s: %w (at %s)", j.Node, storage.ErrTokenUsed, utc(j.UsedAt))
	case !now.Before(j.ExpiresAt):
		return j, fmt.Errorf("join token for node %s: %w (at %s)", j.Node, storage.ErrTokenExpired, utc(j.ExpiresAt))
	}
	return j, nil
}

// joinTokenRefused logs the refusal of token tok (zero when unknown) for
// err, and returns the error that says so: ErrJoinTokenRefused and err's
// storage sentinel. An error that is no refusal (the store failed) is
// returned wrapped and not logged as one.
func (a *Authority) joinTokenRefused(tok storage.JoinToken, err error) error {
	reason := "unknown"
	switch {
	case errors.Is(err, storage.ErrTokenUsed):
		reason = "used"
	case errors.Is(err, storage.ErrTokenExpired):
		reason = "expired"
	case !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("consuming join token: %w", err)
	}
	a.log.Warn("join token refused", slog.String("reason", reason), slog.String(logkey.Node, tok.Node), slog.Bool(logkey.Audit, true))
	return fmt.Errorf("%w (%s): %w", ErrJoinTokenRefused, reason, err)
}

// consumeJoinTokenLocked spends the token of hash in the store and lifts
// its node's eviction; callers hold a.mu.
func (a *Authority) consumeJoinTokenLocked(ctx context.Context, hash string) (storage.Node, error) {
	tok, node, err := a.store.ConsumeJoinToken(ctx, hash, a.cfg.Time().UTC())
	if err != nil {
		return storage.Node{}, a.joinTokenRefused(tok, err)
	}
	wasEvicted := a.evictedNodes[node.Name]
	if wasEvicted {
		if err := a.liftEvictionLocked(ctx, node.Name); err != nil {
			return storage.Node{}, err
		}
	}
	a.log.Info("node attested", slog.String(logkey.Node, node.Name), slog.String("attestation", storage.AttestJoinToken),
		slog.Bool("was_evicted", wasEvicted), slog.Int(logkey.AdminUID, int(tok.AdminUID)), slog.Bool(logkey.Audit, true))
	return node, nil
}

// liftEvictionLocked forgets the eviction of a node that attested with new
// proof: its node SVID ID is unblocked and a snapshot published. Callers
// hold a.mu.
func (a *Authority) liftEvictionLocked(ctx context.Context, name string) error {
	id, err := a.NodeID(name)
	if err != nil {
		return err
	}
	if cur, ok := a.revocations.ids[id]; ok && cur.Blocked {
		if err := a.store.Unblock(ctx, id.String()); err != nil {
			return fmt.Errorf("unblocking node SVID of %s: %w", name, err)
		}
		state := a.revocations.clone()
		cur.Blocked = false
		state.ids[id] = cur
		a.revocations = state
	}
	evicted := maps.Clone(a.evictedNodes)
	delete(evicted, name)
	a.evictedNodes = evicted
	a.publishLocked()
	return nil
}

// NodeAttestation is a node that proved its name by other means than a
// join token.
type NodeAttestation struct {
	// Name is the node's name.
	Name string
	// Method is how it proved it: storage.AttestX509PoP.
	Method string
	// ProofNotBefore is when the proof was made: for x509pop, the host
	// certificate's NotBefore. An evicted node is accepted again only
	// with proof made after its eviction.
	ProofNotBefore time.Time
}

// RegisterNode records that a node attested by att.Method now. A node
// attested by join token is recorded by ConsumeJoinToken instead. An
// evicted node is refused with ErrNodeEvicted unless att.ProofNotBefore is
// after its eviction: that is new proof, which lifts the eviction and the
// block on its node SVID ID, as a join token made after the eviction does.
func (a *Authority) RegisterNode(ctx context.Context, att NodeAttestation) (storage.Node, error) {
	name, err := ParseNodeName(att.Name)
	if err != nil {
		return storage.Node{}, err
	}
	if att.Method != storage.AttestX509PoP {
		return storage.Node{}, invalid("attestation", att.Method, "want %s (a join token is consumed with ConsumeJoinToken)", storage.AttestX509PoP)
	}
	ns := a.store
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Time().UTC()
	n, err := ns.GetNode(ctx, name)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		n = storage.Node{Name: name, FirstAttestedAt: now}
	case err != nil:
		return storage.Node{}, fmt.Errorf("reading node %s: %w", name, err)
	case n.Evicted() && !att.ProofNotBefore.After(n.EvictedAt):
		a.log.Warn("evicted node refused", slog.String(logkey.Node, name), slog.String("attestation", att.Method),
			slog.Time("proof_not_before", att.ProofNotBefore), slog.Bool(logkey.Audit, true))
		return storage.Node{}, fmt.Errorf("node %s: %w since %s, and the proof dates from %s, before", name, ErrNodeEvicted, utc(n.EvictedAt), utc(att.ProofNotBefore))
	case n.Evicted():
		if err := a.liftEvictionLocked(ctx, name); err != nil {
			return storage.Node{}, err
		}
		a.log.Warn("evicted node attested with new proof; eviction lifted", slog.String(logkey.Node, name), slog.String("attestation", att.Method),
			slog.Time("evicted_at", n.EvictedAt), slog.Time("proof_not_before", att.ProofNotBefore), slog.Bool(logkey.Audit, true))
		n.EvictedAt, n.EvictedBy = time.Time{}, 0
	}
	n.Attestation, n.LastAttestedAt = att.Method, now
	if err := ns.PutNode(ctx, n); err != nil {
		return storage.Node{}, fmt.Errorf("storing node %s: %w", name, err)
	}
	a.log.Info("node attested", slog.String(logkey.Node, name), slog.String("attestation", att.Method), slog.Bool(logkey.Audit, true))
	return n, nil
}

// SetNodeSVID records the serial (hex) of the node SVID just signed for a
// node. It fails with ErrNodeEvicted for an evicted node and
// storage.ErrNotFound for an unknown one.
func (a *Authority) SetNodeSVID(ctx context.Context, name, serial string) error {
	if _, err := ParseNodeName(name); err != nil {
		return err
	}
	serial, err := parseSerial(serial)
	if err != nil {
		return err
	}
	ns := a.store
	a.mu.Lock()
	defer a.mu.Unlock()
	n, err := ns.GetNode(ctx, name)
	if err != nil {
		return fmt.Errorf("node %q: %w", name, err)
	}
	if n.Evicted() {
		return fmt.Errorf("node %s: %w since %s", name, ErrNodeEvicted, utc(n.EvictedAt))
	}
	n.SVIDSerial = serial
	if err := ns.PutNode(ctx, n); err != nil {
		return fmt.Errorf("storing node %s: %w", name, err)
	}
	return nil
}

// ListNodes returns every node that has attested, ordered by name.
func (a *Authority) ListNodes(ctx context.Context) ([]storage.Node, error) {
	ns := a.store
	return ns.ListNodes(ctx)
}

// EvictResult says what an eviction did.
type EvictResult struct {
	// Node is the node as stored after the eviction.
	Node storage.Node
	// SPIFFEID is the node SVID ID, now revoked and blocked.
	SPIFFEID string
	// Revoked counts the node SVIDs revoked.
	Revoked int
	// CancelledTokens counts the node's unused join tokens deleted.
	CancelledTokens int
}

// EvictNode evicts a node: every unexpired certificate of its node SVID ID
// is revoked and the ID blocked (through RevokeID's machinery, so the
// revocation list and every stream learn it at once), its unused join
// tokens are cancelled, and the node is recorded as evicted by adminUID,
// durably. The new snapshot reports Snapshot.NodeEvicted(name) and serves
// the node no entries. An unknown node is storage.ErrNotFound ("no node
// named NAME").
func (a *Authority) EvictNode(ctx context.Context, name string, adminUID uint32) (EvictResult, error) {
	if _, err := ParseNodeName(name); err != nil {
		return EvictResult{}, err
	}
	ns := a.store
	id, err := a.NodeID(name)
	if err != nil {
		return EvictResult{}, err
	}
	a.issueMu.Lock()
	defer a.issueMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := ns.GetNode(ctx, name); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return EvictResult{}, &notFoundError{fmt.Sprintf("no node named %s", name)}
		}
		return EvictResult{}, fmt.Errorf("reading node %s: %w", name, err)
	}
	// Revoke first: if recording the eviction then fails, the node holds
	// no valid certificate and is refused anyway, and evicting again
	// finishes the job.
	res, err := a.revokeIDLocked(ctx, id, RevokeRequest{SPIFFEID: id.String(), Reason: "node " + name + " evicted", Block: true, AdminUID: adminUID})
	if err != nil {
		return EvictResult{}, err
	}
	n, cancelled, err := ns.EvictNode(ctx, name, a.cfg.Time().UTC(), adminUID)
	if err != nil {
		a.publishLocked() // the revocation is in force
		return EvictResult{}, fmt.Errorf("recording eviction of node %s: %w", name, err)
	}
	evicted := maps.Clone(a.evictedNodes)
	if evicted == nil {
		evicted = map[string]bool{}
	}
	evicted[name] = true
	a.evictedNodes = evicted
	a.publishLocked()
	a.log.Warn("node evicted", slog.String(logkey.Node, name), slog.String(logkey.SPIFFEID, id.String()), slog.Int(logkey.Count, res.Revoked),
		slog.Int("cancelled_tokens", cancelled), slog.Int(logkey.AdminUID, int(adminUID)), slog.Bool(logkey.Audit, true))
	return EvictResult{Node: n, SPIFFEID: id.String(), Revoked: res.Revoked, CancelledTokens: cancelled}, nil
}

// loadNodes reads which nodes are evicted, when the store keeps nodes.
func (a *Authority) loadNodes(ctx context.Context) error {
	ns, ok := a.store.(NodeStore)
	if !ok {
		return nil
	}
	nodes, err := ns.ListNodes(ctx)
	if err != nil {
		return fmt.Errorf("ca: loading nodes: %w", err)
	}
	a.evictedNodes = map[string]bool{}
	for _, n := range nodes {
		if n.Evicted() {
			a.evictedNodes[n.Name] = true
		}
	}
	return nil
}

// pruneJoinTokens deletes the join tokens that expired, used or not, on
// the clock pruning trusts.
func (a *Authority) pruneJoinTokens(ctx context.Context) (int, error) {
	ns, ok := a.store.(NodeStore)
	if !ok || !a.pruneReady() {
		return 0, nil
	}
	return ns.PruneJoinTokens(ctx, a.trustedNow().Add(-a.cfg.PruneMargin))
}
