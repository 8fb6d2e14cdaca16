package etcd

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Stats are the figures of the store that metrics report.
type Stats struct {
	// DBBytes is the size of the database of the first endpoint that
	// answers: the whole cluster's keys, every trust domain's.
	DBBytes int64
	// Serials is the number of serial records of this trust domain.
	Serials int
}

// Stats counts the serial records and asks an endpoint for its database
// size.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.do(ctx, func(ctx context.Context) error {
		dir := s.p.dir(kindSerials)
		resp, err := s.cli.Get(ctx, dir, clientv3.WithRange(rangeEnd(dir)), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		st.Serials = int(resp.Count)
		for _, ep := range s.cli.Endpoints() {
			if sr, err := s.cli.Status(ctx, ep); err == nil {
				st.DBBytes = sr.DbSize
				break
			}
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("storage/etcd: statistics: %w", err)
	}
	return st, nil
}

// Compactions returns how many times this store compacted etcd's history
// while it led (see compact.go), and the revision the last compaction
// went to (0 before the first). It asks etcd nothing.
func (s *Store) Compactions() (n uint64, revision int64) {
	return s.compactions.Load(), s.compactedRev.Load()
}

// Ping checks that the cluster answers a linearizable read, which needs a
// quorum: what every write needs too.
func (s *Store) Ping(ctx context.Context) error {
	start := time.Now()
	err := s.do(ctx, func(ctx context.Context) error {
		_, err := s.cli.Get(ctx, s.p.meta("schema"))
		return err
	})
	if err != nil {
		return fmt.Errorf("storage/etcd: no quorum answered within %s: %w", time.Since(start).Round(time.Millisecond), err)
	}
	return nil
}
