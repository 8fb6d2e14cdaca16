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
	"github.com/badge-dev/badge/internal/logkey"
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

// refuseBlocked logs and returns the refusal of p, which matches entries
// of the blocked IDs ids (none: it is not registered at all).
func (s *Server) refuseBlocked(p *attest.Peer, ids []string) error {
	if len(ids) > 0 {
		s.mtr.CallerDenied(DenyBlocked)
	} else {
		s.mtr.CallerDenied(DenyNotRegistered)
	}
	if ok, suppressed := s.refusals.allow(p.UID, s.now()); ok {
		attrs := []slog.Attr{slog.Int(logkey.PID, int(p.PID)), slog.Int(logkey.UID, int(p.UID)), slog.Int(logkey.GID, int(p.GID))}
		if len(ids) > 0 {
			attrs = append(attrs, slog.String("reason", "blocked"), slog.String(logkey.SPIFFEID, strings.Join(ids, ",")))
		} else {
			attrs = append(attrs, slog.String("reason", "not registered"))
		}
		attrs = append(attrs, slog.Int("suppressed", suppressed))
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "Workload API caller refused", attrs...)
	}
	node := ""
	if s.node != nil {
		if node = s.node(); node == "" {
			node = "NODE"
		}
	}
	return refusal(p, ids, node)
}

// refusal is the error a refused caller receives; node is the node the
// server serves ("": the server's own host), which an entry for the
// caller must name.
func refusal(p *attest.Peer, blockedIDs []string, node string) error {
	who := fmt.Sprintf("(pid %d, uid %d, gid %d)", p.PID, p.UID, p.GID)
	if len(blockedIDs) == 0 {
		scope := ""
		if node != "" {
			scope = " --node " + node
		}
		return status.Errorf(codes.PermissionDenied,
			"no identity issued: no registration entry matches the caller %s; an admin registers one with: badge entry create --id SPIFFE_ID --selector unix:uid:%d%s",
			who, p.UID, scope)
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
