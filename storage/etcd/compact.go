package etcd

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// How the leader compacts etcd's history.
//
// etcd keeps every revision of every key until it is compacted, and
// badge writes (and later deletes) one serial record per certificate it
// issues: a cluster nobody compacts fills its quota within hours of
// steady issuance, raises a NOSPACE alarm and refuses every write, and
// every server stops issuing. So the server that leads (see Lead) does
// what kube-apiserver does for its own etcd: every interval it reads the
// cluster's revision, and compacts to the revision it read one interval
// earlier. Every revision older than one interval goes, none newer: a
// watch, or a read at a revision, that is less than one interval behind
// never meets a compacted revision. A watch further behind (a server cut
// off from etcd for longer) finds its history gone, and Watch starts
// again from the current state.
//
// The compaction is etcd's default, not physical: the call returns once
// the cluster has agreed on it, and each member deletes the old
// revisions in the background. It frees room inside the members'
// database files for later writes; only a defragmentation
// (etcdctl defrag) shrinks the files.
//
// Compaction applies to the whole cluster, not to one trust domain's
// prefix. The leaders of several trust domains sharing a cluster each
// compact it; that is harmless (a compaction to a revision already
// compacted changes nothing, and succeeds). On a cluster shared with
// software that needs a longer history, compact by other means and set
// Options.CompactInterval negative.
//
// Only the leader compacts, from when it wins the election until its
// session ends or the store closes. A new leader starts afresh: it reads
// the revision at once, and compacts one interval later. A cluster
// written nothing since the last compaction is not compacted again (the
// call would go through the cluster's log for nothing). A failure (etcd
// unreachable, no quorum) is logged, at most once per compactLogEvery,
// and the next interval tries again; it never stops the server.

// DefaultCompactInterval is Options.CompactInterval when zero: the
// interval of kube-apiserver's compactor.
const DefaultCompactInterval = 5 * time.Minute

// compactLogEvery is the least time between two warnings of failed
// compactions while they keep failing.
const compactLogEvery = 15 * time.Minute

// compactLoop compacts the cluster every s.compactEvery until ctx is done
// (this server stopped leading, or the store closes).
func (s *Store) compactLoop(ctx context.Context) {
	t := time.NewTicker(s.compactEvery)
	defer t.Stop()
	var (
		recorded int64 // the revision read one interval ago; 0: none yet
		failures int   // since the last success
		warned   time.Time
	)
	fail := func(what string, err error) {
		if ctx.Err() != nil || s.closed.Load() {
			return // stopped leading, or closing: not a failure
		}
		failures++
		if failures == 1 || time.Since(warned) >= compactLogEvery {
			warned = time.Now()
			s.log.Warn("compacting etcd's history failed; trying again at the next interval",
				slog.String("step", what), slog.Int("failures", failures), slog.Duration("interval", s.compactEvery), slog.Any("error", err))
		}
	}
	for {
		// Nothing was written since the last compaction (an idle
		// cluster): nothing to compact.
		if rev := recorded; rev > s.compactedRev.Load() {
			start := time.Now()
			err := s.do(ctx, func(ctx context.Context) error {
				_, err := s.cli.Compact(ctx, rev)
				if errors.Is(err, rpctypes.ErrCompacted) {
					return nil // already compacted to it or past it: done
				}
				return err
			})
			if err != nil {
				fail("compact", err)
			} else {
				failures = 0
				s.compactions.Add(1)
				s.compactedRev.Store(rev)
				s.log.Info("compacted etcd history", slog.Int64("revision", rev), slog.Duration("took", time.Since(start)))
				if s.onCompact != nil {
					s.onCompact(rev)
				}
			}
		}
		// The revision of now, compacted to at the next interval. After
		// a failed compaction a failed read keeps the revision read
		// before: older still, as safe to compact to.
		if rev, err := s.revision(ctx); err != nil {
			fail("read the revision", err)
		} else {
			recorded = rev
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// revision returns the cluster's current revision, from the header of a
// count of one key (the schema version): a linearizable read, so the
// revision is the cluster's, not a lagging member's.
func (s *Store) revision(ctx context.Context) (int64, error) {
	var rev int64
	err := s.do(ctx, func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.p.meta("schema"), clientv3.WithCountOnly())
		if err == nil {
			rev = resp.Header.Revision
		}
		return err
	})
	return rev, err
}
