package ca

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// OAuth clients: a workload that cannot reach a Workload API socket (it
// runs on another host, behind a queue) gets JWT-SVIDs from the token
// endpoint of the public listener by presenting a client secret. The
// secret is 32 random bytes, shown once when the client is created; the
// store keeps only its argon2id hash with a per-client salt.

// ErrClientAuth is returned by AuthenticateClient for an unknown client
// and for a wrong secret alike: callers must not tell the two apart.
var ErrClientAuth = errors.New("client authentication failed")

// ErrNoClientStore is returned when the store does not keep OAuth clients.
var ErrNoClientStore = errors.New("ca: the store does not keep OAuth clients")

// ClientStore is the optional part of a Store that keeps OAuth clients;
// storage/bbolt implements it. The authority finds it by type assertion.
type ClientStore interface {
	CreateClient(ctx context.Context, c storage.Client) error
	GetClient(ctx context.Context, id string) (storage.Client, error)
	ListClients(ctx context.Context) ([]storage.Client, error)
	DeleteClient(ctx context.Context, id string) error
}

// Client secrets and their hash.
const (
	clientSecretBytes = 32
	clientSaltBytes   = 16
	// MaxClientSecretLen bounds a presented secret; longer ones are
	// refused without hashing.
	MaxClientSecretLen = 512
	// Argon2id parameters: OWASP's recommended minimum (19 MiB, two
	// passes, one lane), about 20-40 ms of one core per check.
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

// clientPrefix marks the token cache key of an OAuth client, which can
// never be an entry id (entry ids are hex).
const clientPrefix = "client:"

func (a *Authority) clientStore() (ClientStore, error) {
	cs, ok := a.store.(ClientStore)
	if !ok {
		return nil, ErrNoClientStore
	}
	return cs, nil
}

// CreateClient registers an OAuth client whose tokens are for spiffeID
// (the client ID is the SPIFFE ID) and returns it with its secret, which
// is not stored and cannot be shown again.
func (a *Authority) CreateClient(ctx context.Context, spiffeID string) (storage.Client, string, error) {
	id, err := parseID(a.cfg.TrustDomain, spiffeID)
	if err != nil {
		return storage.Client{}, "", err
	}
	cs, err := a.clientStore()
	if err != nil {
		return storage.Client{}, "", err
	}
	raw := make([]byte, clientSecretBytes)
	salt := make([]byte, clientSaltBytes)
	if _, err := rand.Read(raw); err != nil {
		return storage.Client{}, "", fmt.Errorf("ca: generating client secret: %w", err)
	}
	if _, err := rand.Read(salt); err != nil {
		return storage.Client{}, "", fmt.Errorf("ca: generating salt: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(raw)
	c := storage.Client{
		ID:         id.String(),
		SPIFFEID:   id.String(),
		SecretHash: encodePHC(defaultArgon, salt, hashSecret(secret, salt, defaultArgon)),
		CreatedAt:  a.cfg.Time().UTC(),
	}
	if err := cs.CreateClient(ctx, c); err != nil {
		if errors.Is(err, storage.ErrExists) {
			return storage.Client{}, "", fmt.Errorf("an OAuth client for %s already exists (delete it first to issue a new secret): %w", id, err)
		}
		return storage.Client{}, "", fmt.Errorf("storing client: %w", err)
	}
	a.log.Info("OAuth client created", slog.String("client_id", c.ID), slog.String(logkey.SPIFFEID, c.SPIFFEID), slog.Bool(logkey.Audit, true))
	return c, secret, nil
}

// ListClients returns every OAuth client in (CreatedAt, ID) order.
func (a *Authority) ListClients(ctx context.Context) ([]storage.Client, error) {
	cs, err := a.clientStore()
	if err != nil {
		return nil, err
	}
	return cs.ListClients(ctx)
}

// DeleteClient removes an OAuth client: its secret stops working at once;
// tokens already issued expire within the JWT TTL (revoke the SPIFFE ID to
// end them sooner).
func (a *Authority) DeleteClient(ctx context.Context, id string) error {
	cs, err := a.clientStore()
	if err != nil {
		return err
	}
	if err := cs.DeleteClient(ctx, id); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("client %q: %w", id, err)
		}
		return fmt.Errorf("deleting client %s: %w", id, err)
	}
	a.log.Info("OAuth client deleted", slog.String("client_id", id), slog.Bool(logkey.Audit, true))
	return nil
}

// AuthenticateClient checks a client's secret. An unknown client costs
// the same hash as a known one, and both fail with ErrClientAuth. The
// comparison is constant-time. Each call costs tens of milliseconds of
// CPU: callers must rate-limit it.
func (a *Authority) AuthenticateClient(ctx context.Context, id, secret string) (storage.Client, error) {
	cs, err := a.clientStore()
	if err != nil {
		return storage.Client{}, err
	}
	if len(secret) > MaxClientSecretLen || len(id) > storage.MaxIDLen {
		return storage.Client{}, ErrClientAuth
	}
	c, err := cs.GetClient(ctx, id)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return storage.Client{}, fmt.Errorf("ca: looking up client: %w", err)
	}
	stored := c.SecretHash
	if err != nil {
		stored = dummyHash
	}
	p, salt, want, perr := decodePHC(stored)
	if perr != nil {
		a.log.Error("OAuth client has an unreadable secret hash", slog.String("client_id", id), slog.Any(logkey.Error, perr))
		p, salt, want, _ = decodePHC(dummyHash)
		err = perr
	}
	got := hashSecret(secret, salt, p)
	if subtle.ConstantTimeCompare(got, want) != 1 || err != nil {
		return storage.Client{}, ErrClientAuth
	}
	return c, nil
}

