package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/badge-dev/badge/ca/internal/clientsecret"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// OAuth clients: a workload that cannot reach a Workload API socket (it
// runs on another host, behind a queue) gets JWT-SVIDs from the token
// endpoint of the public listener by presenting a client secret. The
// secret is 32 random bytes, shown once when the client is created; the
// store keeps only its argon2id hash with a per-client salt (package
// ca/internal/clientsecret makes and checks both).

// ErrClientAuth is returned by AuthenticateClient for an unknown client
// and for a wrong secret alike: callers must not tell the two apart.
var ErrClientAuth = errors.New("ca: client authentication failed")

// ClientStore is the part of a Store that keeps OAuth clients
// (storage.Clients).
type ClientStore = storage.Clients

// MaxClientSecretLen bounds a presented secret; longer ones are refused
// without hashing.
const MaxClientSecretLen = 512

// clientPrefix marks the token cache key of an OAuth client, which can
// never be an entry id (entry ids are hex).
const clientPrefix = "client:"

// CreateClient registers an OAuth client whose tokens are for spiffeID
// (the client ID is the SPIFFE ID) and returns it with its secret, which
// is not stored and cannot be shown again.
func (a *Authority) CreateClient(ctx context.Context, spiffeID string) (storage.Client, string, error) {
	id, err := parseID(a.cfg.TrustDomain, spiffeID)
	if err != nil {
		return storage.Client{}, "", err
	}
	if err := checkNotReserved(id, spiffeID); err != nil {
		return storage.Client{}, "", err
	}
	cs := a.store
	secret, hash, err := clientsecret.New()
	if err != nil {
		return storage.Client{}, "", fmt.Errorf("ca: %w", err)
	}
	c := storage.Client{
		ID:         id.String(),
		SPIFFEID:   id.String(),
		SecretHash: hash,
		CreatedAt:  a.cfg.Time().UTC(),
	}
	if err := cs.CreateClient(ctx, c); err != nil {
		if errors.Is(err, storage.ErrExists) {
			return storage.Client{}, "", fmt.Errorf("ca: an OAuth client for %s already exists (delete it first to issue a new secret): %w", id, err)
		}
		return storage.Client{}, "", fmt.Errorf("ca: storing client: %w", err)
	}
	a.log.Info("OAuth client created", slog.String("client_id", c.ID), slog.String(logkey.SPIFFEID, c.SPIFFEID), slog.Bool(logkey.Audit, true))
	return c, secret, nil
}

// ListClients returns every OAuth client in (CreatedAt, ID) order.
func (a *Authority) ListClients(ctx context.Context) ([]storage.Client, error) {
	cs := a.store
	return cs.ListClients(ctx)
}

// DeleteClient removes an OAuth client: its secret stops working at once;
// tokens already issued expire within the JWT TTL (revoke the SPIFFE ID to
// end them sooner).
func (a *Authority) DeleteClient(ctx context.Context, id string) error {
	cs := a.store
	if err := cs.DeleteClient(ctx, id); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("ca: client %q: %w", id, err)
		}
		return fmt.Errorf("ca: deleting client %s: %w", id, err)
	}
	a.log.Info("OAuth client deleted", slog.String("client_id", id), slog.Bool(logkey.Audit, true))
	return nil
}

// AuthenticateClient checks a client's secret. An unknown client costs
// the same hash as a known one, and both fail with ErrClientAuth. The
// comparison is constant-time. Each call costs tens of milliseconds of
// CPU: callers must rate-limit it.
func (a *Authority) AuthenticateClient(ctx context.Context, id, secret string) (storage.Client, error) {
	cs := a.store
	if len(secret) > MaxClientSecretLen || len(id) > storage.MaxIDLen {
		return storage.Client{}, ErrClientAuth
	}
	c, err := cs.GetClient(ctx, id)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return storage.Client{}, fmt.Errorf("ca: looking up client: %w", err)
	}
	stored := c.SecretHash
	if err != nil {
		stored = "" // unknown client: Check costs the same
	}
	ok, herr := clientsecret.Check(stored, secret)
	if herr != nil {
		a.log.Error("OAuth client has an unreadable secret hash", slog.String("client_id", id), slog.Any(logkey.Error, herr))
	}
	if !ok {
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
