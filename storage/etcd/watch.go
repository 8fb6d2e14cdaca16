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
// the trust domain, until ctx is done. It follows etcd watches on the
// directories of entries, revocations, nodes and keys; when a watch ends
// (its history compacted, the connection lost for good) it reports
// storage.ChangeAll, since changes may have been missed, and watches again
// from the current revision.
func (s *Store) Watch(ctx context.Context, fn func(storage.Change)) error {
	for {
		if err := s.check(ctx); err != nil {
			return err
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		events := make(chan storage.Change, len(watched))
		done := make(chan struct{}, len(watched))
		for _, w := range watched {
			ch := s.cli.Watch(wctx, s.p.dir(w.kind), clientv3.WithPrefix(), clientv3.WithKeysOnly())
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
		if err := s.check(ctx); err != nil {
			return err
		}
		fn(storage.ChangeAll)
		select {
		case <-ctx.Done():
		case <-time.After(retryDelay):
		}
	}
}
