// Package storagetest is the conformance suite every badge store passes,
// so that the embedded bbolt store and the networked etcd store behave the
// same for the authority. It checks storage.Backend, the one declaration
// of the contract.
//
// A backend's test calls Run with a function that opens a new, empty store:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storagetest.Store {
//			s, err := bbolt.Open(filepath.Join(t.TempDir(), "badge.db"), nil)
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage"
)

// Store is the contract the suite checks: storage.Backend.
type Store = storage.Backend

// Run runs the suite. open must return a new, empty store each time it is
// called; Run closes every store it opens.
func Run(t *testing.T, open func(t *testing.T) Store) {
	newStore := func(t *testing.T) Store {
		t.Helper()
		s := open(t)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"Entry/CreateGet", testEntryCreateGet},
		{"Entry/CreateExisting", testEntryCreateExisting},
		{"Entry/Missing", testEntryMissing},
		{"Entry/Delete", testEntryDelete},
		{"Entry/ListOrder", testEntryListOrder},
		{"Entry/Invalid", testEntryInvalid},
		{"Serial/RecordAndQuery", testSerialRecordAndQuery},
		{"Serial/Duplicate", testSerialDuplicate},
		{"Serial/Invalid", testSerialInvalid},
		{"Serial/Concurrent", testSerialConcurrent},
		{"Serial/Prune", testSerialPrune},
		{"Serial/PruneMany", testSerialPruneMany},
		{"Serial/BindVisible", testBindVisible},
		{"Reservation/Invalid", testReservationInvalid},
		{"Reservation/RecoverOwn", testRecoverOwn},
		{"Key/PutList", testKeyPutList},
		{"Key/Invalid", testKeyInvalid},
		{"Key/Delete", testKeyDelete},
		{"Revocation/ID", testRevokeID},
		{"Revocation/Serial", testRevokeSerial},
		{"Revocation/Block", testRevokeBlock},
		{"Revocation/SetOnce", testRevokeSetOnce},
		{"Revocation/Prune", testRevocationPrune},
		{"Revocation/CRLNumber", testCRLNumber},
		{"Client/CreateGetList", testClientCreateGetList},
		{"Client/Delete", testClientDelete},
		{"Client/Invalid", testClientInvalid},
		{"Entry/Nodes", testEntryNodes},
		{"JoinToken/Get", testJoinTokenGet},
		{"JoinToken/Consume", testJoinTokenConsume},
		{"JoinToken/ConsumeRace", testJoinTokenConsumeRace},
		{"JoinToken/Invalid", testJoinTokenInvalid},
		{"JoinToken/Prune", testJoinTokenPrune},
		{"Node/PutGetList", testNodePutGetList},
		{"Node/Evict", testNodeEvict},
		{"Node/Invalid", testNodeInvalid},
		{"Audit/Chain", testAudit},
		{"Context/Cancelled", testCancelled},
		{"Closed", testClosed},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// t0 has nanoseconds, to check that times are kept exactly.
var t0 = time.Date(2026, 11, 24, 13, 0, 0, 123456789, time.UTC)

func entry(id string, created time.Time) storage.Entry {
	return storage.Entry{
		ID:        id,
		SPIFFEID:  "spiffe://example.org/" + id,
		Selectors: []string{"unix:gid:100", "unix:uid:1000"},
		CreatedAt: created,
		Revision:  1,
	}
}

func serial(n int, spiffeID string, notAfter time.Time) storage.Serial {
	return storage.Serial{
		Serial:    fmt.Sprintf("%032x", n),
		SPIFFEID:  spiffeID,
		EntryID:   "entry-1",
		NotBefore: notAfter.Add(-5*time.Minute - 30*time.Second),
		NotAfter:  notAfter,
		IssuedAt:  notAfter.Add(-5 * time.Minute),
	}
}

// Times come back as the same instant, not necessarily in the same
// location: compare them in UTC.

func normEntry(e storage.Entry) storage.Entry {
	e.CreatedAt = e.CreatedAt.UTC()
	return e
}

func normSerial(s storage.Serial) storage.Serial {
	s.NotBefore, s.NotAfter, s.IssuedAt = s.NotBefore.UTC(), s.NotAfter.UTC(), s.IssuedAt.UTC()
	return s
}

func normKey(k storage.Key) storage.Key {
	k.CreatedAt, k.NotAfter = k.CreatedAt.UTC(), k.NotAfter.UTC()
	k.ActivatesAt, k.RetiresAt, k.RemoveAt = k.ActivatesAt.UTC(), k.RetiresAt.UTC(), k.RemoveAt.UTC()
	return k
}

func normAll[T any](in []T, norm func(T) T) []T {
	out := make([]T, len(in))
	for i, v := range in {
		out[i] = norm(v)
	}
	return out
}

func mustCreate(t *testing.T, s Store, e storage.Entry) {
	t.Helper()
	if err := s.CreateEntry(t.Context(), e); err != nil {
		t.Fatalf("CreateEntry(%s): %v", e.ID, err)
	}
}

func mustRecord(t *testing.T, s Store, r storage.Serial) {
	t.Helper()
	if err := s.RecordSerial(t.Context(), r); err != nil {
		t.Fatalf("RecordSerial(%s): %v", r.Serial, err)
	}
}

// recordAll records rs from 32 goroutines.
func recordAll(t *testing.T, s Store, rs []storage.Serial) {
	t.Helper()
	const workers = 32
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(rs); i += workers {
				if err := s.RecordSerial(context.Background(), rs[i]); err != nil {
					errs[w] = fmt.Errorf("RecordSerial(%s): %w", rs[i].Serial, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func serialIDs(rs []storage.Serial) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Serial
	}
	return out
}

func testEntryCreateGet(t *testing.T, s Store) {
	ctx := t.Context()
	full := storage.Entry{
		ID:        "e1",
		SPIFFEID:  "spiffe://example.org/web",
		Selectors: []string{"unix:path:/usr/bin/web", "unix:uid:1000"},
		TTL:       90 * time.Second,
		DNSNames:  []string{"web.example.org", "web"},
		CreatedAt: t0.In(time.FixedZone("X", 3600)),
		Revision:  7,
	}
	minimal := storage.Entry{ID: "e2", SPIFFEID: "spiffe://example.org/db"}
	for _, want := range []storage.Entry{full, minimal} {
		mustCreate(t, s, want)
		got, err := s.GetEntry(ctx, want.ID)
		if err != nil {
			t.Fatalf("GetEntry(%s): %v", want.ID, err)
		}
		if !reflect.DeepEqual(normEntry(got), normEntry(want)) {
			t.Errorf("GetEntry(%s) = %+v, want %+v", want.ID, got, want)
		}
	}
}

func testEntryCreateExisting(t *testing.T, s Store) {
	ctx := t.Context()
	first := entry("e1", t0)
	mustCreate(t, s, first)
	second := entry("e1", t0.Add(time.Hour))
	second.SPIFFEID = "spiffe://example.org/other"
	if err := s.CreateEntry(ctx, second); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("CreateEntry(existing ID) = %v, want ErrExists", err)
	}
	got, err := s.GetEntry(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	if got.SPIFFEID != first.SPIFFEID {
		t.Errorf("after a refused CreateEntry, SPIFFEID = %s, want the original %s", got.SPIFFEID, first.SPIFFEID)
	}
}

func testEntryMissing(t *testing.T, s Store) {
	ctx := t.Context()
	mustCreate(t, s, entry("e1", t0))
	for _, id := range []string{"e2", "e", "e10", ""} {
		if _, err := s.GetEntry(ctx, id); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("GetEntry(%q) = %v, want ErrNotFound", id, err)
		}
		if err := s.DeleteEntry(ctx, id); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("DeleteEntry(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func testEntryDelete(t *testing.T, s Store) {
	ctx := t.Context()
	mustCreate(t, s, entry("e1", t0))
	mustCreate(t, s, entry("e2", t0))
	if err := s.DeleteEntry(ctx, "e1"); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	if _, err := s.GetEntry(ctx, "e1"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetEntry after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteEntry(ctx, "e1"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second DeleteEntry = %v, want ErrNotFound", err)
	}
	list, err := s.ListEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != "e2" {
		t.Errorf("ListEntries after delete = %v, want [e2]", list)
	}
	// The ID can be used again.
	mustCreate(t, s, entry("e1", t0))
}

func testEntryListOrder(t *testing.T, s Store) {
	ctx := t.Context()
	list, err := s.ListEntries(ctx)
	if err != nil {
		t.Fatalf("ListEntries(empty): %v", err)
	}
	if len(list) != 0 {
		t.Fatalf("ListEntries(empty) = %v", list)
	}
	// Created out of order; ties on CreatedAt are broken by ID; the same
	// instant in another zone is a tie.
	want := []storage.Entry{
		entry("z", t0.Add(-time.Hour)),
		entry("a", t0),
		entry("b", t0.In(time.FixedZone("Y", -7200))),
		entry("c", t0.Add(time.Nanosecond)),
		entry("0", t0.Add(time.Hour)),
	}
	for _, i := range []int{3, 1, 4, 0, 2} {
		mustCreate(t, s, want[i])
	}
	for range 2 { // stable across calls
		got, err := s.ListEntries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(normAll(got, normEntry), normAll(want, normEntry)) {
			t.Fatalf("ListEntries =\n%v\nwant\n%v", got, want)
		}
	}
}

func testEntryInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	for name, e := range map[string]storage.Entry{
		"no ID":         {SPIFFEID: "spiffe://example.org/a"},
		"no SPIFFE ID":  {ID: "e1"},
		"NUL in ID":     {ID: "e\x001", SPIFFEID: "spiffe://example.org/a"},
		"long ID":       {ID: string(make([]byte, storage.MaxIDLen+1)), SPIFFEID: "spiffe://example.org/a"},
		"NUL SPIFFE ID": {ID: "e1", SPIFFEID: "spiffe://example.org/a\x00"},
	} {
		if err := s.CreateEntry(ctx, e); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("CreateEntry(%s) = %v, want ErrInvalid", name, err)
		}
	}
	list, err := s.ListEntries(ctx)
	if err != nil || len(list) != 0 {
		t.Errorf("ListEntries after invalid creates = %v, %v; want none", list, err)
	}
}

func testSerialRecordAndQuery(t *testing.T, s Store) {
	ctx := t.Context()
	const (
		web   = "spiffe://example.org/web"
		webby = "spiffe://example.org/webby" // web is a prefix of it
		other = "spiffe://example.org/db"
	)
	now := t0
	expired := serial(1, web, now.Add(-time.Minute))
	boundary := serial(2, web, now) // NotAfter == now: no longer valid
	valid := serial(3, web, now.Add(time.Nanosecond))
	valid.NotBefore = valid.NotBefore.In(time.FixedZone("X", 3600))
	later := serial(4, web, now.Add(5*time.Minute))
	for _, r := range []storage.Serial{later, expired, valid, boundary,
		serial(5, webby, now.Add(time.Minute)), serial(6, other, now.Add(time.Minute))} {
		mustRecord(t, s, r)
	}
	got, err := s.SerialsFor(ctx, web, now)
	if err != nil {
		t.Fatalf("SerialsFor: %v", err)
	}
	want := []storage.Serial{valid, later} // ordered by serial
	if !reflect.DeepEqual(normAll(got, normSerial), normAll(want, normSerial)) {
		t.Errorf("SerialsFor(%s, now) =\n%+v\nwant\n%+v", web, got, want)
	}
	got, err = s.SerialsFor(ctx, web, now.Add(-2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if ids, want := serialIDs(got), serialIDs([]storage.Serial{expired, boundary, valid, later}); !slices.Equal(ids, want) {
		t.Errorf("SerialsFor(%s, earlier) = %v, want %v", web, ids, want)
	}
	for _, id := range []string{"spiffe://example.org/none", "spiffe://example.org/we", ""} {
		got, err := s.SerialsFor(ctx, id, now)
		if err != nil || len(got) != 0 {
			t.Errorf("SerialsFor(%q) = %v, %v; want none", id, got, err)
		}
	}
}

func testSerialDuplicate(t *testing.T, s Store) {
	ctx := t.Context()
	r := serial(1, "spiffe://example.org/web", t0)
	mustRecord(t, s, r)
	dup := r
	dup.SPIFFEID = "spiffe://example.org/other"
	if err := s.RecordSerial(ctx, dup); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("RecordSerial(same serial) = %v, want ErrExists", err)
	}
	if got, err := s.SerialsFor(ctx, dup.SPIFFEID, t0.Add(-time.Hour)); err != nil || len(got) != 0 {
		t.Errorf("SerialsFor(duplicate's ID) = %v, %v; want none", got, err)
	}
	if got, err := s.SerialsFor(ctx, r.SPIFFEID, t0.Add(-time.Hour)); err != nil || len(got) != 1 {
		t.Errorf("SerialsFor(original ID) = %v, %v; want one", got, err)
	}
}

func testSerialInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	good := serial(1, "spiffe://example.org/web", t0)
	for name, mod := range map[string]func(*storage.Serial){
		"empty serial":     func(r *storage.Serial) { r.Serial = "" },
		"upper-case hex":   func(r *storage.Serial) { r.Serial = "0A" },
		"not hex":          func(r *storage.Serial) { r.Serial = "xyz" },
		"0x prefix":        func(r *storage.Serial) { r.Serial = "0x0a" },
		"serial too long":  func(r *storage.Serial) { r.Serial = fmt.Sprintf("%041x", 1) },
		"no SPIFFE ID":     func(r *storage.Serial) { r.SPIFFEID = "" },
		"NUL in SPIFFE ID": func(r *storage.Serial) { r.SPIFFEID = "spiffe://example.org/a\x00b" },
		"no NotAfter":      func(r *storage.Serial) { r.NotAfter = time.Time{} },
	} {
		r := good
		mod(&r)
		if err := s.RecordSerial(ctx, r); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("RecordSerial(%s) = %v, want ErrInvalid", name, err)
		}
	}
	max := good
	max.Serial = fmt.Sprintf("%040x", 1)
	mustRecord(t, s, max)
}

func testSerialConcurrent(t *testing.T, s Store) {
	ctx := t.Context()
	ids := []string{"spiffe://example.org/a", "spiffe://example.org/b", "spiffe://example.org/c"}
	var rs []storage.Serial
	for i := range 600 {
		rs = append(rs, serial(i, ids[i%len(ids)], t0.Add(time.Duration(i)*time.Second)))
	}
	recordAll(t, s, rs)
	for k, id := range ids {
		got, err := s.SerialsFor(ctx, id, t0.Add(-time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := k; i < len(rs); i += len(ids) {
			want = append(want, rs[i].Serial)
		}
		if ids := serialIDs(got); !slices.Equal(ids, want) {
			t.Errorf("SerialsFor(%s): got %d serials, want %d", id, len(ids), len(want))
		}
	}
}

func testSerialPrune(t *testing.T, s Store) {
	ctx := t.Context()
	const web, db = "spiffe://example.org/web", "spiffe://example.org/db"
	cut := t0
	recordAll(t, s, []storage.Serial{
		serial(1, web, cut.Add(-time.Hour)),
		serial(2, web, cut.Add(-time.Nanosecond)),
		serial(3, db, cut.Add(-time.Second)),
		serial(4, web, cut), // NotAfter == before: kept
		serial(5, web, cut.Add(time.Second)),
		serial(6, db, cut.Add(time.Hour)),
		serial(7, db, time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)), // before 1970
		serial(8, db, time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)),
	})
	n, err := s.PruneSerials(ctx, cut)
	if err != nil {
		t.Fatalf("PruneSerials: %v", err)
	}
	if n != 4 {
		t.Errorf("PruneSerials = %d, want 4", n)
	}
	long := time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	for id, want := range map[string][]string{
		web: {fmt.Sprintf("%032x", 4), fmt.Sprintf("%032x", 5)},
		db:  {fmt.Sprintf("%032x", 6), fmt.Sprintf("%032x", 8)},
	} {
		got, err := s.SerialsFor(ctx, id, long)
		if err != nil {
			t.Fatal(err)
		}
		if ids := serialIDs(got); !slices.Equal(ids, want) {
			t.Errorf("after prune, SerialsFor(%s) = %v, want %v", id, ids, want)
		}
	}
	// A pruned serial can be recorded again; pruning again finds nothing.
	mustRecord(t, s, serial(1, web, cut.Add(time.Hour)))
	if n, err := s.PruneSerials(ctx, cut); n != 0 || err != nil {
		t.Errorf("second PruneSerials = %d, %v; want 0, nil", n, err)
	}
}

func testSerialPruneMany(t *testing.T, s Store) {
	ctx := t.Context()
	const id = "spiffe://example.org/web"
	var rs []storage.Serial
	for i := range 2500 {
		rs = append(rs, serial(i, id, t0.Add(-time.Duration(i+1)*time.Millisecond)))
	}
	for i := range 3 {
		rs = append(rs, serial(10000+i, id, t0.Add(time.Minute)))
	}
	recordAll(t, s, rs)
	n, err := s.PruneSerials(ctx, t0)
	if err != nil || n != 2500 {
		t.Fatalf("PruneSerials = %d, %v; want 2500", n, err)
	}
	got, err := s.SerialsFor(ctx, id, time.Time{})
	if err != nil || len(got) != 3 {
		t.Errorf("after prune, SerialsFor = %d records, %v; want 3", len(got), err)
	}
}

func testKeyPutList(t *testing.T, s Store) {
	ctx := t.Context()
	keys, err := s.ListKeys(ctx)
	if err != nil || len(keys) != 0 {
		t.Fatalf("ListKeys(empty) = %v, %v", keys, err)
	}
	root := storage.Key{
		ID: "root-1", Kind: "x509-root", PublicKey: []byte{0x30, 0x59, 0x00, 0xff},
		PrivateRef: "root-1.key", Certificate: []byte{0x30, 0x82, 0x01},
		CreatedAt: t0, NotAfter: t0.Add(365 * 24 * time.Hour), State: storage.KeyActive,
	}
	inter := storage.Key{
		ID: "int-1", Kind: "x509-intermediate", PublicKey: []byte{1}, PrivateRef: "int-1.key",
		CreatedAt: t0.Add(time.Second), NotAfter: t0.Add(24 * time.Hour), State: storage.KeyActive,
	}
	jwt := storage.Key{
		ID: "jwt-1", Kind: "jwt", PublicKey: []byte{2}, PrivateRef: "awskms:key-id=abc",
		CreatedAt: t0.Add(time.Second), NotAfter: t0.Add(24 * time.Hour), State: storage.KeyPrepared,
		ActivatesAt: t0.Add(10 * time.Minute),
	}
	for _, k := range []storage.Key{jwt, root, inter} {
		if err := s.PutKey(ctx, k); err != nil {
			t.Fatalf("PutKey(%s): %v", k.ID, err)
		}
	}
	inter.State = storage.KeyRetired // replace
	inter.ActivatesAt, inter.RetiresAt, inter.RemoveAt = t0.Add(time.Second), t0.Add(12*time.Hour), t0.Add(24*time.Hour)
	if err := s.PutKey(ctx, inter); err != nil {
		t.Fatalf("PutKey(replace): %v", err)
	}
	got, err := s.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []storage.Key{root, inter, jwt}
	if !reflect.DeepEqual(normAll(got, normKey), normAll(want, normKey)) {
		t.Errorf("ListKeys =\n%+v\nwant\n%+v", got, want)
	}
}

func testKeyInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	for name, k := range map[string]storage.Key{
		"no ID":         {State: storage.KeyActive},
		"unknown state": {ID: "k", State: "lost"},
		"no state":      {ID: "k"},
	} {
		if err := s.PutKey(ctx, k); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("PutKey(%s) = %v, want ErrInvalid", name, err)
		}
	}
}

