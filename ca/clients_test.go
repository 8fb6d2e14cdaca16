package ca

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/badge-dev/badge/storage"
)

func TestClientCredentials(t *testing.T) {
	a, env := newTestAuthority(t, nil)
	ctx := context.Background()
	const id = "spiffe://example.org/batch"

	c, secret, err := a.CreateClient(ctx, id)
	if err != nil {
		t.Fatalf("CreateClient: %v", err)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(secret); err != nil || len(raw) != 32 {
		t.Errorf("secret %q: want 32 random bytes, base64url (%v)", secret, err)
	}
	if c.ID != id || c.SPIFFEID != id || !c.CreatedAt.Equal(env.clock.Now()) {
		t.Errorf("client %+v", c)
	}
	stored, err := env.store.GetClient(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored.SecretHash, "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Contains(stored.SecretHash, secret) {
		t.Errorf("stored hash %q: want argon2id (PHC) without the secret", stored.SecretHash)
	}
	if _, _, err := a.CreateClient(ctx, id); !errors.Is(err, storage.ErrExists) {
		t.Errorf("second CreateClient = %v, want ErrExists", err)
	}
	_, secret2, err := a.CreateClient(ctx, "spiffe://example.org/other")
	if err != nil {
		t.Fatal(err)
	}
	if secret2 == secret {
		t.Fatalf("two clients got the same secret")
	}
	if other, _ := env.store.GetClient(ctx, "spiffe://example.org/other"); other.SecretHash[:50] == stored.SecretHash[:50] {
		t.Errorf("two clients share a salt")
	}

	t.Run("authenticate", func(t *testing.T) {
		got, err := a.AuthenticateClient(ctx, id, secret)
		if err != nil || got.ID != id {
			t.Fatalf("good secret: %+v, %v", got, err)
		}
		for name, try := range map[string][2]string{
			"wrong secret":          {id, secret2},
			"empty secret":          {id, ""},
			"secret with extra":     {id, secret + "x"},
			"unknown client":        {"spiffe://example.org/nobody", secret},
			"other client's secret": {"spiffe://example.org/other", secret},
			"huge secret":           {id, strings.Repeat("a", MaxClientSecretLen+1)},
		} {
			if _, err := a.AuthenticateClient(ctx, try[0], try[1]); !errors.Is(err, ErrClientAuth) {
				t.Errorf("%s: %v, want ErrClientAuth", name, err)
			}
		}
	})

	t.Run("token", func(t *testing.T) {
		tok, err := a.SignClientJWTSVID(ctx, a.Snapshot(), c, []string{"queue"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := a.ValidateJWTSVID(a.Snapshot(), tok.Token, "queue")
		if err != nil || got.ID.String() != id {
			t.Fatalf("client token: %+v, %v", got, err)
		}
		if again, _ := a.SignClientJWTSVID(ctx, a.Snapshot(), c, []string{"queue"}); again.Token != tok.Token {
			t.Errorf("the client's token was not cached")
		}
	})

	t.Run("list and delete", func(t *testing.T) {
		list, err := a.ListClients(ctx)
		if err != nil || len(list) != 2 || list[0].ID != id {
			t.Fatalf("ListClients = %+v, %v", list, err)
		}
		if err := a.DeleteClient(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := a.AuthenticateClient(ctx, id, secret); !errors.Is(err, ErrClientAuth) {
			t.Errorf("deleted client authenticated: %v", err)
		}
		if err := a.DeleteClient(ctx, id); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("second DeleteClient = %v, want ErrNotFound", err)
		}
	})

	t.Run("blocked", func(t *testing.T) {
		o, err := env.store.GetClient(ctx, "spiffe://example.org/other")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.RevokeID(ctx, RevokeRequest{SPIFFEID: o.SPIFFEID, Block: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.SignClientJWTSVID(ctx, a.Snapshot(), o, []string{"queue"}); !errors.Is(err, ErrBlocked) {
			t.Errorf("token for a blocked client: %v, want ErrBlocked", err)
		}
	})

	for _, bad := range []string{"", "batch", "spiffe://other.org/batch", "spiffe://example.org"} {
		var inv *InvalidError
		if _, _, err := a.CreateClient(ctx, bad); !errors.As(err, &inv) || inv.Field != "spiffe_id" {
			t.Errorf("CreateClient(%q) = %v, want an InvalidError on spiffe_id", bad, err)
		}
	}
}

func TestServerEntry(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	e, err := a.ServerEntry([]string{"Badge.Example.org", "127.0.0.1", "badge.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := a.SignX509SVID(context.Background(), a.Snapshot(), e)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := x509.ParseCertificates(svid.CertChainDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs[0]
	if id, err := x509svid.IDFromCert(leaf); err != nil || id.String() != "spiffe://example.org/badge/server" {
		t.Errorf("ID %v (%v)", id, err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "badge.example.org" || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if len(a.Snapshot().Match(set(t, "unix:uid:0"))) != 0 {
		t.Errorf("the server's own entry matches a caller")
	}
	if _, err := a.ServerEntry([]string{"bad_name"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad host name: %v", err)
	}
}
