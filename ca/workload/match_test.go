package workload_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/attest"
	badgeworkload "github.com/badge-dev/badge/ca/workload"
)

// TestMatcher is the matching of both Sources, the server's own socket
// (ca.WorkloadSource) and an agent's (agent.Source): which entries a
// caller matches and in what order, one JWT-SVID entry per SPIFFE ID, and
// why a caller is refused.
func TestMatcher(t *testing.T) {
	type entry struct {
		name, id string
		sels     []string
		blocked  bool
	}
	// In (CreatedAt, ID) order, as the server lists them and sends them to
	// agents.
	entries := []entry{
		{name: "a", id: "/a", sels: []string{"unix:uid:1"}},
		{name: "b", id: "/b", sels: []string{"unix:uid:1", "unix:gid:5"}},
		{name: "c", id: "/a", sels: []string{"unix:uid:1", "unix:path:/bin/x"}},                // a second entry of /a
		{name: "d", id: "/d", sels: []string{"unix:gid:5", "unix:uid:1"}},                      // indexed under gid:5
		{name: "none", id: "/none"},                                                            // no selectors: matches no one
		{name: "x", id: "/blocked", sels: []string{"unix:uid:2"}, blocked: true},               //
		{name: "y", id: "/blocked", sels: []string{"unix:uid:2", "unix:gid:5"}, blocked: true}, // a second entry of /blocked
		{name: "z", id: "/blocked2", sels: []string{"unix:gid:5", "unix:uid:2"}, blocked: true},
		{name: "u", id: "/blocked3", sels: []string{"unix:user:bob"}, blocked: true}, // a kind only a blocked entry uses
	}
	var m badgeworkload.Matcher[string]
	for _, e := range entries {
		var sels []attest.Selector
		for _, s := range e.sels {
			sels = append(sels, mustSelector(t, s))
		}
		m.Add(e.name, spiffeid.RequireFromString("spiffe://example.org"+e.id), sels, e.blocked)
	}
	const (
		unblockedKinds = attest.KindUID | attest.KindGID | attest.KindPath
		blockedKinds   = attest.KindUID | attest.KindGID | attest.KindUser
		allKinds       = unblockedKinds | blockedKinds
	)
	if got := m.Kinds(); got != unblockedKinds {
		t.Fatalf("Kinds = %v, want %v: only the kinds of unblocked entries", got, unblockedKinds)
	}

	kindsErr := func(want attest.Kind) func(error) bool {
		return func(err error) bool {
			var ke *badgeworkload.KindsError
			return errors.As(err, &ke) && ke.Kinds == want
		}
	}
	blockedErr := func(ids ...string) func(error) bool {
		return func(err error) bool {
			var be *badgeworkload.BlockedError
			return errors.As(err, &be) && !be.Held && slices.Equal(be.IDs, ids)
		}
	}
	notRegistered := func(err error) bool { return errors.Is(err, badgeworkload.ErrNotRegistered) }

	tests := []struct {
		name   string
		caller []string
		kinds  attest.Kind
		want   []string             // MatchCaller's entries
		perID  []string             // MatchPerID's entries for no ID
		onlyA  []string             // MatchPerID's entries for /a
		refuse func(err error) bool // MatchCaller's and MatchPerID's error, when want is empty
	}{
		{name: "one entry", caller: []string{"unix:uid:1"}, kinds: allKinds,
			want: []string{"a"}, perID: []string{"a"}, onlyA: []string{"a"}},
		{name: "all of an entry's selectors, in the order entries were added", caller: []string{"unix:uid:1", "unix:gid:5"}, kinds: allKinds,
			want: []string{"a", "b", "d"}, perID: []string{"a", "b", "d"}, onlyA: []string{"a"}},
		{name: "two entries of one ID: one JWT-SVID", caller: []string{"unix:uid:1", "unix:gid:5", "unix:path:/bin/x", "unix:gid:6"}, kinds: allKinds,
			want: []string{"a", "b", "c", "d"}, perID: []string{"a", "b", "d"}, onlyA: []string{"a"}},
		{name: "some of an entry's selectors are not enough", caller: []string{"unix:gid:5", "unix:path:/bin/x"}, kinds: allKinds,
			refuse: notRegistered},
		{name: "not attested for a kind unblocked entries use", caller: []string{"unix:uid:1"}, kinds: attest.KindUID,
			refuse: kindsErr(unblockedKinds)},
		{name: "not registered", caller: []string{"unix:uid:3"}, kinds: allKinds,
			refuse: notRegistered},
		{name: "no selectors", kinds: allKinds,
			refuse: notRegistered},
		{name: "only blocked IDs, each once, in entry order", caller: []string{"unix:uid:2", "unix:gid:5"}, kinds: allKinds,
			refuse: blockedErr("spiffe://example.org/blocked", "spiffe://example.org/blocked2")},
		{name: "one blocked ID", caller: []string{"unix:uid:2"}, kinds: allKinds,
			refuse: blockedErr("spiffe://example.org/blocked")},
		{name: "blocked or not registered needs a kind only blocked entries use", caller: []string{"unix:uid:2"}, kinds: unblockedKinds,
			refuse: kindsErr(blockedKinds)},
		{name: "a blocked entry of another kind", caller: []string{"unix:uid:9", "unix:user:bob"}, kinds: allKinds,
			refuse: blockedErr("spiffe://example.org/blocked3")},
		{name: "unblocked entries win over blocked ones", caller: []string{"unix:uid:1", "unix:uid:2"}, kinds: allKinds,
			want: []string{"a"}, perID: []string{"a"}, onlyA: []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &badgeworkload.Caller{Selectors: attest.Set{}, Kinds: tt.kinds}
			for _, s := range tt.caller {
				c.Selectors[mustSelector(t, s)] = struct{}{}
			}
			got, err := m.MatchCaller(c)
			if tt.refuse != nil {
				if err == nil || !tt.refuse(err) || got != nil {
					t.Fatalf("MatchCaller = %v, %v; want the refusal of the case", got, err)
				}
				if _, jerr := m.MatchPerID(c, spiffeid.ID{}); jerr == nil || !tt.refuse(jerr) {
					t.Errorf("MatchPerID = %v; want the refusal of MatchCaller, %v", jerr, err)
				}
				if rerr := m.Refusal(c); !errors.As(err, new(*badgeworkload.KindsError)) && (rerr == nil || rerr.Error() != err.Error()) {
					t.Errorf("Refusal = %v; want MatchCaller's %v", rerr, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("MatchCaller = %v, %v; want %v", got, err, tt.want)
			}
			if m := m.Match(c.Selectors); !slices.Equal(m, tt.want) {
				t.Errorf("Match = %v, want %v", m, tt.want)
			}
			if got, err := m.MatchPerID(c, spiffeid.ID{}); err != nil || !slices.Equal(got, tt.perID) {
				t.Errorf("MatchPerID(any) = %v, %v; want %v", got, err, tt.perID)
			}
			if got, err := m.MatchPerID(c, spiffeid.RequireFromString("spiffe://example.org/a")); err != nil || !slices.Equal(got, tt.onlyA) {
				t.Errorf("MatchPerID(/a) = %v, %v; want %v", got, err, tt.onlyA)
			}
			if got, err := m.MatchPerID(c, spiffeid.RequireFromString("spiffe://example.org/other")); err != nil || len(got) != 0 {
				t.Errorf("MatchPerID(/other) = %v, %v; want none and no error", got, err)
			}
		})
	}
}

// TestMatcherEmpty: a Matcher with no entries, or only one without
// selectors, matches no one and asks for no kinds.
func TestMatcherEmpty(t *testing.T) {
	var zero, noSelectors badgeworkload.Matcher[int]
	noSelectors.Add(1, spiffeid.RequireFromString("spiffe://example.org/all"), nil, false)
	noSelectors.Add(2, spiffeid.RequireFromString("spiffe://example.org/all"), []attest.Selector{}, true)
	for name, m := range map[string]*badgeworkload.Matcher[int]{"zero": &zero, "no selectors": &noSelectors} {
		c := &badgeworkload.Caller{Selectors: attest.Set{mustSelector(t, "unix:uid:0"): {}}, Kinds: attest.KindAll}
		if m.Kinds() != 0 {
			t.Errorf("%s: Kinds = %v, want none", name, m.Kinds())
		}
		if got, err := m.MatchCaller(c); got != nil || !errors.Is(err, badgeworkload.ErrNotRegistered) {
			t.Errorf("%s: MatchCaller = %v, %v; want ErrNotRegistered", name, got, err)
		}
		if got := m.Match(attest.Set{}); got != nil {
			t.Errorf("%s: Match of no selectors = %v, want none", name, got)
		}
	}
}

func mustSelector(t *testing.T, s string) attest.Selector {
	t.Helper()
	sel, err := attest.ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}