func testKeyDelete(t *testing.T, s Store) {
	ctx := t.Context()
	for _, id := range []string{"k1", "k2"} {
		k := storage.Key{ID: id, Kind: "jwt", PublicKey: []byte{1}, PrivateRef: id + ".key", CreatedAt: t0, NotAfter: t0.Add(time.Hour), State: storage.KeyRetired}
		if err := s.PutKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteKey(ctx, "k1"); err != nil {
		t.Fatalf("DeleteKey(k1): %v", err)
	}
	if err := s.DeleteKey(ctx, "k1"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("DeleteKey(k1) again = %v, want ErrNotFound", err)
	}
	got, err := s.ListKeys(ctx)
	if err != nil || len(got) != 1 || got[0].ID != "k2" {
		t.Errorf("ListKeys after delete = %+v, %v; want k2 alone", got, err)
	}
}

// calls runs every method of s with ctx and reports each error by name.
func calls(ctx context.Context, s Store) map[string]error {
	errs := map[string]error{}
	errs["CreateEntry"] = s.CreateEntry(ctx, entry("e9", t0))
	_, errs["GetEntry"] = s.GetEntry(ctx, "e1")
	_, errs["ListEntries"] = s.ListEntries(ctx)
	errs["DeleteEntry"] = s.DeleteEntry(ctx, "e1")
	errs["RecordSerial"] = s.RecordSerial(ctx, serial(99, "spiffe://example.org/web", t0))
	_, errs["RevokeUnbound"] = s.RevokeUnbound(ctx, t0, "crash")
	errs["ReserveSerials"] = s.ReserveSerials(ctx, storage.Reservation{Serials: []string{"98"}, NotAfter: t0})
	errs["BindSerial"] = s.BindSerial(ctx, serial(98, "spiffe://example.org/web", t0))
	errs["ReleaseSerials"] = s.ReleaseSerials(ctx, []string{"98"})
	_, errs["SerialsFor"] = s.SerialsFor(ctx, "spiffe://example.org/web", t0)
	_, errs["PruneSerials"] = s.PruneSerials(ctx, t0.Add(time.Hour))
	errs["PutKey"] = s.PutKey(ctx, storage.Key{ID: "k9", State: storage.KeyActive})
	_, errs["ListKeys"] = s.ListKeys(ctx)
	errs["DeleteKey"] = s.DeleteKey(ctx, "k9")
	_, errs["RevokeID"] = s.RevokeID(ctx, storage.Revocation{SPIFFEID: "spiffe://example.org/web", RevokedAt: t0}, t0)
	_, errs["RevokeSerial"] = s.RevokeSerial(ctx, fmt.Sprintf("%032x", 1), "", 0, t0.Add(-time.Hour))
	errs["Unblock"] = s.Unblock(ctx, "spiffe://example.org/web")
	_, _, errs["ListRevocations"] = s.ListRevocations(ctx)
	_, errs["PruneRevocations"] = s.PruneRevocations(ctx, t0, time.Minute)
	_, errs["NextCRLNumber"] = s.NextCRLNumber(ctx, 1)
	errs["CreateClient"] = s.CreateClient(ctx, client("spiffe://example.org/c9", t0))
	_, errs["GetClient"] = s.GetClient(ctx, "spiffe://example.org/c1")
	_, errs["ListClients"] = s.ListClients(ctx)
	errs["DeleteClient"] = s.DeleteClient(ctx, "spiffe://example.org/c1")
	errs["CreateJoinToken"] = s.CreateJoinToken(ctx, joinToken(9, "n9", t0))
	_, errs["GetJoinToken"] = s.GetJoinToken(ctx, tokenHash(1))
	_, errs["ListJoinTokens"] = s.ListJoinTokens(ctx)
	_, _, errs["ConsumeJoinToken"] = s.ConsumeJoinToken(ctx, tokenHash(1), t0)
	_, errs["PruneJoinTokens"] = s.PruneJoinTokens(ctx, t0.Add(time.Hour))
	errs["PutNode"] = s.PutNode(ctx, node("n9", t0))
	_, errs["GetNode"] = s.GetNode(ctx, "n1")
	_, errs["ListNodes"] = s.ListNodes(ctx)
	_, _, errs["EvictNode"] = s.EvictNode(ctx, "n1", t0, 0)
	return errs
}

func testCancelled(t *testing.T, s Store) {
	mustCreate(t, s, entry("e1", t0))
	mustRecord(t, s, serial(1, "spiffe://example.org/web", t0))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for name, err := range calls(ctx, s) {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s(cancelled ctx) = %v, want context.Canceled", name, err)
		}
	}
	// Nothing changed.
	if _, err := s.GetEntry(t.Context(), "e1"); err != nil {
		t.Errorf("GetEntry after cancelled calls: %v", err)
	}
	if got, err := s.SerialsFor(t.Context(), "spiffe://example.org/web", time.Time{}); err != nil || len(got) != 1 {
		t.Errorf("SerialsFor after cancelled calls = %v, %v; want 1 record", got, err)
	}
}

