package workload

// Refusals: what a caller that gets no identity is told, and what the
// operator sees. Two causes look alike from outside and need different
// fixes: no entry matches the caller (an admin registers one), or every
// entry that matches names a blocked ID (an admin unblocks it, after
// dealing with the compromise). The caller is told which, and the blocked
// IDs it matches: those are its own, so it learns nothing about others.
// The server logs one line per refusal, at most one per uid per
// refusalLogInterval, so that a caller retrying in a loop cannot flood
// the log.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca"
)

const (
	// refusalLogInterval is the least time between two log lines about
	// refused calls of one uid.
	refusalLogInterval = time.Minute
	// maxRefusalUIDs bounds the memory of the refusal log limiter. When
	// more uids than this were refused within refusalLogInterval, the
	// refusals of further uids are not logged until older marks expire.
	maxRefusalUIDs = 4096
	// maxBlockedIDsShown bounds the blocked IDs a refusal names.
	maxBlockedIDsShown = 3
)

// refuse returns the PermissionDenied error for a caller that matches no
// entry of snap, saying whether its IDs are blocked, and logs the refusal
// (rate-limited per uid).
func (s *Server) refuse(c *caller, snap *ca.Snapshot) error {
	blocked, err := s.blockedEntries(c, snap)
	if err != nil {
		return err
	}
	return s.refuseBlocked(c.peer, blocked)
}

// refuseBlocked logs and returns the refusal of p, which matches the
// blocked entries (none: it is not registered at all).
func (s *Server) refuseBlocked(p *attest.Peer, blocked []*ca.Entry) error {
	ids := blockedIDs(blocked)
	if len(ids) > 0 {
		s.mtr.CallerDenied(DenyBlocked)
	} else {
		s.mtr.CallerDenied(DenyNotRegistered)
	}
	if ok, suppressed := s.refusals.allow(p.UID, time.Now()); ok {
		attrs := []slog.Attr{slog.Int(ca.LogPID, int(p.PID)), slog.Int(ca.LogUID, int(p.UID)), slog.Int(ca.LogGID, int(p.GID))}
		if len(ids) > 0 {
			attrs = append(attrs, slog.String("reason", "blocked"), slog.String(ca.LogSPIFFEID, strings.Join(ids, ",")))
		} else {
			attrs = append(attrs, slog.String("reason", "not registered"))
		}
		attrs = append(attrs, slog.Int("suppressed", suppressed))
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "Workload API caller refused", attrs...)
	}
	return refusal(p, ids)
}

// refusal is the error a refused caller receives.
func refusal(p *attest.Peer, blockedIDs []string) error {
	who := fmt.Sprintf("(pid %d, uid %d, gid %d)", p.PID, p.UID, p.GID)
	if len(blockedIDs) == 0 {
		return status.Errorf(codes.PermissionDenied,
			"no identity issued: no registration entry matches the caller %s; an admin registers one with: badge entry create --id SPIFFE_ID --selector unix:uid:%d",
			who, p.UID)
	}
	shown := blockedIDs[:min(len(blockedIDs), maxBlockedIDsShown)]
	list := strings.Join(shown, ", ")
	if more := len(blockedIDs) - len(shown); more > 0 {
		list += fmt.Sprintf(" and %d more", more)
	}
	return status.Errorf(codes.PermissionDenied,
		"no identity issued: the caller %s matches only blocked IDs: %s; an admin lifts a block with: badge unblock --id %s",
		who, list, blockedIDs[0])
}

// refuseIfBlocked refuses a caller that matches entries of blocked IDs and
// no other entry; a caller that matches no entry at all passes.
func (s *Server) refuseIfBlocked(c *caller, snap *ca.Snapshot) error {
	blocked, err := s.blockedEntries(c, snap)
	if err != nil || len(blocked) == 0 {
		return err
	}
	// The caller was attested for snap.Kinds() already.
	if len(snap.Match(c.sel)) > 0 {
		return nil
	}
	return s.refuseBlocked(c.peer, blocked)
}

// blockedEntries returns the entries of blocked IDs the caller would match,
// attesting it again first if those entries use kinds of selectors it was
// not attested for.
func (s *Server) blockedEntries(c *caller, snap *ca.Snapshot) ([]*ca.Entry, error) {
	k := snap.BlockedKinds()
	if k == 0 {
		return nil, nil
	}
	if k&^c.kinds != 0 {
		if err := s.attest(c, c.kinds|k); err != nil {
			return nil, err
		}
	}
	return snap.MatchBlocked(c.sel), nil
}

// blockedIDs returns the distinct SPIFFE IDs of entries, in order.
func blockedIDs(entries []*ca.Entry) []string {
	var ids []string
	for i, e := range entries {
		if !dupID(entries[:i], e) {
			ids = append(ids, e.ID.String())
		}
	}
	return ids
}

// refusalLimiter lets through at most one log line per uid per
// refusalLogInterval and counts the refusals it held back.
type refusalLimiter struct {
	mu    sync.Mutex
	marks map[uint32]refusalMark
}

type refusalMark struct {
	at         time.Time // when the last line for the uid was logged
	suppressed int       // refusals of the uid not logged since
}

// allow reports whether a refusal of uid at now may be logged, and how many
// refusals of uid were not logged since the previous line.
func (l *refusalLimiter) allow(uid uint32, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m, ok := l.marks[uid]; ok && now.Sub(m.at) < refusalLogInterval {
		m.suppressed++
		l.marks[uid] = m
		return false, 0
	}
	if l.marks == nil {
		l.marks = make(map[uint32]refusalMark)
	}
	suppressed := l.marks[uid].suppressed
	if _, ok := l.marks[uid]; !ok && len(l.marks) >= maxRefusalUIDs {
		for u, m := range l.marks {
			if now.Sub(m.at) >= refusalLogInterval {
				delete(l.marks, u)
			}
		}
		if len(l.marks) >= maxRefusalUIDs {
			return false, 0
		}
	}
	l.marks[uid] = refusalMark{at: now}
	return true, suppressed
}
