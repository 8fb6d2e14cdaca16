package etcd

import (
	"context"
	"log/slog"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/badge-dev/badge/storage"
)

// Store elects one server of the trust domain for singleton work.
var _ storage.Elector = (*Store)(nil)

// electRetry is how long the campaign waits after etcd refused it.
const electRetry = time.Second

// Lead reports whether this server leads the servers of the trust domain
// now, and returns a channel closed when that may have changed. The first
// call starts the campaign: an etcd election (concurrency.Election) under
// /badge/TRUST_DOMAIN/election/ on a session whose lease is the run TTL.
// The leader leads until its session ends: Close resigns at once; a
// leader that dies or loses etcd loses its lease, and another server's
// campaign wins, within the run TTL. The leader also compacts etcd's
// history, every Options.CompactInterval (see compact.go).
func (s *Store) Lead() (bool, <-chan struct{}) {
	s.electOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopElect = cancel
		s.electDone = make(chan struct{})
		go s.campaign(ctx)
	})
	s.electMu.Lock()
	defer s.electMu.Unlock()
	return s.leading, s.leadChanged
}

// setLeading records whether this server leads, and wakes the callers of
// Lead when it changed.
func (s *Store) setLeading(v bool) {
	s.electMu.Lock()
	defer s.electMu.Unlock()
	if s.leading == v {
		return
	}
	s.leading = v
	close(s.leadChanged)
	s.leadChanged = make(chan struct{})
}

// campaign runs the election until ctx is done: it campaigns, leads until
// its session ends, and campaigns again on a new session.
func (s *Store) campaign(ctx context.Context) {
	defer close(s.electDone)
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(electRetry):
			return true
		}
	}
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(max(int(s.runTTL/time.Second), 2)), concurrency.WithContext(ctx))
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("starting an election session failed; trying again", slog.Any("error", err))
			}
			if !wait() {
				return
			}
			continue
		}
		el := concurrency.NewElection(sess, s.p.dir("election"))
		// The campaign stops when the session ends while it waits: a
		// campaign on an expired lease would win nothing.
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done():
				cancel()
			case <-cctx.Done():
			}
		}()
		err = el.Campaign(cctx, s.replica)
		if err == nil {
			s.setLeading(true)
			s.log.Info("this server leads the singleton work of the trust domain")
			// The leader compacts etcd's history while it leads.
			lctx, stopCompact := context.WithCancel(ctx)
			compactDone := make(chan struct{})
			if s.compactEvery > 0 {
				go func() {
					defer close(compactDone)
					s.compactLoop(lctx)
				}()
			} else {
				close(compactDone)
			}
			select {
			case <-sess.Done():
				s.log.Warn("the election session ended; this server no longer leads")
			case <-ctx.Done():
			}
			stopCompact()
			<-compactDone
			s.setLeading(false)
		}
		cancel()
		rctx, rcancel := context.WithTimeout(context.Background(), s.timeout)
		if err == nil && ctx.Err() != nil {
			_ = el.Resign(rctx) // hand over at once on a clean shutdown
		}
		_ = sess.Close() // revokes the session's lease
		rcancel()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("campaigning failed; trying again", slog.Any("error", err))
			if !wait() {
				return
			}
		}
	}
}
