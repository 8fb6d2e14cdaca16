package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time (user and system) the process has used: every
// goroutine, the bbolt committer and the garbage collector included.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureCPU starts counting the process's CPU time; the function it
// returns reports it per operation as cpu-ns/op. Unlike ns/op, that figure
// does not depend on what else the machine is running.
func measureCPU(b *testing.B) (stop func()) {
	start := cpuTime(b)
	return func() {
		b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
	}
}

// benchAuthority is an authority on a real bbolt store (fsync per commit
// unless noSync) with one entry, on the real clock.
func benchAuthority(b *testing.B, noSync bool) (*Authority, *Snapshot, *Entry) {
	b.Helper()
	dir := b.TempDir()
	a, err := New(context.Background(), Config{Store: openStore(b, dir, noSync), KeyDir: dir + "/keys"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	e, err := a.CreateEntry(context.Background(), EntryRequest{
		SPIFFEID:  "spiffe://example.org/bench/api",
		Selectors: []string{"unix:uid:1000"},
		DNSNames:  []string{"api.example.org"},
	})
	if err != nil {
		b.Fatal(err)
	}
	s := a.Snapshot()
	for _, pe := range s.Entries() {
		if pe.Record.ID == e.ID {
			return a, s, pe
		}
	}
	b.Fatal("entry missing from the snapshot")
	return nil, nil, nil
}

// BenchmarkSignX509SVID is the whole issuance: key generation, serial,
// signing, PKCS#8 encoding and the durable serial record. Compare it with
// BenchmarkRawCreateCertificate; the design's bound is 2×.
func BenchmarkSignX509SVID(b *testing.B) {
	for _, store := range []struct {
		name   string
		noSync bool
	}{
		{"store=nosync", true},
		{"store=fsync", false},
	} {
		b.Run(store.name+"/run=serial", func(b *testing.B) {
			a, s, e := benchAuthority(b, store.noSync)
			ctx := context.Background()
			b.ReportAllocs()
			defer measureCPU(b)()
			for b.Loop() {
				if _, err := a.SignX509SVID(ctx, s, e); err != nil {
					b.Fatal(err)
				}
			}
		})
		// parallel: one caller per CPU; parallel8: eight per CPU, as when
		// many workloads fetch at once, so that serial records are
		// committed in groups.
		for _, p := range []int{1, 8} {
			name := store.name + "/run=parallel"
			if p > 1 {
				name += strconv.Itoa(p)
			}
			b.Run(name, func(b *testing.B) {
				a, s, e := benchAuthority(b, store.noSync)
				ctx := context.Background()
				b.ReportAllocs()
				b.SetParallelism(p)
				defer measureCPU(b)()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := a.SignX509SVID(ctx, s, e); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkRawCreateCertificate is the baseline: a fresh P-256 key and
// x509.CreateCertificate of the same template with the same intermediate,
// and nothing else.
func BenchmarkRawCreateCertificate(b *testing.B) {
	sign := func(s *Snapshot, e *Entry) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		now := time.Now()
		tmpl := *e.tmpl
		tmpl.SerialNumber = big.NewInt(1)
		tmpl.NotBefore = now.Add(-Backdate)
		tmpl.NotAfter = now.Add(DefaultSVIDTTL)
		_, err = x509.CreateCertificate(rand.Reader, &tmpl, s.signer.cert, key.Public(), s.signer.signer)
		return err
	}
	b.Run("run=serial", func(b *testing.B) {
		_, s, e := benchAuthority(b, true)
		b.ReportAllocs()
		defer measureCPU(b)()
		for b.Loop() {
			if err := sign(s, e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("run=parallel", func(b *testing.B) {
		_, s, e := benchAuthority(b, true)
		b.ReportAllocs()
		defer measureCPU(b)()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := sign(s, e); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkAuditAppend measures Authority.Audit: hashing the record,
// signing the new head with the intermediate (ECDSA P-256) and one bbolt
// transaction; "fsync" pays the disk flush every admin action pays, and
// "nosync" shows the CPU part alone.
func BenchmarkAuditAppend(b *testing.B) {
	for _, bc := range []struct {
		name   string
		noSync bool
	}{{"fsync", false}, {"nosync", true}} {
		b.Run(bc.name, func(b *testing.B) {
			a, _, _ := benchAuthority(b, bc.noSync)
			ev := AuditEvent{AdminUID: 0, Action: AuditRevokeID, Target: "spiffe://example.org/bench/api", Detail: `revoked=3 already_revoked=0 reason="key leaked"`}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			stop := measureCPU(b)
			for b.Loop() {
				if err := a.Audit(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
			stop()
		})
	}
}

// BenchmarkAuditVerify measures VerifyAudit over a trail of 10,000 records.
func BenchmarkAuditVerify(b *testing.B) {
	a, _, _ := benchAuthority(b, true)
	ctx := context.Background()
	for i := range 10000 {
		if err := a.Audit(ctx, AuditEvent{Action: AuditEntryCreate, Target: strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if rep, err := a.VerifyAudit(ctx); err != nil || !rep.OK {
			b.Fatal(rep, err)
		}
	}
}