func testClosed(t *testing.T, s Store) {
	mustCreate(t, s, entry("e1", t0))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, err := range calls(t.Context(), s) {
		if !errors.Is(err, storage.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if err := s.Close(); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
}

// testRevokeID: revoking an ID revokes exactly its unexpired serials, in
// the log and in the indexed buckets alike, and survives in the listing.
func testRevokeID(t *testing.T, s Store) {
	ctx := t.Context()
	web, other := "spiffe://example.org/web", "spiffe://example.org/webby"
	recordAll(t, s, []storage.Serial{
		serial(1, web, t0.Add(time.Minute)),
		serial(2, web, t0.Add(-time.Minute)), // expired at t0
		serial(3, other, t0.Add(time.Minute)),
		serial(4, web, t0.Add(2*time.Minute)),
	})
	got, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: t0, Reason: "key leaked", AdminUID: 7}, t0)
	if err != nil {
		t.Fatalf("RevokeID: %v", err)
	}
	var serials []string
	for _, r := range got {
		serials = append(serials, r.Serial)
		if r.SPIFFEID != web || !r.RevokedAt.Equal(t0) || r.Reason != "key leaked" || r.AdminUID != 7 {
			t.Errorf("revoked serial record %+v", r)
		}
	}
	if want := []string{fmt.Sprintf("%032x", 1), fmt.Sprintf("%032x", 4)}; !slices.Equal(serials, want) {
		t.Fatalf("RevokeID revoked %v, want %v", serials, want)
	}
	ids, revoked, err := s.ListRevocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0].SPIFFEID != web || ids[0].Blocked || !ids[0].RevokedAt.Equal(t0) {
		t.Fatalf("ListRevocations ids = %+v", ids)
	}
	if len(revoked) != 2 {
		t.Fatalf("ListRevocations serials = %+v", revoked)
	}
	// An ID with no certificate is still recorded.
	got, err = s.RevokeID(ctx, storage.Revocation{SPIFFEID: "spiffe://example.org/none", RevokedAt: t0}, t0)
	if err != nil || len(got) != 0 {
		t.Fatalf("RevokeID of an ID without certificates = %v, %v", got, err)
	}
	if _, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web}, t0); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("RevokeID without revoked_at = %v, want ErrInvalid", err)
	}
}

