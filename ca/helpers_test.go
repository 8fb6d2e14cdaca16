package ca

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/internal/testclock"
	"github.com/badge-dev/badge/storage/bbolt"
)

// testStart is the fake clock's starting point. It lies far in the future
// so that the authority's background rotation timer, which waits in real
// time for a fake instant, never fires during a test: every rotation in
// these tests is the test's own call to rotateIntermediate.
var testStart = time.Date(2041, time.March, 4, 5, 6, 7, 0, time.UTC)

// replaced reports whether s has been replaced by a newer snapshot: its
// Done channel is closed. It does not wait.
func replaced(s *Snapshot) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

// openStore opens a real bbolt store in dir and closes it at the end of the test.
func openStore(tb testing.TB, dir string, noSync bool) *bbolt.Store {
	tb.Helper()
	s, err := bbolt.Open(filepath.Join(dir, "badge.db"), &bbolt.Options{NoSync: noSync})
	if err != nil {
		tb.Fatalf("bbolt.Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// testEnv is a store and key directory that authorities can be opened on,
// and reopened on, within one test.
type testEnv struct {
	store  *bbolt.Store
	keyDir string
	clock  *testclock.Clock
}

func newEnv(tb testing.TB) *testEnv {
	tb.Helper()
	dir := tb.TempDir()
	return &testEnv{store: openStore(tb, dir, true), keyDir: filepath.Join(dir, "keys"), clock: testclock.New(testStart)}
}

// config returns a Config on the environment with the fake clock; mod may
// change it.
func (env *testEnv) config(mod func(*Config)) Config {
	cfg := Config{Store: env.store, KeyDir: env.keyDir, Time: env.clock.Now, Monotonic: env.clock.Monotonic}
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

// open opens an authority on env and closes it at the end of the test.
func (env *testEnv) open(tb testing.TB, mod func(*Config)) *Authority {
	tb.Helper()
	a, err := New(context.Background(), env.config(mod))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { a.Close() })
	return a
}

// newTestAuthority opens an authority on a fresh environment.
func newTestAuthority(tb testing.TB, mod func(*Config)) (*Authority, *testEnv) {
	tb.Helper()
	env := newEnv(tb)
	return env.open(tb, mod), env
}

// mustCreate registers an entry or fails the test.
func mustCreate(tb testing.TB, a *Authority, id string, selectors ...string) string {
	tb.Helper()
	e, err := a.CreateEntry(context.Background(), EntryRequest{SPIFFEID: id, Selectors: selectors})
	if err != nil {
		tb.Fatalf("CreateEntry(%s, %v): %v", id, selectors, err)
	}
	return e.ID
}

// set builds a caller's selector set from TYPE:KEY:VALUE strings.
func set(tb testing.TB, sels ...string) attest.Set {
	tb.Helper()
	s := make(attest.Set, len(sels))
	for _, in := range sels {
		sel, err := attest.ParseSelector(in)
		if err != nil {
			tb.Fatalf("ParseSelector(%q): %v", in, err)
		}
		s[sel] = struct{}{}
	}
	return s
}

// entryFor returns the snapshot's entry with the given entry ID.
func entryFor(tb testing.TB, s *Snapshot, id string) *Entry {
	tb.Helper()
	for _, e := range s.Entries() {
		if e.Record.ID == id {
			return e
		}
	}
	tb.Fatalf("entry %s is not in the snapshot", id)
	return nil
}
