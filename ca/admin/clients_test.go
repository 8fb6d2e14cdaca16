package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/badge-dev/badge/ca/admin"
)

func TestOAuthClients(t *testing.T) {
	ctx := context.Background()
	e, s := newServer(t)
	const id = "spiffe://example.org/batch"

	created, err := s.client.CreateOAuthClient(ctx, id)
	if err != nil {
		t.Fatalf("CreateOAuthClient: %v", err)
	}
	if created.ID != id || created.SPIFFEID != id || len(created.Secret) != 43 {
		t.Fatalf("created %+v", created)
	}
	if _, err := e.auth.AuthenticateClient(ctx, id, created.Secret); err != nil {
		t.Errorf("the returned secret does not authenticate: %v", err)
	}
	audited := false
	for _, r := range s.logs.records(t) {
		if r["audit"] == true && r["method"] == "POST /v1/clients" {
			audited = true
		}
		raw, _ := json.Marshal(r)
		if strings.Contains(string(raw), created.Secret) {
			t.Errorf("the secret is in the server's log: %s", raw)
		}
	}
	if !audited {
		t.Errorf("no audit record of the creation: %v", s.logs.records(t))
	}

	var ae *admin.Error
	if _, err := s.client.CreateOAuthClient(ctx, id); !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Errorf("second CreateOAuthClient = %v, want 409", err)
	}
	if _, err := s.client.CreateOAuthClient(ctx, "spiffe://other.org/batch"); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Field != "spiffe_id" {
		t.Errorf("foreign SPIFFE ID = %v, want 400 on spiffe_id", err)
	}
	if code, body := s.raw(t, http.MethodPost, "/v1/clients", []byte(`{"spiffe_id":"spiffe://example.org/x","secret":"mine"}`)); code != http.StatusBadRequest {
		t.Errorf("unknown field: %d %s", code, body)
	}

	list, err := s.client.ListOAuthClients(ctx)
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("ListOAuthClients = %+v, %v", list, err)
	}
	if code, body := s.raw(t, http.MethodGet, "/v1/clients", nil); code != 200 || strings.Contains(string(body), "secret") {
		t.Errorf("the listing shows secrets or hashes: %s", body)
	}

	if err := s.client.DeleteOAuthClient(ctx, id); err != nil {
		t.Fatalf("DeleteOAuthClient(%s): %v", id, err)
	}
	if err := s.client.DeleteOAuthClient(ctx, id); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("second delete = %v, want 404", err)
	}
	if list, _ := s.client.ListOAuthClients(ctx); len(list) != 0 {
		t.Errorf("after delete: %+v", list)
	}
}
