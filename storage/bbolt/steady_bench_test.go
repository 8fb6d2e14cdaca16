package bbolt

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

// BenchmarkSerialSteadyState records serials from 16 issuers at a simulated
// rate of 1,000 per second with a one-minute lifetime, pruning the expired
// ones every 5,000 records: the steady state of a daemon under full load,
// where about 60,000 serials are live. It reports the file size at the end,
// which must stop growing once pruning frees as many pages as inserts use.
//
//	go test -run '^$' -bench SerialSteadyState -benchtime 200000x ./storage/bbolt
func BenchmarkSerialSteadyState(b *testing.B) {
	steadyState(b, false)
}

// BenchmarkSerialSteadyStateBind is BenchmarkSerialSteadyState on the
// authority's path: serials reserved in blocks of 512, bound with
// BindSerial, which does not wait for the disk.
func BenchmarkSerialSteadyStateBind(b *testing.B) {
	steadyState(b, true)
}

func steadyState(b *testing.B, bind bool) {
	path := b.TempDir() + "/badge.db"
	s, err := Open(path, &Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const (
		issuers    = 16
		ttl        = time.Minute
		pruneEvery = 5000
	)
	t0 := time.Unix(1_700_000_000, 0)
	at := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	rec := func(n int) storage.Serial {
		issued := at(n)
		return storage.Serial{
			Serial:    fmt.Sprintf("%016x%016x", uint64(n)*0x9e3779b97f4a7c15, n),
			SPIFFEID:  fmt.Sprintf("spiffe://example.org/service/%d", n%16),
			EntryID:   fmt.Sprintf("entry-%d", n%16),
			NotBefore: issued.Add(-30 * time.Second),
			NotAfter:  issued.Add(ttl),
			IssuedAt:  issued,
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(pruneEvery, b.N-done)
		if bind {
			// The blocks this round draws from, reserved as the authority
			// does, one durable write per 512 serials.
			for from := 0; from < n; from += 512 {
				var serials []string
				for i := from; i < min(from+512, n); i++ {
					serials = append(serials, rec(done+i).Serial)
				}
				if err := s.ReserveSerials(ctx, storage.Reservation{Serials: serials, NotAfter: at(done + n).Add(ttl + time.Minute)}); err != nil {
					b.Fatal(err)
				}
			}
		}
		var wg sync.WaitGroup
		for w := range issuers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += issuers {
					r := rec(done + i)
					record := s.RecordSerial
					if bind {
						record = s.BindSerial
					}
					if err := record(ctx, r); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		done += n
		if _, err := s.PruneSerials(ctx, at(done)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "file-MiB")
	var used int64
	if err := s.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		b.Fatal(err)
	}
	// The file grows in steps of bbolt's AllocSize (16 MiB); the pages up
	// to the high-water mark are what the data needs.
	b.ReportMetric(float64(used)/(1<<20), "used-MiB")
	if os.Getenv("BADGE_BENCH_STATS") != "" {
		_ = s.db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
				st := bk.Stats()
				b.Logf("%s: keys %d leaf pages %d alloc %d inuse %d branch %d", name, st.KeyN, st.LeafPageN, st.LeafAlloc, st.LeafInuse, st.BranchPageN)
				return nil
			})
		})
	}
	st := s.db.Stats()
	b.ReportMetric(float64(st.FreePageN), "free-pages")
	b.ReportMetric(float64(st.FreelistInuse)/(1<<10), "freelist-KiB")
}
