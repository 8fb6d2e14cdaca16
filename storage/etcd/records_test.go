package etcd

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage"
)

// TestCorruptJoinToken puts damaged values where a join token is kept:
// reading that token, or the list, reports ErrCorrupt naming the key and
// nothing panics; reading another token still works.
func TestCorruptJoinToken(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 13, 0, 0, 0, time.UTC)
	sound := storage.JoinToken{Hash: fmt.Sprintf("%064x", 1), Node: "n1", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	bad := fmt.Sprintf("%064x", 2)
	for _, tc := range []struct{ name, val string }{
		{"not JSON", "{"},
		{"wrong type", `{"hash":"` + bad + `","created_at":1}`},
		{"hash mismatch", `{"hash":"` + sound.Hash + `","node":"n1"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := open(t, Options{})
			t.Cleanup(func() { s.Close() })
			if err := s.CreateJoinToken(ctx, sound); err != nil {
				t.Fatal(err)
			}
			key := s.p.key(kindJoinTokens, bad)
			if _, err := s.cli.Put(ctx, key, tc.val); err != nil {
				t.Fatal(err)
			}
			_, getErr := s.GetJoinToken(ctx, bad)
			_, listErr := s.ListJoinTokens(ctx)
			for what, err := range map[string]error{"GetJoinToken": getErr, "ListJoinTokens": listErr} {
				if !errors.Is(err, storage.ErrCorrupt) {
					t.Errorf("%s = %v, want ErrCorrupt", what, err)
				} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", key)) {
					t.Errorf("%s: error %q does not name the key %q", what, err, key)
				}
			}
			if got, err := s.GetJoinToken(ctx, sound.Hash); err != nil || got.Node != "n1" {
				t.Errorf("GetJoinToken(sound) = %+v, %v", got, err)
			}
		})
	}
}
