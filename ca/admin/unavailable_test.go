package admin_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/storage/etcd"
	"github.com/badge-dev/badge/storage/etcd/etcdtest"
)

// TestStoreUnavailable: with the etcd store unreachable, an admin request
// that needs it answers 503 naming the endpoint, not 500.
func TestStoreUnavailable(t *testing.T) {
	srv := etcdtest.Start(t, nil)
	dir := shortTempDir(t)
	st, err := etcd.Open(t.Context(), etcd.Options{Endpoints: []string{srv.Endpoint}, TrustDomain: "example.org", ReplicaID: "a", Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, err := ca.New(context.Background(), ca.Config{Store: st, KeyDir: filepath.Join(dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	s := startServer(t, dir, admin.Config{Authority: a})
	srv.Stop()
	_, err = s.client.CreateEntry(context.Background(), admin.EntryRequest{SPIFFEID: "spiffe://example.org/api", Selectors: []string{"unix:uid:1000"}})
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || !strings.Contains(err.Error(), srv.Endpoint) {
		t.Fatalf("CreateEntry with etcd down = %v; want status 503 naming %s", err, srv.Endpoint)
	}
}