func testRevokeSerial(t *testing.T, s Store) {
	ctx := t.Context()
	web := "spiffe://example.org/web"
	recordAll(t, s, []storage.Serial{serial(1, web, t0.Add(time.Minute)), serial(2, web, t0.Add(-time.Minute))})
	r, err := s.RevokeSerial(ctx, fmt.Sprintf("%032x", 1), "rotated out", 0, t0)
	if err != nil {
		t.Fatalf("RevokeSerial: %v", err)
	}
	if r.SPIFFEID != web || !r.NotAfter.Equal(t0.Add(time.Minute)) {
		t.Fatalf("RevokeSerial = %+v", r)
	}
	if _, err := s.RevokeSerial(ctx, fmt.Sprintf("%032x", 2), "", 0, t0); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("RevokeSerial of an expired certificate = %v, want ErrNotFound", err)
	}
	if _, err := s.RevokeSerial(ctx, "abcdef", "", 0, t0); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("RevokeSerial of an unknown serial = %v, want ErrNotFound", err)
	}
	_, revoked, err := s.ListRevocations(ctx)
	if err != nil || len(revoked) != 1 || revoked[0].Reason != "rotated out" {
		t.Fatalf("ListRevocations = %+v, %v", revoked, err)
	}
}

// testRevokeSetOnce: the revocation time, reason and admin of a serial are
// set once. Revoking its ID again, or the serial again, neither returns it
// as newly revoked nor rewrites its record, so the dates on the revocation
// list never move; the ID's own record takes the latest revocation.
func testRevokeSetOnce(t *testing.T, s Store) {
	ctx := t.Context()
	web := "spiffe://example.org/web"
	recordAll(t, s, []storage.Serial{serial(1, web, t0.Add(time.Hour)), serial(2, web, t0.Add(time.Hour))})
	first := storage.Revocation{SPIFFEID: web, RevokedAt: t0, Reason: "first", AdminUID: 1}
	if got, err := s.RevokeID(ctx, first, t0); err != nil || len(got) != 2 {
		t.Fatalf("first RevokeID = %+v, %v; want 2 serials", got, err)
	}
	// Serial 3 is issued after the first revocation.
	mustRecord(t, s, serial(3, web, t0.Add(time.Hour)))
	t1 := t0.Add(time.Minute)
	got, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: t1, Reason: "second", AdminUID: 2}, t1)
	if err != nil {
		t.Fatalf("second RevokeID: %v", err)
	}
	if len(got) != 1 || got[0].Serial != fmt.Sprintf("%032x", 3) || !got[0].RevokedAt.Equal(t1) || got[0].Reason != "second" {
		t.Fatalf("second RevokeID returned %+v; want only serial 3, revoked at %s", got, t1)
	}
	if again, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: t1.Add(time.Second)}, t1); err != nil || len(again) != 0 || again == nil {
		t.Fatalf("third RevokeID = %#v, %v; want an empty, non-nil list", again, err)
	}
	r, err := s.RevokeSerial(ctx, fmt.Sprintf("%032x", 1), "third", 3, t1.Add(time.Minute))
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("RevokeSerial of a revoked serial = %v, want ErrExists", err)
	}
	if !r.RevokedAt.Equal(t0) || r.Reason != "first" || r.AdminUID != 1 {
		t.Errorf("RevokeSerial of a revoked serial returned %+v; want its record as first revoked", r)
	}
	ids, serials, err := s.ListRevocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		at     time.Time
		reason string
		uid    uint32
	}{
		fmt.Sprintf("%032x", 1): {t0, "first", 1},
		fmt.Sprintf("%032x", 2): {t0, "first", 1},
		fmt.Sprintf("%032x", 3): {t1, "second", 2},
	}
	if len(serials) != len(want) {
		t.Fatalf("ListRevocations serials = %+v", serials)
	}
	for _, r := range serials {
		w := want[r.Serial]
		if !r.RevokedAt.Equal(w.at) || r.Reason != w.reason || r.AdminUID != w.uid {
			t.Errorf("serial %s: revoked at %s (%q, uid %d); want %s (%q, uid %d)", r.Serial, r.RevokedAt, r.Reason, r.AdminUID, w.at, w.reason, w.uid)
		}
	}
	if len(ids) != 1 || !ids[0].RevokedAt.Equal(t1.Add(time.Second)) {
		t.Errorf("ID record %+v; want the latest revocation time %s", ids, t1.Add(time.Second))
	}
}

