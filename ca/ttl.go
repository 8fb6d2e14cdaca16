package ca

import (
	"fmt"
	"time"
)

// TTLs are the lifetimes the authority gives credentials it signs from now
// on. They may change while the authority runs ([Authority.SetTTLs]);
// everything else in Config is fixed when it starts.
type TTLs struct {
	// SVID is the lifetime of an X.509-SVID whose entry sets none
	// (Config.SVIDTTL).
	SVID time.Duration
	// JWT is the lifetime of a JWT-SVID (Config.JWTTTL).
	JWT time.Duration
}

// TTLs returns the lifetimes in force.
func (a *Authority) TTLs() TTLs {
	return TTLs{SVID: time.Duration(a.svidTTL.Load()), JWT: time.Duration(a.jwtTTL.Load())}
}

// SetTTLs replaces the lifetimes of credentials signed from now on and
// returns the previous ones. Credentials already signed, and JWT-SVIDs
// cached for reuse, keep the lifetime they were signed with. A zero field
// keeps its current value. The bounds of Config hold as at start: the SVID
// lifetime is between MinSVIDTTL and Config.MaxSVIDTTL (which does not
// change while the authority runs, since serial reservations and the
// intermediate's lifetime are sized from it), the JWT lifetime between
// MinSVIDTTL and DefaultJWTTTL; a value out of bounds changes nothing.
func (a *Authority) SetTTLs(t TTLs) (TTLs, error) {
	a.ttlMu.Lock()
	defer a.ttlMu.Unlock()
	old := a.TTLs()
	if t.SVID == 0 {
		t.SVID = old.SVID
	}
	if t.JWT == 0 {
		t.JWT = old.JWT
	}
	switch {
	case t.SVID < MinSVIDTTL:
		return old, fmt.Errorf("ca: SVID TTL %s is below the minimum %s", t.SVID, MinSVIDTTL)
	case t.SVID > a.cfg.MaxSVIDTTL:
		return old, fmt.Errorf("ca: SVID TTL %s exceeds the maximum SVID TTL %s, which changes only on a restart", t.SVID, a.cfg.MaxSVIDTTL)
	case t.JWT < MinSVIDTTL || t.JWT > DefaultJWTTTL:
		return old, fmt.Errorf("ca: JWT TTL %s must be between %s and %s", t.JWT, MinSVIDTTL, DefaultJWTTTL)
	case t.JWT > a.cfg.JWTPrepareLead:
		return old, fmt.Errorf("ca: JWT TTL %s exceeds the JWT prepare lead %s, which changes only on a restart", t.JWT, a.cfg.JWTPrepareLead)
	}
	a.svidTTL.Store(int64(t.SVID))
	a.jwtTTL.Store(int64(t.JWT))
	if int64(t.JWT) > a.jwtTTLMax.Load() {
		a.jwtTTLMax.Store(int64(t.JWT))
	}
	return old, nil
}

// effectiveTTL is the lifetime of an SVID for entry e: the entry's own,
// else the SVID TTL in force, at most Config.MaxSVIDTTL.
func (a *Authority) effectiveTTL(e *Entry) time.Duration {
	ttl := e.Record.TTL
	if ttl <= 0 {
		ttl = time.Duration(a.svidTTL.Load())
	}
	return min(ttl, a.cfg.MaxSVIDTTL)
}