// SignClientJWTSVID returns a JWT-SVID for an authenticated client, for its
// SPIFFE ID and the audience, with the same lifetime, cache and revocation
// rules as SignJWTSVID.
func (a *Authority) SignClientJWTSVID(ctx context.Context, s *Snapshot, c storage.Client, audience []string) (*JWTSVID, error) {
	id, err := parseID(a.cfg.TrustDomain, c.SPIFFEID)
	if err != nil {
		return nil, fmt.Errorf("ca: client %s: %w", c.ID, err)
	}
	return a.signJWT(s, id, jwtCacheKey{entry: clientPrefix + c.ID, revision: uint64(c.CreatedAt.UnixNano())}, audience)
}

type argonParams struct {
	time    uint32
	memory  uint32
	threads uint8
}

var defaultArgon = argonParams{time: argonTime, memory: argonMemory, threads: argonThreads}

func hashSecret(secret string, salt []byte, p argonParams) []byte {
	return argon2.IDKey([]byte(secret), salt, p.time, p.memory, p.threads, argonKeyLen)
}

// encodePHC writes an argon2id hash in the PHC string format.
func encodePHC(p argonParams, salt, hash []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.memory, p.time, p.threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(hash))
}

// decodePHC reads an argon2id PHC string, refusing parameters outside
// sane bounds so that a damaged record cannot make a check cost minutes.
func decodePHC(s string) (argonParams, []byte, []byte, error) {
	var p argonParams
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, errors.New("not an argon2id PHC string")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, nil, nil, fmt.Errorf("argon2 version %q", parts[2])
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &p.threads); err != nil {
		return p, nil, nil, fmt.Errorf("argon2 parameters %q: %v", parts[3], err)
	}
	if p.memory < 8*1024 || p.memory > 1<<20 || p.time < 1 || p.time > 10 || p.threads < 1 || p.threads > 16 {
		return p, nil, nil, fmt.Errorf("argon2 parameters %q out of bounds", parts[3])
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return p, nil, nil, errors.New("argon2 salt")
	}
	hash, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(hash) != argonKeyLen {
		return p, nil, nil, errors.New("argon2 hash")
	}
	return p, salt, hash, nil
}

// dummyHash is checked against for unknown clients, so that they cost
// the same as known ones.
var dummyHash = encodePHC(defaultArgon, make([]byte, clientSaltBytes), make([]byte, argonKeyLen))
