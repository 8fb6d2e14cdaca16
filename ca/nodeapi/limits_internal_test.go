package nodeapi

import (
	"log/slog"
	"testing"
	"time"

	"github.com/badge-dev/badge/internal/testclock"
)

// TestLimiterSweep: a node with nothing open is forgotten once its signing
// bucket has filled up again, not before (reconnecting must not refill
// it), and never while it has a call or stream open.
func TestLimiterSweep(t *testing.T) {
	clk := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := newLimiter(Limits{SignRate: 0.1, SignBurst: 2}.withDefaults(), slog.New(slog.DiscardHandler), clk.Now)
	for range 2 {
		if err := l.sign("drained"); err != nil {
			t.Fatal(err)
		}
	}
	done, err := l.startCall("busy")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.sign("busy"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		after   time.Duration
		present map[string]bool
	}{
		// 11 s at 0.1 per second: 1.1 tokens of 2.
		{11 * time.Second, map[string]bool{"drained": true, "busy": true}},
		{30 * time.Second, map[string]bool{"drained": false, "busy": true}},
	}
	for _, s := range steps {
		clk.Advance(s.after)
		l.mu.Lock()
		l.sweep(clk.Now())
		for node, want := range s.present {
			if _, ok := l.nodes[node]; ok != want {
				t.Errorf("after +%s: node %s kept = %v, want %v", s.after, node, ok, want)
			}
		}
		l.mu.Unlock()
	}
	if err := l.sign("drained"); err != nil {
		t.Errorf("a forgotten node starts with a full bucket: %v", err)
	}
	done()
	clk.Advance(time.Minute)
	l.mu.Lock()
	l.sweep(clk.Now())
	_, ok := l.nodes["busy"]
	l.mu.Unlock()
	if ok {
		t.Error("a node whose call ended and whose bucket is full is still kept")
	}
}