func testRevokeBlock(t *testing.T, s Store) {
	ctx := t.Context()
	web := "spiffe://example.org/web"
	if err := s.Unblock(ctx, web); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Unblock of an unrevoked ID = %v, want ErrNotFound", err)
	}
	if _, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: t0, Blocked: true}, t0); err != nil {
		t.Fatal(err)
	}
	// A later revocation without Block does not lift the block.
	if _, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: t0.Add(time.Second)}, t0); err != nil {
		t.Fatal(err)
	}
	ids, _, err := s.ListRevocations(ctx)
	if err != nil || len(ids) != 1 || !ids[0].Blocked {
		t.Fatalf("after a second revocation: %+v, %v; want still blocked", ids, err)
	}
	if err := s.Unblock(ctx, web); err != nil {
		t.Fatalf("Unblock: %v", err)
	}
	ids, _, err = s.ListRevocations(ctx)
	if err != nil || len(ids) != 1 || ids[0].Blocked {
		t.Fatalf("after Unblock: %+v, %v; want the revocation kept, unblocked", ids, err)
	}
	if err := s.Unblock(ctx, web); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second Unblock = %v, want ErrNotFound", err)
	}
}

func testRevocationPrune(t *testing.T, s Store) {
	ctx := t.Context()
	recordAll(t, s, []storage.Serial{serial(1, "spiffe://example.org/a", t0.Add(time.Minute)), serial(2, "spiffe://example.org/b", t0.Add(time.Hour))})
	for _, r := range []storage.Revocation{
		{SPIFFEID: "spiffe://example.org/a", RevokedAt: t0},
		{SPIFFEID: "spiffe://example.org/b", RevokedAt: t0},
		{SPIFFEID: "spiffe://example.org/blocked", RevokedAt: t0, Blocked: true},
	} {
		if _, err := s.RevokeID(ctx, r, t0); err != nil {
			t.Fatal(err)
		}
	}
	// Ten minutes on: a's certificate expired, ID revocations older than
	// five minutes go, except the blocked one.
	n, err := s.PruneRevocations(ctx, t0.Add(10*time.Minute), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ids, serials, err := s.ListRevocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || len(ids) != 1 || ids[0].SPIFFEID != "spiffe://example.org/blocked" || len(serials) != 1 || serials[0].SPIFFEID != "spiffe://example.org/b" {
		t.Fatalf("after prune (%d deleted): ids %+v serials %+v", n, ids, serials)
	}
}

// testCRLNumber: numbers grow strictly even when the caller's lower bound
// (the signing time) goes backwards.
func testCRLNumber(t *testing.T, s Store) {
	ctx := t.Context()
	var got []uint64
	for _, atLeast := range []uint64{100, 100, 50, 1000, 999} {
		n, err := s.NextCRLNumber(ctx, atLeast)
		if err != nil {
			t.Fatal(err)
		}
		if n < atLeast {
			t.Fatalf("NextCRLNumber(%d) = %d, below its bound", atLeast, n)
		}
		got = append(got, n)
	}
	if want := []uint64{100, 101, 102, 1000, 1001}; !slices.Equal(got, want) {
		t.Fatalf("NextCRLNumber sequence %v, want %v", got, want)
	}
}

func client(id string, created time.Time) storage.Client {
	return storage.Client{
		ID:         id,
		SPIFFEID:   id,
		SecretHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
		CreatedAt:  created,
	}
}

func normClient(c storage.Client) storage.Client {
	c.CreatedAt = c.CreatedAt.UTC()
	return c
}

// testClientCreateGetList: a client reads back exactly as stored, a second
// one with the same ID is refused, and the listing is in (CreatedAt, ID)
// order.
func testClientCreateGetList(t *testing.T, s Store) {
	ctx := t.Context()
	if got, err := s.ListClients(ctx); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("ListClients on an empty store = %#v, %v; want an empty, non-nil list", got, err)
	}
	b := client("spiffe://example.org/b", t0)
	a := client("spiffe://example.org/a", t0.Add(time.Second))
	c := client("spiffe://example.org/c", t0) // same time as b: ID order
	for _, cl := range []storage.Client{a, b, c} {
		if err := s.CreateClient(ctx, cl); err != nil {
			t.Fatalf("CreateClient(%s): %v", cl.ID, err)
		}
	}
	got, err := s.GetClient(ctx, b.ID)
	if err != nil || !reflect.DeepEqual(normClient(got), normClient(b)) {
		t.Errorf("GetClient = %+v, %v; want %+v", got, err, b)
	}
	dup := b
	dup.SecretHash = "$argon2id$other"
	if err := s.CreateClient(ctx, dup); !errors.Is(err, storage.ErrExists) {
		t.Errorf("CreateClient of an existing ID = %v, want ErrExists", err)
	}
	if got, _ := s.GetClient(ctx, b.ID); got.SecretHash != b.SecretHash {
		t.Errorf("a refused CreateClient replaced the secret hash")
	}
	list, err := s.ListClients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []storage.Client{b, c, a}; !reflect.DeepEqual(normAll(list, normClient), normAll(want, normClient)) {
		t.Errorf("ListClients = %+v, want %+v", list, want)
	}
	if _, err := s.GetClient(ctx, "spiffe://example.org/nobody"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetClient of a missing client = %v, want ErrNotFound", err)
	}
}

func testClientDelete(t *testing.T, s Store) {
	ctx := t.Context()
	c := client("spiffe://example.org/c", t0)
	if err := s.CreateClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteClient(ctx, c.ID); err != nil {
		t.Fatalf("DeleteClient: %v", err)
	}
	if _, err := s.GetClient(ctx, c.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetClient after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteClient(ctx, c.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second DeleteClient = %v, want ErrNotFound", err)
	}
	// The ID can be registered again, with a new secret.
	if err := s.CreateClient(ctx, c); err != nil {
		t.Errorf("CreateClient after delete: %v", err)
	}
}

func testClientInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	good := client("spiffe://example.org/c", t0)
	for name, mod := range map[string]func(*storage.Client){
		"no ID":          func(c *storage.Client) { c.ID = "" },
		"no SPIFFE ID":   func(c *storage.Client) { c.SPIFFEID = "" },
		"no secret hash": func(c *storage.Client) { c.SecretHash = "" },
		"NUL in ID":      func(c *storage.Client) { c.ID = "a\x00b" },
	} {
		c := good
		mod(&c)
		if err := s.CreateClient(ctx, c); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("CreateClient(%s) = %v, want ErrInvalid", name, err)
		}
	}
	if got, err := s.ListClients(ctx); err != nil || len(got) != 0 {
		t.Errorf("invalid clients were stored: %+v, %v", got, err)
	}
}

