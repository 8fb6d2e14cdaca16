package bbolt

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/storagetest"
)

// BenchmarkRecordSerial measures recording serials with real syncs
// (NoSync=false), as concurrent issuers do:
//
//   - batched: Store.RecordSerial, whose group commit writes everything
//     queued while the previous transaction was syncing.
//   - one-tx-each: one db.Update per record, the naive baseline.
//   - db-batch: bbolt's DB.Batch, with MaxBatchSize set to the number of
//     issuers and MaxBatchDelay to 1ms, the alternative to group commit.
//
// records/s is the throughput; records/tx how many records share a
// transaction (batched only).
//
//	go test -run '^$' -bench BenchmarkRecordSerial -benchtime 3s ./storage/bbolt
func BenchmarkRecordSerial(b *testing.B) {
	for _, issuers := range []int{16, 64} {
		b.Run(fmt.Sprintf("batched/issuers=%d", issuers), func(b *testing.B) {
			s := benchStore(b)
			before := s.writeTxs.Load()
			runIssuers(b, issuers, func(r storage.Serial) error {
				return s.RecordSerial(context.Background(), r)
			})
			b.ReportMetric(float64(b.N)/float64(max(1, s.writeTxs.Load()-before)), "records/tx")
		})
		b.Run(fmt.Sprintf("one-tx-each/issuers=%d", issuers), func(b *testing.B) {
			s := benchStore(b)
			runIssuers(b, issuers, func(r storage.Serial) error {
				return s.db.Update(putSerialFunc(r))
			})
		})
		b.Run(fmt.Sprintf("db-batch/issuers=%d", issuers), func(b *testing.B) {
			s := benchStore(b)
			s.db.MaxBatchSize = issuers
			s.db.MaxBatchDelay = time.Millisecond
			runIssuers(b, issuers, func(r storage.Serial) error {
				return recordViaDBBatch(s, r)
			})
		})
	}
	// A lone issuer: the latency of one record, which must not wait for a
	// timer.
	b.Run("batched/issuers=1", func(b *testing.B) {
		s := benchStore(b)
		var n atomic.Int64
		for b.Loop() {
			if err := s.RecordSerial(context.Background(), benchSerial(int(n.Add(1)))); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
}

func benchStore(b *testing.B) *Store {
	s, err := Open(filepath.Join(b.TempDir(), "badge.db"), &Options{NoSync: false})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchSerial(n int) storage.Serial {
	notAfter := time.Now().Add(5 * time.Minute)
	return storage.Serial{
		// Spread like random serials: the low bits vary fastest.
		Serial:    fmt.Sprintf("%016x%016x", uint64(n)*0x9e3779b97f4a7c15, n),
		SPIFFEID:  fmt.Sprintf("spiffe://example.org/service/%d", n%500),
		EntryID:   fmt.Sprintf("entry-%d", n%500),
		NotBefore: notAfter.Add(-5*time.Minute - 30*time.Second),
		NotAfter:  notAfter,
		IssuedAt:  notAfter.Add(-5 * time.Minute),
	}
}

// runIssuers calls record b.N times from the given number of goroutines
// and reports records/s and the median and 99th percentile latency of one
// call.
func runIssuers(b *testing.B, issuers int, record func(storage.Serial) error) {
	b.SetParallelism(max(1, issuers/runtime.GOMAXPROCS(0)))
	var n atomic.Int64
	var mu sync.Mutex
	var all []time.Duration
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var lat []time.Duration
		for pb.Next() {
			r := benchSerial(int(n.Add(1)))
			start := time.Now()
			if err := record(r); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(start))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if len(all) > 0 {
		slices.Sort(all)
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
}

// recordViaDBBatch does what RecordSerial does, but batches with DB.Batch
// instead of the committer. It skips the duplicate check, so it does a
// little less work.
func recordViaDBBatch(s *Store, r storage.Serial) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		keys := newSerialKeys(r)
		recs, ids, err := serialBuckets(tx)
		if err != nil {
			return err
		}
		if err := recs.Put(keys.key, keys.val); err != nil {
			return err
		}
		return ids.Put(keys.idKey, nil)
	})
}

// putSerialFunc writes one record in the caller's transaction, as the
// committer does for each record of a batch.
func putSerialFunc(r storage.Serial) func(*bolt.Tx) error {
	keys := newSerialKeys(r)
	return func(tx *bolt.Tx) error {
		recs, ids, err := serialBuckets(tx)
		if err != nil {
			return err
		}
		if recs.Get(keys.key) != nil {
			return storage.ErrExists
		}
		if err := recs.Put(keys.key, keys.val); err != nil {
			return err
		}
		return ids.Put(keys.idKey, nil)
	}
}

// BenchmarkSerialRecord is the serial recording benchmark every backend
// runs (storagetest.BenchSerialRecord), here on a bbolt file with real
// syncs; storage/etcd runs it on an etcd member.
//
//	go test -run '^$' -bench SerialRecord -benchtime 2s ./storage/...
func BenchmarkSerialRecord(b *testing.B) {
	storagetest.BenchSerialRecord(b, func(b *testing.B) storagetest.Store { return benchStore(b) })
}
