package etcd

import (
	"context"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/badge-dev/badge/storage"
)

// Store reports the changes every server makes.
var _ storage.Watcher = (*Store)(nil)

// watched maps the directories a Watch follows to what their changes are.
// Serial records, written at the rate of issuance, are not watched.
var watched = []struct {
	kind   string
	change storage.Change
}{
	{kindEntries, storage.ChangeEntries},
	{kindRevokedIDs, storage.ChangeRevocations},
	{kindRevokedSerials, storage.ChangeRevocations},
	{kindNodes, storage.ChangeNodes},
	{kindKeys, storage.ChangeKeys},
}

// Watch calls fn with the kinds of record that changed, on any server of
// the trust domain, since the store was opened (so that a change made
// between Open and the caller's first reads is reported, not lost), until
// ctx is done. It follows etcd watches on the directories of entries,
// revocations, nodes and keys; when a watch ends (its history compacted,
// the connection lost for good) it watches again from the current
// revision and reports storage.ChangeAll, since changes may have been
// missed.
func (s *Store) Watch(ctx context.Context, fn func(storage.Change)) error {
	from := s.openRev + 1
	pendingAll := false
	for {
		if err := s.check(ctx); err != nil {
			return err
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		events := make(chan storage.Change, len(watched))
		done := make(chan struct{}, len(watched))
		for _, w := range watched {
			ch := s.cli.Watch(wctx, s.p.dir(w.kind), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(from))
			go func() {
				defer func() { done <- struct{}{} }()
				for resp := range ch {
					if err := resp.Err(); err != nil {
						s.log.Warn("etcd watch failed; watching again", slog.String("dir", w.kind), slog.Any("error", err))
						return
					}
					if len(resp.Events) > 0 {
						select {
						case events <- w.change:
						case <-wctx.Done():
							return
						}
					}
				}
			}()
		}
		if pendingAll {
			fn(storage.ChangeAll)
			pendingAll = false
		}
		ended := false
		for !ended {
			select {
			case c := <-events:
				// Take what else arrived meanwhile: one call per burst.
				for more := true; more; {
					select {
					case d := <-events:
						c |= d
					default:
						more = false
					}
				}
				fn(c)
			case <-done:
				ended = true
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(retryDelay):
		}
		// Watch again from now, then have everything read again: what
		// changed while no watch ran is in those reads.
		var rev int64
		err := s.do(ctx, func(ctx context.Context) error {
			resp, err := s.cli.Get(ctx, s.p.meta("schema"))
			if err == nil {
				rev = resp.Header.Revision
			}
			return err
		})
		if err := s.check(ctx); err != nil {
			return err
		}
		if err != nil {
			// Watch again from where the last watch started: if etcd
			// still has that history, it replays what was missed.
			s.log.Warn("etcd unreachable; watching again", slog.Any("error", err))
		} else {
			from = rev + 1
		}
		pendingAll = true
	}
}
