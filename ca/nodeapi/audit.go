package nodeapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/logkey"
)

// Refused attestations reach the audit trail aggregated: one record per
// address and interval, with the count of each reason, so that a guesser
// cannot grow the trail at the rate it sends. Successful attestations are
// one record each.

// maxRefusalAddrs bounds the addresses counted in one interval; the rest
// are counted together under otherAddrs.
const (
	maxRefusalAddrs = 1024
	otherAddrs      = "other addresses"
)

// errRefused is the result of a refusal record.
var errRefused = errors.New("attestation refused")

type refusals struct {
	interval time.Duration
	mu       sync.Mutex
	m        map[string]map[string]int // address → reason → count
}

func newRefusals(interval time.Duration) *refusals {
	return &refusals{interval: interval, m: map[string]map[string]int{}}
}

// add counts a refusal of addr for reason.
func (r *refusals) add(addr, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.m[addr]
	if c == nil {
		if len(r.m) >= maxRefusalAddrs {
			addr = otherAddrs
			c = r.m[addr]
		}
		if c == nil {
			c = map[string]int{}
			r.m[addr] = c
		}
	}
	c[reason]++
}

// take returns the counts so far and starts afresh.
func (r *refusals) take() map[string]map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.m
	r.m = map[string]map[string]int{}
	return m
}

// flushAudit writes the refusals counted, every interval and at Shutdown.
func (s *Server) flushAudit() {
	defer s.wg.Done()
	t := time.NewTicker(s.audit.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.writeRefusals()
		case <-s.stop:
			s.writeRefusals()
			return
		}
	}
}

func (s *Server) writeRefusals() {
	m := s.audit.take()
	for _, addr := range slices.Sorted(maps.Keys(m)) {
		reasons := m[addr]
		total := 0
		var parts []string
		for _, r := range slices.Sorted(maps.Keys(reasons)) {
			total += reasons[r]
			parts = append(parts, fmt.Sprintf("%s=%d", r, reasons[r]))
		}
		s.auth.Audit(context.Background(), ca.AuditEvent{AdminUID: s.euid, Action: ca.AuditNodeRefused, Target: addr,
			Detail: fmt.Sprintf("%d attestations refused within %s: %s", total, s.audit.interval, strings.Join(parts, " ")), Err: errRefused})
	}
}

// refuseAttest counts and logs a refused attestation: the log says why,
// the agent is told only that it was refused.
func (s *Server) refuseAttest(ctx context.Context, p *peerInfo, method, reason string, err error) {
	wait := s.attempts.fail(p.addr)
	s.audit.add(p.addr, reason)
	s.metrics.NodeAttestation(method, ResultRefused)
	attrs := []any{slog.String("attestation", method), slog.String("reason", reason), slog.String("remote", remoteOf(ctx)),
		slog.Duration("backoff", wait), slog.Any(logkey.Error, err), slog.Bool(logkey.Audit, true)}
	if p.node != "" {
		attrs = append(attrs, slog.String(logkey.Node, p.node))
	}
	s.log.Warn("node attestation refused", attrs...)
}
