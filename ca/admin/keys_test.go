package admin_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/storage"
)

// TestKeys: GET /v1/keys lists every key; POST /v1/keys/rotate replaces
// the key of a kind, the old one retired; a request that names no known
// kind, or does not decode, is a 400 and changes nothing; both failures
// and rotations are in the audit trail.
func TestKeys(t *testing.T) {
	ctx := context.Background()
	e, s := newServer(t)
	before, err := s.client.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 3 {
		t.Fatalf("ListKeys = %+v, want a root, an intermediate and a JWT key", before)
	}
	res, err := s.client.RotateKey(ctx, ca.RotateJWT)
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != ca.RotateJWT || res.Active.State != storage.KeyActive || res.Retired == nil || res.Retired.ID != before[2].ID {
		t.Errorf("RotateKey(jwt) = %+v, want a new active key replacing %s", res, before[2].ID)
	}
	for _, tc := range []struct {
		name, body string
		field      string
	}{
		{"unknown kind", `{"kind":"leaf"}`, "kind"},
		{"no kind", `{}`, "kind"},
		{"unknown field", `{"kind":"jwt","now":true}`, ""},
		{"not JSON", `jwt`, ""},
	} {
		code, body := s.raw(t, http.MethodPost, "/v1/keys/rotate", []byte(tc.body))
		if code != http.StatusBadRequest {
			t.Errorf("%s: POST /v1/keys/rotate %s = %d %s, want 400", tc.name, tc.body, code, body)
		}
	}
	var ae *admin.Error
	if _, err := s.client.RotateKey(ctx, "leaf"); !errors.As(err, &ae) || ae.Field != "kind" {
		t.Errorf("RotateKey(leaf) = %v, want a 400 naming the field kind", err)
	}
	after, err := s.client.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 4 {
		t.Errorf("after one rotation ListKeys holds %d keys, want 4: %+v", len(after), after)
	}
	recs, _, err := e.auth.AuditList(ctx, 0, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	ok, failed := 0, 0
	for _, r := range recs {
		if r.Action != ca.AuditKeyRotate {
			continue
		}
		if r.Result == ca.AuditResultOK {
			ok++
		} else {
			failed++
		}
	}
	if ok != 1 || failed != 5 {
		t.Errorf("audit: %d key.rotate records ok, %d failed; want 1 and 5", ok, failed)
	}
}
