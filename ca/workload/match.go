package workload

// Matching callers to registration entries, for every Source alike: the
// server's own socket (ca.WorkloadSource) and an agent's (agent.Source)
// hold their entries in a Matcher, so that the same caller gets the same
// entries, in the same order, and the same refusal from either.

import (
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/badge-dev/badge/attest"
)

// Matcher matches callers against registration entries of any type E (the
// Source's own). An entry matches a caller whose selectors include all of
// the entry's (attest.Set.Matches); the entries a caller matches come in
// the order they were added, and the first is the caller's default SVID.
// Entries of blocked IDs match no one, but a caller that matches only
// those is told its IDs are blocked rather than that it is not registered.
//
// A Matcher is filled by Add and then only read: reads are safe for
// concurrent use once the last Add has returned. The zero value holds no
// entry and matches no one.
type Matcher[E any] struct {
	entries []matchEntry[E]
	// index and blocked hold the positions in entries of the entries of
	// unblocked and of blocked IDs, each under its first selector: every
	// entry a caller matches is found once, under the one of its
	// selectors the caller is sure to have.
	index, blocked      map[attest.Selector][]int
	kinds, blockedKinds attest.Kind
}

type matchEntry[E any] struct {
	e         E
	id        spiffeid.ID
	selectors []attest.Selector
}

// Add adds entry e, of SPIFFE ID id, matching callers that have every one
// of selectors; blocked says whether id is blocked. An entry without
// selectors is left out: it must not match every caller. Entries are
// matched in the order they were added.
func (m *Matcher[E]) Add(e E, id spiffeid.ID, selectors []attest.Selector, blocked bool) {
	if len(selectors) == 0 {
		return
	}
	index, kinds := &m.index, &m.kinds
	if blocked {
		index, kinds = &m.blocked, &m.blockedKinds
	}
	if *index == nil {
		*index = make(map[attest.Selector][]int)
	}
	(*index)[selectors[0]] = append((*index)[selectors[0]], len(m.entries))
	*kinds |= attest.KindsOf(selectors)
	m.entries = append(m.entries, matchEntry[E]{e: e, id: id, selectors: selectors})
}

// Kinds returns the selector kinds the entries of unblocked IDs use: what
// callers must be attested for.
func (m *Matcher[E]) Kinds() attest.Kind { return m.kinds }

// Match returns the entries of unblocked IDs whose selectors are all among
// the caller's, in the order they were added; nil if none. It judges the
// selectors given: see MatchCaller for a caller that may lack some kinds.
func (m *Matcher[E]) Match(caller attest.Set) []E {
	var buf [matchBuf]int
	return m.values(m.match(m.index, caller, buf[:0]))
}

// MatchCaller returns the entries of unblocked IDs the caller matches, in
// the order they were added (never empty), or the refusal the Source
// interface documents: a *KindsError when the caller was not attested for
// every kind the entries use, otherwise the reason of Refusal.
func (m *Matcher[E]) MatchCaller(c *Caller) ([]E, error) {
	if k := m.kinds; k&^c.Kinds != 0 {
		return nil, &KindsError{Kinds: k}
	}
	if out := m.Match(c.Selectors); len(out) > 0 {
		return out, nil
	}
	return nil, m.Refusal(c)
}

// MatchPerID is MatchCaller for JWT-SVIDs: of the entries the caller
// matches, the first of each SPIFFE ID (only of id, when id is set), in
// the order they were added. It refuses as MatchCaller does; a caller that
// matches entries but none of id gets none, and no error.
func (m *Matcher[E]) MatchPerID(c *Caller, id spiffeid.ID) ([]E, error) {
	if k := m.kinds; k&^c.Kinds != 0 {
		return nil, &KindsError{Kinds: k}
	}
	var buf [matchBuf]int
	pos := m.match(m.index, c.Selectors, buf[:0])
	if len(pos) == 0 {
		return nil, m.Refusal(c)
	}
	pos = m.firstPerID(pos)
	if !id.IsZero() {
		pos = slices.DeleteFunc(pos, func(i int) bool { return m.entries[i].id != id })
	}
	return m.values(pos), nil
}

// Refusal says why the caller matches no entry of an unblocked ID: a
// *BlockedError naming the distinct blocked IDs it matches, in the order
// of their entries; ErrNotRegistered when it matches none; a *KindsError
// when telling the two apart needs kinds the caller was not attested for.
func (m *Matcher[E]) Refusal(c *Caller) error {
	k := m.blockedKinds
	if k == 0 {
		return ErrNotRegistered
	}
	if k&^c.Kinds != 0 {
		return &KindsError{Kinds: k}
	}
	var buf [matchBuf]int
	pos := m.firstPerID(m.match(m.blocked, c.Selectors, buf[:0]))
	if len(pos) == 0 {
		return ErrNotRegistered
	}
	ids := make([]string, len(pos))
	for i, p := range pos {
		ids[i] = m.entries[p].id.String()
	}
	return &BlockedError{IDs: ids}
}

// matchBuf is how many matching entries are collected without an
// allocation: a caller matches a few.
const matchBuf = 8

// match appends to out the positions of the entries of index whose
// selectors are all among the caller's, in order.
func (m *Matcher[E]) match(index map[attest.Selector][]int, caller attest.Set, out []int) []int {
	if len(index) == 0 {
		return out
	}
	for sel := range caller {
		for _, i := range index[sel] {
			if caller.Matches(m.entries[i].selectors) {
				out = append(out, i)
			}
		}
	}
	slices.Sort(out)
	return out
}

// firstPerID keeps, of the positions pos (in order), the first of each
// SPIFFE ID. It reuses pos.
func (m *Matcher[E]) firstPerID(pos []int) []int {
	out := pos[:0]
	for _, p := range pos {
		if !slices.ContainsFunc(out, func(q int) bool { return m.entries[q].id == m.entries[p].id }) {
			out = append(out, p)
		}
	}
	return out
}

func (m *Matcher[E]) values(pos []int) []E {
	if len(pos) == 0 {
		return nil
	}
	out := make([]E, len(pos))
	for i, p := range pos {
		out[i] = m.entries[p].e
	}
	return out
}
