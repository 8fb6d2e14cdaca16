package admin_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/badge-dev/badge/ca/admin"
)

// TestHealthFollowsReadiness: GET /v1/health answers 503 with the
// readiness error while Ready fails, so that badge healthcheck fails.
func TestHealthFollowsReadiness(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	var broken atomic.Bool
	s := startServer(t, e.dir, admin.Config{Authority: e.auth, Ready: func(context.Context) error {
		if broken.Load() {
			return errors.New("not ready: database: disk on fire")
		}
		return nil
	}})
	if err := s.client.Health(ctx); err != nil {
		t.Fatalf("Health while ready: %v", err)
	}
	broken.Store(true)
	err := s.client.Health(ctx)
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Message != "not ready: database: disk on fire" {
		t.Errorf("Health while not ready = %v, want a 503 carrying the readiness error", err)
	}
	broken.Store(false)
	if err := s.client.Health(ctx); err != nil {
		t.Errorf("Health once ready again: %v", err)
	}
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	_, s := newServer(t)
	var out map[string]any
	err := s.client.Status(ctx, &out)
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("Status of a server without one = %v, want 404", err)
	}

	e := newEnv(t)
	s = startServer(t, e.dir, admin.Config{Authority: e.auth, Status: func(context.Context) any {
		return map[string]any{"trust_domain": e.auth.TrustDomain().Name(), "entries": 0}
	}})
	if err := s.client.Status(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if out["trust_domain"] != "example.org" || out["entries"] != float64(0) {
		t.Errorf("Status = %v", out)
	}
}