// testBindVisible: a record queued by BindSerial is seen at once by
// SerialsFor, RevokeSerial and RevokeID, durable or not: revocation by ID
// must find every certificate that left the authority.
func testBindVisible(t *testing.T, s Store) {
	ctx := t.Context()
	web := "spiffe://example.org/web"
	var want []string
	for i := range 50 {
		r := serial(i, web, t0.Add(time.Hour))
		if err := s.BindSerial(ctx, r); err != nil {
			t.Fatalf("BindSerial: %v", err)
		}
		want = append(want, r.Serial)
	}
	got, err := s.SerialsFor(ctx, web, t0)
	if err != nil || !slices.Equal(serialIDs(got), want) {
		t.Fatalf("SerialsFor right after BindSerial = %d serials, %v; want %d", len(got), err, len(want))
	}
	if err := s.BindSerial(ctx, serial(100, web, t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if r, err := s.RevokeSerial(ctx, fmt.Sprintf("%032x", 100), "", 0, t0); err != nil || r.SPIFFEID != web {
		t.Fatalf("RevokeSerial right after BindSerial = %+v, %v", r, err)
	}
	if err := s.BindSerial(ctx, serial(101, web, t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	// 52 serials of web, one (100) revoked already: 51 are newly revoked.
	revoked, err := s.RevokeID(ctx, storage.Revocation{SPIFFEID: web, RevokedAt: t0}, t0)
	if err != nil || len(revoked) != 51 {
		t.Fatalf("RevokeID right after BindSerial revoked %d, %v; want 51", len(revoked), err)
	}
	r := serial(1, web, t0)
	r.Serial = "ABC"
	if err := s.BindSerial(ctx, r); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("BindSerial(upper-case serial) = %v, want ErrInvalid", err)
	}
}

func testReservationInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	for name, r := range map[string]storage.Reservation{
		"no serials":      {NotAfter: t0},
		"bad serial":      {Serials: []string{"0a", "0X"}, NotAfter: t0},
		"empty serial":    {Serials: []string{""}, NotAfter: t0},
		"no not_after":    {Serials: []string{"0a"}},
		"too many":        {Serials: make([]string, storage.MaxReservation+1), NotAfter: t0},
		"serial too long": {Serials: []string{fmt.Sprintf("%041x", 1)}, NotAfter: t0},
	} {
		if err := s.ReserveSerials(ctx, r); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("ReserveSerials(%s) = %v, want ErrInvalid", name, err)
		}
	}
}

// testRecoverOwn: RevokeUnbound looks only at reservations of an earlier
// run, never at those made through the same store.
func testRecoverOwn(t *testing.T, s Store) {
	ctx := t.Context()
	if err := s.ReserveSerials(ctx, storage.Reservation{Serials: []string{"0a", "0b"}, NotAfter: t0.Add(time.Hour)}); err != nil {
		t.Fatalf("ReserveSerials: %v", err)
	}
	if got, err := s.RevokeUnbound(ctx, t0, "crash"); err != nil || len(got) != 0 {
		t.Fatalf("RevokeUnbound of this run's reservation = %v, %v; want none", got, err)
	}
}

// RunCrash checks what a store keeps across a crash. open opens the store
// kept in dir, creating it when dir is empty; crash ends a store as a
// killed process would: what it had queued in memory is lost, and it is
// not closed cleanly. RunCrash closes the stores it reopens.
func RunCrash(t *testing.T, open func(t *testing.T, dir string) Store, crash func(t *testing.T, s Store)) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, open func() Store, crash func(Store))
	}{
		{"Reservation/RecoverAfterCrash", testRecoverAfterCrash},
		{"Reservation/CleanClose", testReservationCleanClose},
		{"Reservation/Pruned", testReservationPruned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var last Store
			t.Cleanup(func() {
				if last != nil {
					_ = last.Close()
				}
			})
			reopen := func() Store {
				t.Helper()
				last = open(t, dir)
				return last
			}
			tc.fn(t, reopen, func(s Store) { crash(t, s); last = nil })
		})
	}
}

func hexes(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%032x", from+i)
	}
	return out
}

// testRecoverAfterCrash: after a crash, every reserved serial is either
// found by SerialsFor (its binding was written) or revoked until the
// reservation's NotAfter; serials bound durably, released, or of an
// expired reservation are not revoked.
func testRecoverAfterCrash(t *testing.T, open func() Store, crash func(Store)) {
	ctx := t.Context()
	web := "spiffe://example.org/web"
	live := hexes(1, 6)     // reserved until t0+1h
	expired := hexes(20, 2) // reserved until t0-1m
	s := open()
	if got, err := s.RevokeUnbound(ctx, t0, "crash"); err != nil || len(got) != 0 {
		t.Fatalf("RevokeUnbound on a new store = %v, %v", got, err)
	}
	for _, r := range []storage.Reservation{{Serials: live, NotAfter: t0.Add(time.Hour)}, {Serials: expired, NotAfter: t0.Add(-time.Minute)}} {
		if err := s.ReserveSerials(ctx, r); err != nil {
			t.Fatalf("ReserveSerials: %v", err)
		}
	}
	durable := serial(1, web, t0.Add(30*time.Minute))
	mustRecord(t, s, durable) // live[0]
	queued := serial(2, web, t0.Add(30*time.Minute))
	if err := s.BindSerial(ctx, queued); err != nil { // live[1]: may or may not be written
		t.Fatal(err)
	}
	if err := s.ReleaseSerials(ctx, live[5:]); err != nil { // live[5]: never used
		t.Fatal(err)
	}
	// live[2], live[3], live[4]: handed out, never bound.
	crash(s)

	s = open()
	got, err := s.RevokeUnbound(ctx, t0, "reserved before a crash")
	if err != nil {
		t.Fatalf("RevokeUnbound: %v", err)
	}
	bound, err := s.SerialsFor(ctx, web, t0)
	if err != nil {
		t.Fatal(err)
	}
	revoked := map[string]storage.RevokedSerial{}
	for _, r := range got {
		revoked[r.Serial] = r
		if !r.NotAfter.Equal(t0.Add(time.Hour)) || !r.RevokedAt.Equal(t0) || r.Reason != "reserved before a crash" {
			t.Errorf("revoked %+v; want NotAfter t0+1h, RevokedAt t0, the reason given", r)
		}
	}
	boundSet := map[string]bool{}
	for _, r := range bound {
		boundSet[r.Serial] = true
	}
	for i, sr := range live[:5] {
		_, rev := revoked[sr]
		switch {
		case i == 0 && (rev || !boundSet[sr]):
			t.Errorf("durably recorded serial %s: revoked %v, found %v; want found only", sr, rev, boundSet[sr])
		case rev == boundSet[sr]:
			t.Errorf("serial %s: revoked %v, found by SerialsFor %v; want exactly one", sr, rev, boundSet[sr])
		case i >= 2 && !rev:
			t.Errorf("unbound serial %s was not revoked", sr)
		}
	}
	for _, sr := range append(live[5:], expired...) {
		if _, ok := revoked[sr]; ok {
			t.Errorf("serial %s (released, or of an expired reservation) was revoked", sr)
		}
	}
	_, list, err := s.ListRevocations(ctx)
	if err != nil || len(list) != len(got) {
		t.Errorf("ListRevocations = %d serials, %v; want the %d revoked", len(list), err, len(got))
	}
	// Done once: a second start revokes nothing more.
	crash(s)
	s = open()
	if again, err := s.RevokeUnbound(ctx, t0, "crash"); err != nil || len(again) != 0 {
		t.Errorf("second RevokeUnbound = %v, %v; want none", again, err)
	}
}

