package etcd

import (
	"context"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage/etcd/etcdtest"
	"github.com/badge-dev/badge/storage/storagetest"
)

// BenchmarkSerialRecord is the serial recording benchmark every backend
// runs (storagetest.BenchSerialRecord), here on one local etcd member
// that syncs its writes, as a production member does; storage/bbolt runs
// it on a bbolt file. Each store has a trust domain of its own on the
// member.
//
//	go test -run '^$' -bench SerialRecord -benchtime 2s ./storage/...
func BenchmarkSerialRecord(b *testing.B) {
	srv := etcdtest.StartDurable(b)
	storagetest.BenchSerialRecord(b, func(b *testing.B) storagetest.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := Open(ctx, Options{Endpoints: []string{srv.Endpoint}, TrustDomain: newTrustDomain(), ReplicaID: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}
