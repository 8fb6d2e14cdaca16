package testclock

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	start := time.Date(2041, time.March, 4, 5, 6, 7, 0, time.UTC)
	c := New(start)
	c.Advance(3 * time.Second)
	c.Step(-time.Hour)
	c.Advance(time.Second)
	if got, want := c.Now(), start.Add(4*time.Second-time.Hour); !got.Equal(want) {
		t.Errorf("Now = %v, want %v", got, want)
	}
	if got, want := c.Steps(), -time.Hour; got != want {
		t.Errorf("Steps = %v, want %v", got, want)
	}
	if got, want := c.Monotonic(), 4*time.Second; got != want {
		t.Errorf("Monotonic = %v, want %v", got, want)
	}
}