// testReservationCleanClose: bindings queued before Close are written, and
// with the unused serials released nothing is revoked at the next start.
func testReservationCleanClose(t *testing.T, open func() Store, _ func(Store)) {
	ctx := t.Context()
	web := "spiffe://example.org/web"
	s := open()
	if _, err := s.RevokeUnbound(ctx, t0, "crash"); err != nil {
		t.Fatal(err)
	}
	reserved := hexes(1, 100)
	if err := s.ReserveSerials(ctx, storage.Reservation{Serials: reserved, NotAfter: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		if err := s.BindSerial(ctx, serial(1+i, web, t0.Add(time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ReleaseSerials(ctx, reserved[60:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	if got, err := s.RevokeUnbound(ctx, t0, "crash"); err != nil || len(got) != 0 {
		t.Errorf("RevokeUnbound after a clean close = %v, %v; want none", got, err)
	}
	if got, err := s.SerialsFor(ctx, web, t0); err != nil || len(got) != 60 {
		t.Errorf("SerialsFor after a clean close = %d, %v; want 60", len(got), err)
	}
}

// testReservationPruned: PruneSerials drops reservations that expired, so
// a later start does not revoke their serials.
func testReservationPruned(t *testing.T, open func() Store, crash func(Store)) {
	ctx := t.Context()
	s := open()
	if _, err := s.RevokeUnbound(ctx, t0, "crash"); err != nil {
		t.Fatal(err)
	}
	for i, at := range []time.Time{t0, t0.Add(time.Hour)} {
		if err := s.ReserveSerials(ctx, storage.Reservation{Serials: hexes(10*i, 3), NotAfter: at}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PruneSerials(ctx, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	crash(s)
	s = open()
	got, err := s.RevokeUnbound(ctx, t0.Add(-time.Hour), "crash")
	if err != nil {
		t.Fatal(err)
	}
	if ids := func() []string {
		var out []string
		for _, r := range got {
			out = append(out, r.Serial)
		}
		return out
	}(); !slices.Equal(ids, hexes(10, 3)) {
		t.Errorf("RevokeUnbound after pruning revoked %v, want only %v", ids, hexes(10, 3))
	}
}

func tokenHash(n int) string { return fmt.Sprintf("%064x", n) }

func joinToken(n int, node string, created time.Time) storage.JoinToken {
	return storage.JoinToken{Hash: tokenHash(n), Node: node, CreatedAt: created, ExpiresAt: created.Add(time.Hour), AdminUID: 0}
}

func normJoinToken(j storage.JoinToken) storage.JoinToken {
	j.CreatedAt, j.ExpiresAt, j.UsedAt = j.CreatedAt.UTC(), j.ExpiresAt.UTC(), j.UsedAt.UTC()
	return j
}

func node(name string, at time.Time) storage.Node {
	return storage.Node{Name: name, Attestation: storage.AttestX509PoP, FirstAttestedAt: at, LastAttestedAt: at, SVIDSerial: "0a1b"}
}

func normNode(n storage.Node) storage.Node {
	n.FirstAttestedAt, n.LastAttestedAt, n.EvictedAt = n.FirstAttestedAt.UTC(), n.LastAttestedAt.UTC(), n.EvictedAt.UTC()
	return n
}

// testEntryNodes: the nodes of an entry read back as stored, and an entry
// stored without nodes reads back without (the server's own socket).
func testEntryNodes(t *testing.T, s Store) {
	ctx := t.Context()
	local := entry("local", t0)
	scoped := entry("scoped", t0.Add(time.Second))
	scoped.Nodes = []string{"node-a.example.org", "node-b"}
	every := entry("every", t0.Add(2*time.Second))
	every.Nodes = []string{"*"}
	for _, e := range []storage.Entry{local, scoped, every} {
		mustCreate(t, s, e)
	}
	for _, want := range []storage.Entry{local, scoped, every} {
		got, err := s.GetEntry(ctx, want.ID)
		if err != nil || !slices.Equal(got.Nodes, want.Nodes) {
			t.Errorf("GetEntry(%s).Nodes = %q, %v; want %q", want.ID, got.Nodes, err, want.Nodes)
		}
	}
	if got, _ := s.GetEntry(ctx, "local"); got.Nodes != nil {
		t.Errorf("an entry stored without nodes reads back with %#v", got.Nodes)
	}
	bad := entry("bad", t0)
	bad.Nodes = []string{"a\x00b"}
	if err := s.CreateEntry(ctx, bad); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("CreateEntry with a NUL in a node name = %v, want ErrInvalid", err)
	}
}

// testJoinTokenGet: a token reads back by its hash as stored, used or not,
// expired or not; an unknown hash, or one of a pruned token, is
// ErrNotFound; a read changes nothing.
func testJoinTokenGet(t *testing.T, s Store) {
	ctx := t.Context()
	if _, err := s.GetJoinToken(ctx, tokenHash(1)); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetJoinToken on an empty store = %v, want ErrNotFound", err)
	}
	a, b := joinToken(1, "web-1", t0), joinToken(2, "web-2", t0.Add(time.Second))
	a.AdminUID = 1000
	for _, j := range []storage.JoinToken{a, b} {
		if err := s.CreateJoinToken(ctx, j); err != nil {
			t.Fatalf("CreateJoinToken: %v", err)
		}
	}
	for _, want := range []storage.JoinToken{a, b} {
		if got, err := s.GetJoinToken(ctx, want.Hash); err != nil || !reflect.DeepEqual(normJoinToken(got), normJoinToken(want)) {
			t.Errorf("GetJoinToken(%s) = %+v, %v; want %+v", want.Node, got, err, want)
		}
	}
	for name, hash := range map[string]string{"unknown": tokenHash(3), "empty": "", "upper-case": strings.ToUpper(tokenHash(0xab))} {
		if _, err := s.GetJoinToken(ctx, hash); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("GetJoinToken(%s) = %v, want ErrNotFound", name, err)
		}
	}
	// A read does not spend the token.
	at := t0.Add(time.Minute)
	if _, _, err := s.ConsumeJoinToken(ctx, a.Hash, at); err != nil {
		t.Fatalf("ConsumeJoinToken after reads: %v", err)
	}
	used := a
	used.UsedAt = at
	if got, err := s.GetJoinToken(ctx, a.Hash); err != nil || !reflect.DeepEqual(normJoinToken(got), normJoinToken(used)) {
		t.Errorf("GetJoinToken(used) = %+v, %v; want %+v", got, err, used)
	}
	// Expired tokens read back until they are pruned.
	if got, err := s.GetJoinToken(ctx, b.Hash); err != nil || got.Hash != b.Hash {
		t.Errorf("GetJoinToken(expired, not pruned) = %+v, %v; want it", got, err)
	}
	if n, err := s.PruneJoinTokens(ctx, b.ExpiresAt.Add(time.Second)); err != nil || n != 2 {
		t.Fatalf("PruneJoinTokens = %d, %v; want 2", n, err)
	}
	for _, j := range []storage.JoinToken{a, b} {
		if _, err := s.GetJoinToken(ctx, j.Hash); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("GetJoinToken(%s, pruned) = %v, want ErrNotFound", j.Node, err)
		}
	}
}

// testJoinTokenConsume: a token is consumed once, before its expiry; each
// refusal has its own sentinel and changes nothing; success creates or
// updates the node, which is no longer evicted.
func testJoinTokenConsume(t *testing.T, s Store) {
	ctx := t.Context()
	if got, err := s.ListNodes(ctx); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("ListNodes on an empty store = %#v, %v; want an empty, non-nil list", got, err)
	}
	tok := joinToken(1, "web-1", t0)
	if err := s.CreateJoinToken(ctx, tok); err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	dup := tok
	dup.Node = "other"
	if err := s.CreateJoinToken(ctx, dup); !errors.Is(err, storage.ErrExists) {
		t.Errorf("CreateJoinToken of an existing hash = %v, want ErrExists", err)
	}
	if got, _ := s.ListNodes(ctx); len(got) != 0 {
		t.Errorf("a node exists before its token is used: %+v", got)
	}
	if _, _, err := s.ConsumeJoinToken(ctx, tokenHash(2), t0); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("ConsumeJoinToken(unknown) = %v, want ErrNotFound", err)
	}
	if _, _, err := s.ConsumeJoinToken(ctx, tok.Hash, tok.ExpiresAt); !errors.Is(err, storage.ErrTokenExpired) {
		t.Errorf("ConsumeJoinToken at its expiry = %v, want ErrTokenExpired", err)
	}
	at := t0.Add(time.Minute)
	got, n, err := s.ConsumeJoinToken(ctx, tok.Hash, at)
	if err != nil {
		t.Fatalf("ConsumeJoinToken: %v", err)
	}
	if got.Node != "web-1" || !got.UsedAt.Equal(at) {
		t.Errorf("consumed token = %+v, want node web-1 used at %s", got, at)
	}
	want := storage.Node{Name: "web-1", Attestation: storage.AttestJoinToken, FirstAttestedAt: at, LastAttestedAt: at}
	if !reflect.DeepEqual(normNode(n), normNode(want)) {
		t.Errorf("attested node = %+v, want %+v", n, want)
	}
	if stored, err := s.GetNode(ctx, "web-1"); err != nil || !reflect.DeepEqual(normNode(stored), normNode(want)) {
		t.Errorf("GetNode = %+v, %v; want %+v", stored, err, want)
	}
	_, _, err = s.ConsumeJoinToken(ctx, tok.Hash, at.Add(time.Second))
	if !errors.Is(err, storage.ErrTokenUsed) || errors.Is(err, storage.ErrTokenExpired) || errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second ConsumeJoinToken = %v, want ErrTokenUsed alone", err)
	}
	list, err := s.ListJoinTokens(ctx)
	if err != nil || len(list) != 1 || !list[0].UsedAt.Equal(at) {
		t.Errorf("ListJoinTokens = %+v, %v; want the one token, used at %s", list, err, at)
	}

	// An evicted node comes back with a new token; its first attestation
	// is kept, its eviction and old serial are gone.
	stored, _ := s.GetNode(ctx, "web-1")
	stored.SVIDSerial = "ff"
	if err := s.PutNode(ctx, stored); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.EvictNode(ctx, "web-1", at.Add(time.Minute), 1000); err != nil {
		t.Fatal(err)
	}
	again := joinToken(3, "web-1", at.Add(2*time.Minute))
	if err := s.CreateJoinToken(ctx, again); err != nil {
		t.Fatal(err)
	}
	later := at.Add(3 * time.Minute)
	_, n, err = s.ConsumeJoinToken(ctx, again.Hash, later)
	if err != nil {
		t.Fatalf("ConsumeJoinToken after eviction: %v", err)
	}
	want = storage.Node{Name: "web-1", Attestation: storage.AttestJoinToken, FirstAttestedAt: at, LastAttestedAt: later}
	if !reflect.DeepEqual(normNode(n), normNode(want)) || n.Evicted() {
		t.Errorf("re-attested node = %+v, want %+v", n, want)
	}
}

// testJoinTokenConsumeRace: of many concurrent consumers of one token,
// exactly one wins; the others see ErrTokenUsed.
func testJoinTokenConsumeRace(t *testing.T, s Store) {
	ctx := t.Context()
	tok := joinToken(1, "race", t0)
	if err := s.CreateJoinToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, _, errs[i] = s.ConsumeJoinToken(ctx, tok.Hash, t0.Add(time.Duration(i+1)*time.Second))
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, storage.ErrTokenUsed):
			t.Errorf("consumer %d: %v, want ErrTokenUsed", i, err)
		}
	}
	if wins != 1 {
		t.Errorf("%d consumers won, want exactly 1", wins)
	}
}

func testJoinTokenInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	good := joinToken(1, "n", t0)
	for name, mod := range map[string]func(*storage.JoinToken){
		"no hash":         func(j *storage.JoinToken) { j.Hash = "" },
		"short hash":      func(j *storage.JoinToken) { j.Hash = "abcd" },
		"upper-case hash": func(j *storage.JoinToken) { j.Hash = fmt.Sprintf("%064X", 0xabc) },
		"no node":         func(j *storage.JoinToken) { j.Node = "" },
		"long node":       func(j *storage.JoinToken) { j.Node = strings.Repeat("a", storage.MaxNodeNameLen+1) },
		"expires at once": func(j *storage.JoinToken) { j.ExpiresAt = j.CreatedAt },
	} {
		j := good
		mod(&j)
		if err := s.CreateJoinToken(ctx, j); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("CreateJoinToken(%s) = %v, want ErrInvalid", name, err)
		}
	}
	if got, err := s.ListJoinTokens(ctx); err != nil || len(got) != 0 {
		t.Errorf("invalid tokens were stored: %+v, %v", got, err)
	}
}

// testJoinTokenPrune: tokens that expired before the cut go, used or not;
// the others stay and still work.
func testJoinTokenPrune(t *testing.T, s Store) {
	ctx := t.Context()
	old := joinToken(1, "a", t0)                 // expires t0+1h
	used := joinToken(2, "b", t0)                // expires t0+1h, used
	live := joinToken(3, "c", t0.Add(time.Hour)) // expires t0+2h
	for _, j := range []storage.JoinToken{old, used, live} {
		if err := s.CreateJoinToken(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.ConsumeJoinToken(ctx, used.Hash, t0); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneJoinTokens(ctx, t0.Add(90*time.Minute))
	if err != nil || n != 2 {
		t.Errorf("PruneJoinTokens = %d, %v; want 2", n, err)
	}
	if list, _ := s.ListJoinTokens(ctx); len(list) != 1 || list[0].Hash != live.Hash {
		t.Errorf("after pruning: %+v, want only the live token", list)
	}
	if _, _, err := s.ConsumeJoinToken(ctx, live.Hash, t0.Add(90*time.Minute)); err != nil {
		t.Errorf("the live token no longer works: %v", err)
	}
}

func testNodePutGetList(t *testing.T, s Store) {
	ctx := t.Context()
	b, a, c := node("b", t0), node("a", t0.Add(time.Second)), node("c.example.org", t0)
	for _, n := range []storage.Node{b, a, c} {
		if err := s.PutNode(ctx, n); err != nil {
			t.Fatalf("PutNode(%s): %v", n.Name, err)
		}
	}
	got, err := s.GetNode(ctx, "b")
	if err != nil || !reflect.DeepEqual(normNode(got), normNode(b)) {
		t.Errorf("GetNode = %+v, %v; want %+v", got, err, b)
	}
	b.SVIDSerial, b.LastAttestedAt = "ff", t0.Add(time.Hour)
	if err := s.PutNode(ctx, b); err != nil {
		t.Fatalf("PutNode (replace): %v", err)
	}
	list, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []storage.Node{a, b, c}; !reflect.DeepEqual(normAll(list, normNode), normAll(want, normNode)) {
		t.Errorf("ListNodes = %+v, want %+v (by name)", list, want)
	}
	if _, err := s.GetNode(ctx, "nobody"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetNode of a missing node = %v, want ErrNotFound", err)
	}
}

// testNodeEvict: eviction is durable, names the admin, and cancels the
// node's unused tokens, only its own.
func testNodeEvict(t *testing.T, s Store) {
	ctx := t.Context()
	if _, _, err := s.EvictNode(ctx, "ghost", t0, 0); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("EvictNode of an unknown node = %v, want ErrNotFound", err)
	}
	if err := s.PutNode(ctx, node("web", t0)); err != nil {
		t.Fatal(err)
	}
	pending := joinToken(1, "web", t0)
	other := joinToken(2, "db", t0)
	for _, j := range []storage.JoinToken{pending, other} {
		if err := s.CreateJoinToken(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	at := t0.Add(time.Minute)
	n, cancelled, err := s.EvictNode(ctx, "web", at, 1000)
	if err != nil {
		t.Fatalf("EvictNode: %v", err)
	}
	if !n.Evicted() || !n.EvictedAt.Equal(at) || n.EvictedBy != 1000 || cancelled != 1 {
		t.Errorf("EvictNode = %+v, %d cancelled; want evicted at %s by 1000, 1 cancelled", n, cancelled, at)
	}
	if got, _ := s.GetNode(ctx, "web"); !got.Evicted() || got.SVIDSerial != "0a1b" {
		t.Errorf("stored node after eviction = %+v; want evicted, serial kept", got)
	}
	if _, _, err := s.ConsumeJoinToken(ctx, pending.Hash, at); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a token made before the eviction still works: %v", err)
	}
	if _, _, err := s.ConsumeJoinToken(ctx, other.Hash, at); err != nil {
		t.Errorf("another node's token was cancelled: %v", err)
	}
}

func testNodeInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	good := node("n", t0)
	for name, mod := range map[string]func(*storage.Node){
		"no name":           func(n *storage.Node) { n.Name = "" },
		"long name":         func(n *storage.Node) { n.Name = strings.Repeat("a", storage.MaxNodeNameLen+1) },
		"NUL in name":       func(n *storage.Node) { n.Name = "a\x00b" },
		"no attestation":    func(n *storage.Node) { n.Attestation = "" },
		"other attestation": func(n *storage.Node) { n.Attestation = "aws_iid" },
		"long serial":       func(n *storage.Node) { n.SVIDSerial = strings.Repeat("f", 41) },
	} {
		n := good
		mod(&n)
		if err := s.PutNode(ctx, n); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("PutNode(%s) = %v, want ErrInvalid", name, err)
		}
	}
	if got, err := s.ListNodes(ctx); err != nil || len(got) != 0 {
		t.Errorf("invalid nodes were stored: %+v, %v", got, err)
	}
}
