// Package testclock is an injectable clock for tests: a Config.Time (the
// wall clock) and a Config.Monotonic that move only when told to, so that
// expiry, refresh and rate-limit tests run without waiting real time.
//
// Timers still run on real time: code that sleeps until an instant of the
// injected clock must be woken by an event (a new snapshot, a request)
// after the test advances the clock.
package testclock

import (
	"sync"
	"time"
)

// Clock is a manual clock, safe for concurrent use. Advance moves both its
// readings; Step moves the wall clock only, as a clock set by hand or by a
// bad time source does.
type Clock struct {
	mu    sync.Mutex
	start time.Time
	now   time.Time
	steps time.Duration // sum of the wall-clock steps
}

// New returns a Clock that reads start.
func New(start time.Time) *Clock { return &Clock{start: start, now: start} }

// Now returns the clock's wall time; pass it as a Config.Time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Monotonic returns the time elapsed since the start, without the steps;
// pass it as a Config.Monotonic.
func (c *Clock) Monotonic() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now.Sub(c.start) - c.steps
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Step moves the wall clock only, by d (which may be negative).
func (c *Clock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.steps += d
}

// Steps returns the sum of the wall-clock steps: Step(-Steps()) sets the
// wall clock right again.
func (c *Clock) Steps() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.steps
}
