package workload

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
)

func TestRefusalLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type call struct {
		uid        uint32
		after      time.Duration // since t0
		allow      bool
		suppressed int
	}
	tests := []struct {
		name  string
		calls []call
	}{
		{"first refusal is logged", []call{{1001, 0, true, 0}}},
		{"one line per uid per minute", []call{
			{1001, 0, true, 0},
			{1001, time.Second, false, 0},
			{1001, 59 * time.Second, false, 0},
			{1001, time.Minute, true, 2},
			{1001, time.Minute + time.Second, false, 0},
		}},
		{"uids are independent", []call{
			{1001, 0, true, 0},
			{1002, time.Second, true, 0},
			{1001, 2 * time.Second, false, 0},
			{1002, 3 * time.Second, false, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l refusalLimiter
			for i, c := range tt.calls {
				ok, n := l.allow(c.uid, t0.Add(c.after))
				if ok != c.allow || n != c.suppressed {
					t.Errorf("call %d (uid %d at +%s) = %v, %d; want %v, %d", i, c.uid, c.after, ok, n, c.allow, c.suppressed)
				}
			}
		})
	}
}

// TestRefusalLimiterBounded: the limiter remembers at most maxRefusalUIDs
// uids; past that it logs for new uids again once old marks expire.
func TestRefusalLimiterBounded(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var l refusalLimiter
	for uid := range uint32(maxRefusalUIDs) {
		if ok, _ := l.allow(uid, t0); !ok {
			t.Fatalf("uid %d: first refusal not logged", uid)
		}
	}
	if ok, _ := l.allow(maxRefusalUIDs, t0); ok {
		t.Error("a uid past the bound was logged within the interval")
	}
	if len(l.marks) > maxRefusalUIDs {
		t.Errorf("limiter holds %d uids, more than %d", len(l.marks), maxRefusalUIDs)
	}
	if ok, _ := l.allow(maxRefusalUIDs, t0.Add(refusalLogInterval)); !ok {
		t.Error("a new uid was not logged after the old marks expired")
	}
	if len(l.marks) != 1 {
		t.Errorf("after expiry the limiter holds %d uids, want 1", len(l.marks))
	}
}

// TestRefusalHint: the command a refused caller is given registers an
// entry that reaches the server that refused it: scoped to the node when
// that is an agent's.
func TestRefusalHint(t *testing.T) {
	p := &attest.Peer{PID: 42, UID: 1002, GID: 1002}
	tests := []struct {
		node, want string
	}{
		{"", "an admin registers one with: badge entry create --id SPIFFE_ID --selector unix:uid:1002"},
		{"web-1", "an admin registers one with: badge entry create --id SPIFFE_ID --selector unix:uid:1002 --node web-1"},
	}
	for _, tt := range tests {
		if got := status.Convert(refusal(p, nil, tt.node)).Message(); !strings.HasSuffix(got, tt.want) {
			t.Errorf("refusal on node %q = %q, want it to end %q", tt.node, got, tt.want)
		}
	}
}
