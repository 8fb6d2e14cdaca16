package ca

import (
	"log/slog"
	"sync"
	"time"
)

// DefaultPruneMargin is how long past expiry the records of revoked and
// issued credentials are kept by default: the largest error of the wall
// clock badge tolerates without dropping a record a live credential needs.
const DefaultPruneMargin = time.Hour

// clockStepWarn is how far the wall clock may run ahead of the monotonic
// clock before pruning says so in the log.
const clockStepWarn = Backdate

// pruneClock is the time pruning trusts: the wall clock (Config.Time), but
// never further than the monotonic clock (Config.Monotonic) has advanced
// since the last reading. A wall clock stepped forward is therefore not
// believed until it is restarted; one stepped back is believed at once,
// since pruning later is always safe. Deleting records on a clock that ran
// ahead would drop revocations of credentials that are still valid.
type pruneClock struct {
	start time.Duration // the monotonic reading when the authority started

	mu     sync.Mutex
	wall   time.Time     // the last trusted time
	mono   time.Duration // the monotonic reading then
	warned time.Duration // the lead last logged
}

// trust returns the time pruning may use given the current wall and
// monotonic readings, and how far the wall clock is ahead of it.
func (p *pruneClock) trust(wall time.Time, mono time.Duration) (time.Time, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	trusted := wall
	if limit := p.wall.Add(mono - p.mono); wall.After(limit) {
		trusted = limit
	}
	p.wall, p.mono = trusted, mono
	return trusted, wall.Sub(trusted)
}

// trustedNow is the time pruning and "still valid" judgements use; it logs
// once, and again when the lead changes, that the wall clock ran ahead.
func (a *Authority) trustedNow() time.Time {
	wall := a.cfg.Time()
	t, ahead := a.prune.trust(wall, a.cfg.Monotonic())
	a.prune.mu.Lock()
	defer a.prune.mu.Unlock()
	if ahead > clockStepWarn && (ahead-a.prune.warned > clockStepWarn || a.prune.warned-ahead > clockStepWarn) {
		a.prune.warned = ahead
		a.log.Warn("the wall clock ran ahead of the monotonic clock; pruning keeps to the monotonic clock and deletes nothing on the jump",
			slog.Duration("ahead", ahead.Round(time.Second)), slog.Time("wall", wall.UTC()), slog.Time("trusted", t.UTC()))
	} else if ahead <= clockStepWarn {
		a.prune.warned = 0
	}
	return t
}

// pruneReady reports whether the authority has run long enough, on the
// monotonic clock, for every credential issued before it started (by an
// earlier process, on whatever clock that had) to have expired in real
// time. Until then nothing is pruned: a wall clock that is wrong when
// badge starts cannot make pruning drop the record of a live credential.
func (a *Authority) pruneReady() bool {
	return a.cfg.Monotonic()-a.prune.start >= a.longestLife()
}

// longestLife is the longest a credential may stay valid after it was
// issued: the longest lifetime, the backdating of NotBefore, and the
// second a JWT-SVID's iat may be moved forward (signJWT). The JWT lifetime
// is the one in force, which SetTTLs may have raised.
func (a *Authority) longestLife() time.Duration {
	return max(a.cfg.MaxSVIDTTL, time.Duration(a.jwtTTL.Load())) + Backdate + time.Second
}
