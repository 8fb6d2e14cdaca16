package workload

import (
	"log/slog"
	"testing"
	"time"

	"github.com/badge-dev/badge/internal/testclock"
)

// TestLimiterSweep: a uid with nothing open is forgotten once its signing
// bucket has filled up again (also after a charge took it below zero), not
// before: reconnecting must not refill it.
func TestLimiterSweep(t *testing.T) {
	clk := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := newLimiter(Limits{SignRate: 0.1, SignBurst: 2, Time: clk.Now}, slog.New(slog.DiscardHandler))
	l.mu.Lock()
	if !l.state(1001).bucket.AllowN(clk.Now(), 2) {
		t.Fatal("a new bucket does not hold its burst")
	}
	l.state(1002).bucket.ReserveN(clk.Now(), 2) // charges after the fact: 0, then -2
	l.state(1002).bucket.ReserveN(clk.Now(), 2)
	l.state(1003).conns = 1
	l.mu.Unlock()
	steps := []struct {
		after   time.Duration
		present map[uint32]bool
	}{
		{11 * time.Second, map[uint32]bool{1001: true, 1002: true, 1003: true}}, // 1.1 and -0.9 tokens of 2
		{10 * time.Second, map[uint32]bool{1001: false, 1002: true, 1003: true}},
		{30 * time.Second, map[uint32]bool{1001: false, 1002: false, 1003: true}},
	}
	for _, s := range steps {
		clk.Advance(s.after)
		l.mu.Lock()
		l.sweep(clk.Now())
		for uid, want := range s.present {
			if _, ok := l.uids[uid]; ok != want {
				t.Errorf("after +%s: uid %d kept = %v, want %v", s.after, uid, ok, want)
			}
		}
		l.mu.Unlock()
	}
}
