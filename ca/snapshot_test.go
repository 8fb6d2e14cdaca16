package ca

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/storage"
)

// TestMatchAgainstBruteForce checks Snapshot.Match, which looks entries up
// by their first selector, against the definition: every entry all of whose
// selectors the caller has, in (CreatedAt, ID) order, each once.
func TestMatchAgainstBruteForce(t *testing.T) {
	a, _ := newTestAuthority(t, nil)

	// A small universe of selectors, so that random entries and callers
	// overlap a lot.
	var universe []string
	for i := range 6 {
		universe = append(universe, fmt.Sprintf("unix:uid:%d", i), fmt.Sprintf("unix:gid:%d", i))
	}
	for _, n := range []string{"alice", "bob", "carol"} {
		universe = append(universe, "unix:user:"+n)
	}
	universe = append(universe, "systemd:unit:a.service", "systemd:unit:b.service")

	tests := []struct {
		name    string
		seed    uint64
		entries int
		maxSels int
	}{
		{"few entries", 1, 10, 3},
		{"many entries", 2, 2000, 4},
		{"many selectors per entry", 3, 500, 8},
		{"one selector each", 4, 300, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(tt.seed, 0x5eed))
			base := testStart
			recs := make([]storage.Entry, tt.entries)
			for i := range recs {
				sels := make([]string, 1+rng.IntN(tt.maxSels))
				for j := range sels {
					sels[j] = universe[rng.IntN(len(universe))]
				}
				sels = canonical(t, sels)
				recs[i] = storage.Entry{
					// Few distinct creation times, so that ties are broken by ID.
					ID:        fmt.Sprintf("%016x", rng.Uint64()),
					SPIFFEID:  fmt.Sprintf("spiffe://example.org/w/%d", i),
					Selectors: sels,
					CreatedAt: base.Add(time.Duration(rng.IntN(5)) * time.Second),
					Revision:  1,
				}
			}
			slices.SortStableFunc(recs, compareEntries)
			snap := newSnapshot(a.cfg.TrustDomain, recs, a.keys, a.revocations, slog.New(slog.DiscardHandler))
			if len(snap.Entries()) != len(recs) {
				t.Fatalf("snapshot holds %d entries, want %d", len(snap.Entries()), len(recs))
			}

			for i := range 500 {
				// Callers range from nearly empty to holding most of the universe.
				p := rng.Float64()
				var caller []string
				for _, s := range universe {
					if rng.Float64() < p {
						caller = append(caller, s)
					}
				}
				callerSet := set(t, caller...)
				var want []string
				for _, e := range snap.Entries() {
					if hasAll(caller, e.Record.Selectors) {
						want = append(want, e.Record.ID)
					}
				}
				got := entryIDs(snap.Match(callerSet))
				if !slices.Equal(got, want) {
					t.Fatalf("caller %d %v: Match = %v, want %v", i, caller, got, want)
				}
			}
		})
	}
}

func canonical(t *testing.T, sels []string) []string {
	t.Helper()
	ps, err := parseSelectors(sels)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(ps))
	for i, s := range ps {
		out[i] = s.String()
	}
	return out
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return len(want) > 0
}

// TestSnapshotSkipsUnparsableEntry: an entry in the store that no longer
// parses (for example written by a release with other rules) is skipped,
// not a reason to fail.
func TestSnapshotSkipsUnparsableEntry(t *testing.T) {
	a, _ := newTestAuthority(t, nil)
	recs := []storage.Entry{
		{ID: "a", SPIFFEID: "spiffe://other.org/x", Selectors: []string{"unix:uid:1"}, CreatedAt: testStart},
		{ID: "b", SPIFFEID: "spiffe://example.org/x", Selectors: []string{"k8s:ns:x"}, CreatedAt: testStart},
		{ID: "c", SPIFFEID: "spiffe://example.org/x", Selectors: []string{"unix:uid:1"}, CreatedAt: testStart},
	}
	snap := newSnapshot(a.cfg.TrustDomain, recs, a.keys, a.revocations, slog.New(slog.DiscardHandler))
	if got := entryIDs(snap.Match(set(t, "unix:uid:1"))); !slices.Equal(got, []string{"c"}) {
		t.Errorf("Match = %v, want [c]", got)
	}
	if snap.Kinds() != attest.KindUID {
		t.Errorf("Kinds = %b, want only the kinds of usable entries", snap.Kinds())
	}
}
