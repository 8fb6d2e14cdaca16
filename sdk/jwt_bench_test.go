package sdk

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// BenchmarkJWTValidate compares, on one token of the shape badge issues:
//
//   - raw-es256: SHA-256 of the signing input and ecdsa.Verify, nothing
//     else: the floor any validation pays;
//   - go-spiffe: jwtsvid.ParseAndValidate against the same bundle;
//   - sdk-uncached: JWTSource validation without its cache (go-spiffe plus
//     the strict expiry check);
//   - sdk-cached: JWTSource.ValidateJWTSVID of a token validated before.
//
// Run with -cpu 1 for per-core figures: cpu-ns/op and validations/cpu-s
// count the CPU time the process used, so time spent descheduled on a busy
// machine does not count.
func BenchmarkJWTValidate(b *testing.B) {
	key := newJWTKey(b, "aVeryLongKeyIdLikeAnRFC7638ThumbprintOf43chars")
	f := startFakeJWTAPI(b, paymentID, key, time.Now)
	src := newJWTSource(b, f)
	now := time.Now()
	token := key.mint(b, claimsFor(paymentID, []string{"spiffe://example.org/orders"}, now, now.Add(5*time.Minute)))
	aud := "spiffe://example.org/orders"
	b.Logf("token: %d bytes", len(token))

	b.Run("raw-es256", func(b *testing.B) {
		i := strings.LastIndexByte(token, '.')
		sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
		if err != nil || len(sig) != 64 {
			b.Fatal(err)
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		input := []byte(token[:i])
		pub := &key.priv.PublicKey
		report(b)
		for b.Loop() {
			h := sha256.Sum256(input)
			if !ecdsa.Verify(pub, h[:], r, s) {
				b.Fatal("signature does not verify")
			}
		}
	})
	b.Run("go-spiffe", func(b *testing.B) {
		report(b)
		for b.Loop() {
			if _, err := jwtsvid.ParseAndValidate(token, src, []string{aud}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk-uncached", func(b *testing.B) {
		set := src.bundles.Load().set
		report(b)
		for b.Loop() {
			if _, err := validate(token, aud, set, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk-cached", func(b *testing.B) {
		if _, err := src.ValidateJWTSVID(token, aud); err != nil {
			b.Fatal(err)
		}
		report(b)
		for b.Loop() {
			if _, err := src.ValidateJWTSVID(token, aud); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk-cached-parallel", func(b *testing.B) {
		report(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := src.ValidateJWTSVID(token, aud); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// report adds the process's CPU time per validation (user and system,
// getrusage: steadier than wall time on a shared machine) and validations
// per second of that CPU time to the result.
func report(b *testing.B) {
	b.ReportAllocs()
	start, ok := processCPU()
	b.Cleanup(func() {
		end, ok2 := processCPU()
		if d := end - start; ok && ok2 && d > 0 && b.N > 0 {
			b.ReportMetric(float64(d.Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(b.N)/d.Seconds(), "validations/cpu-s")
		}
	})
}
