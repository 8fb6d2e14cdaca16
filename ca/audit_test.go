package ca

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/internal/testclock"
	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/bbolt"
)

// auditFixture is an authority on a real bbolt file that the test can
// close, edit behind its back, and open again.
type auditFixture struct {
	dir   string
	clock *testclock.Clock
	store *bbolt.Store
	a     *Authority
}

func newAuditFixture(t *testing.T) *auditFixture {
	t.Helper()
	f := &auditFixture{dir: t.TempDir(), clock: testclock.New(testStart)}
	f.open(t)
	t.Cleanup(f.close)
	return f
}

func (f *auditFixture) open(t *testing.T) {
	t.Helper()
	s, err := bbolt.Open(filepath.Join(f.dir, "badge.db"), &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatalf("bbolt.Open: %v", err)
	}
	a, err := New(context.Background(), Config{Store: s, KeyDir: filepath.Join(f.dir, "keys"), Time: f.clock.Now, Monotonic: f.clock.Monotonic})
	if err != nil {
		s.Close()
		t.Fatalf("New: %v", err)
	}
	f.store, f.a = s, a
}

func (f *auditFixture) close() {
	if f.a != nil {
		f.a.Close()
		f.store.Close()
		f.a, f.store = nil, nil
	}
}

// edit closes the authority, runs fn on the database file with bbolt
// itself (as someone with access to the file would), and opens it again.
func (f *auditFixture) edit(t *testing.T, fn func(audit, meta *bolt.Bucket) error) {
	t.Helper()
	f.close()
	db, err := bolt.Open(filepath.Join(f.dir, "badge.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket([]byte("audit")), tx.Bucket([]byte("meta"))) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t)
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func getRecord(t *testing.T, b *bolt.Bucket, seq uint64) storage.AuditRecord {
	t.Helper()
	var r storage.AuditRecord
	if err := json.Unmarshal(b.Get(seqKey(seq)), &r); err != nil {
		t.Fatalf("record %d: %v", seq, err)
	}
	return r
}

func putRecord(t *testing.T, b *bolt.Bucket, r storage.AuditRecord) {
	t.Helper()
	data, _ := json.Marshal(r)
	if err := b.Put(seqKey(r.Seq), data); err != nil {
		t.Fatal(err)
	}
}

// doActions records four admin actions through the authority.
func doActions(t *testing.T, a *Authority) {
	t.Helper()
	ctx := context.Background()
	e, err := a.CreateEntry(ctx, EntryRequest{SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:uid:1001"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []AuditEvent{
		{AdminUID: 0, Action: AuditEntryCreate, Target: e.ID, Detail: "spiffe://example.org/web"},
		{AdminUID: 1000, Action: AuditRevokeID, Target: "spiffe://example.org/web", Detail: "reason: key leaked"},
		{AdminUID: 0, Action: AuditEntryDelete, Target: "nope", Err: storage.ErrNotFound},
		{AdminUID: 0, Action: AuditUnblock, Target: "spiffe://example.org/db"},
	} {
		f := ev
		if err := a.Audit(ctx, f); err != nil {
			t.Fatalf("Audit(%s): %v", ev.Action, err)
		}
	}
}

func TestAuditChainVerifies(t *testing.T) {
	f := newAuditFixture(t)
	ctx := context.Background()
	rep, err := f.a.VerifyAudit(ctx)
	if err != nil || !rep.OK || rep.Records != 0 {
		t.Fatalf("empty trail: VerifyAudit = %+v, %v; want ok with 0 records", rep, err)
	}
	doActions(t, f.a)
	recs, more, err := f.a.AuditList(ctx, 0, time.Time{}, 100)
	if err != nil || more || len(recs) != 4 {
		t.Fatalf("AuditList = %d records, more %v, %v; want 4", len(recs), more, err)
	}
	want := []struct {
		action, result string
		uid            uint32
	}{{AuditEntryCreate, "ok", 0}, {AuditRevokeID, "ok", 1000}, {AuditEntryDelete, "error: storage: not found", 0}, {AuditUnblock, "ok", 0}}
	for i, r := range recs {
		if r.Seq != uint64(i+1) || r.Action != want[i].action || r.Result != want[i].result || r.AdminUID != want[i].uid {
			t.Errorf("record %d = %+v; want seq %d action %s result %q uid %d", i, r, i+1, want[i].action, want[i].result, want[i].uid)
		}
		if i > 0 && r.Prev != recs[i-1].Hash {
			t.Errorf("record %d does not chain to record %d", r.Seq, recs[i-1].Seq)
		}
	}
	rep, err = f.a.VerifyAudit(ctx)
	if err != nil || !rep.OK || rep.Records != 4 || rep.FirstSeq != 1 || rep.LastSeq != 4 || !strings.Contains(rep.SignedBy, "intermediate") {
		t.Fatalf("VerifyAudit = %+v, %v; want ok, records 1-4, signed by the intermediate", rep, err)
	}
	// The chain survives a restart and continues.
	f.close()
	f.open(t)
	if err := f.a.Audit(ctx, AuditEvent{Action: AuditClientCreate, Target: "spiffe://example.org/c"}); err != nil {
		t.Fatal(err)
	}
	if rep, err := f.a.VerifyAudit(ctx); err != nil || !rep.OK || rep.LastSeq != 5 {
		t.Fatalf("after restart: VerifyAudit = %+v, %v; want ok up to 5", rep, err)
	}
	// --since filters by time, after pages.
	f.clock.Advance(time.Hour)
	since := f.clock.Now()
	if err := f.a.Audit(ctx, AuditEvent{Action: AuditClientDelete, Target: "spiffe://example.org/c"}); err != nil {
		t.Fatal(err)
	}
	if recs, _, _ := f.a.AuditList(ctx, 0, since, 100); len(recs) != 1 || recs[0].Seq != 6 {
		t.Errorf("AuditList(since) = %+v; want record 6 only", recs)
	}
	if recs, more, _ := f.a.AuditList(ctx, 2, time.Time{}, 2); len(recs) != 2 || recs[0].Seq != 3 || !more {
		t.Errorf("AuditList(after 2, limit 2) = %+v, more %v; want 3, 4 and more", recs, more)
	}
}

// TestAuditTamper edits the bbolt file directly, as someone with access to
// it but not to the CA key would, and checks that VerifyAudit names the
// record that was changed.
func TestAuditTamper(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(t *testing.T, audit, meta *bolt.Bucket) error
		badSeq  uint64
		problem string
	}{
		{"content altered", func(t *testing.T, b, _ *bolt.Bucket) error {
			r := getRecord(t, b, 2)
			r.AdminUID = 0
			putRecord(t, b, r)
			return nil
		}, 2, "record 2 was altered"},
		{"content and hash altered", func(t *testing.T, b, _ *bolt.Bucket) error {
			r := getRecord(t, b, 2)
			r.Detail = "reason: routine"
			r.Hash = AuditRecordHash(r)
			putRecord(t, b, r)
			return nil
		}, 2, "record 2 was altered"},
		{"link altered", func(t *testing.T, b, _ *bolt.Bucket) error {
			r := getRecord(t, b, 3)
			r.Prev = strings.Repeat("0", 64)
			r.Hash = AuditRecordHash(r)
			putRecord(t, b, r)
			return nil
		}, 3, "record 3 was altered or replaced"},
		{"record deleted", func(t *testing.T, b, _ *bolt.Bucket) error {
			return b.Delete(seqKey(3))
		}, 3, "record 3 is missing"},
		{"records swapped", func(t *testing.T, b, _ *bolt.Bucket) error {
			r2, r3 := getRecord(t, b, 2), getRecord(t, b, 3)
			r2.Seq, r3.Seq = 3, 2
			r2.Hash, r3.Hash = AuditRecordHash(r2), AuditRecordHash(r3)
			putRecord(t, b, r2)
			putRecord(t, b, r3)
			return nil
		}, 2, "record 2 was altered or replaced"},
		{"last record deleted", func(t *testing.T, b, _ *bolt.Bucket) error {
			return b.Delete(seqKey(4))
		}, 4, "record 4 is missing"},
		{"not decodable", func(t *testing.T, b, _ *bolt.Bucket) error {
			return b.Put(seqKey(1), []byte("{"))
		}, 1, "record 1 does not decode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newAuditFixture(t)
			doActions(t, f.a)
			f.edit(t, func(audit, meta *bolt.Bucket) error { return tc.edit(t, audit, meta) })
			rep, err := f.a.VerifyAudit(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK || rep.BadSeq != tc.badSeq || !strings.Contains(rep.Problem, tc.problem) {
				t.Fatalf("VerifyAudit = %+v; want bad seq %d, problem containing %q", rep, tc.badSeq, tc.problem)
			}
		})
	}
}

// TestAuditForgedHead rewrites a record, every hash after it and the head,
// without the CA key: the head's signature fails, and a restarted server
// does not bless the forgery by signing over it.
func TestAuditForgedHead(t *testing.T) {
	f := newAuditFixture(t)
	doActions(t, f.a)
	f.edit(t, func(b, meta *bolt.Bucket) error {
		prev := getRecord(t, b, 1).Hash
		for seq := uint64(2); seq <= 4; seq++ {
			r := getRecord(t, b, seq)
			if seq == 2 {
				r.AdminUID = 0
			}
			r.Prev = prev
			r.Hash = AuditRecordHash(r)
			putRecord(t, b, r)
			prev = r.Hash
		}
		var head storage.AuditHead
		if err := json.Unmarshal(meta.Get([]byte("audit_head")), &head); err != nil {
			return err
		}
		head.Hash = prev
		data, _ := json.Marshal(head)
		return meta.Put([]byte("audit_head"), data)
	})
	ctx := context.Background()
	rep, _ := f.a.VerifyAudit(ctx)
	if rep.OK || !strings.Contains(rep.Problem, "signature does not match") {
		t.Fatalf("VerifyAudit = %+v; want the head's signature to fail", rep)
	}
	if err := f.a.Audit(ctx, AuditEvent{Action: AuditEntryCreate, Target: "x"}); err != nil {
		t.Fatal(err)
	}
	rep, _ = f.a.VerifyAudit(ctx)
	if rep.OK || rep.BadSeq != 4 || !strings.Contains(rep.Problem, "not trustworthy") {
		t.Fatalf("after a new record: VerifyAudit = %+v; want records up to 4 reported as not trustworthy", rep)
	}
}

// TestAuditPrune checks that pruning by age keeps the trail verifiable,
// records itself, and is not fooled by a wall clock that jumps ahead.
func TestAuditPrune(t *testing.T) {
	f := newAuditFixture(t)
	ctx := context.Background()
	f.a.cfg.AuditRetention = 24 * time.Hour
	doActions(t, f.a)
	f.clock.Advance(2 * time.Hour)
	if err := f.a.Audit(ctx, AuditEvent{Action: AuditEntryCreate, Target: "kept"}); err != nil {
		t.Fatal(err)
	}
	// A wall clock stepped ahead prunes nothing.
	f.clock.Step(48 * time.Hour)
	if n, err := f.a.pruneAudit(ctx); err != nil || n != 0 {
		t.Fatalf("pruneAudit after a clock step = %d, %v; want 0", n, err)
	}
	f.clock.Advance(23 * time.Hour)
	n, err := f.a.pruneAudit(ctx)
	if err != nil || n != 4 {
		t.Fatalf("pruneAudit = %d, %v; want the 4 records older than a day", n, err)
	}
	recs, _, err := f.a.AuditList(ctx, 0, time.Time{}, 100)
	if err != nil || len(recs) != 2 || recs[0].Seq != 5 || recs[1].Action != AuditPrune || recs[1].Target != "records 1 to 4" {
		t.Fatalf("after pruning: %+v, %v; want record 5 and the prune record", recs, err)
	}
	rep, err := f.a.VerifyAudit(ctx)
	if err != nil || !rep.OK || rep.FirstSeq != 5 || rep.LastSeq != 6 {
		t.Fatalf("VerifyAudit after pruning = %+v, %v; want ok, 5-6", rep, err)
	}
	// The anchor is signed: deleting the first kept record is detected.
	f.edit(t, func(b, _ *bolt.Bucket) error { return b.Delete(seqKey(5)) })
	if rep, _ := f.a.VerifyAudit(ctx); rep.OK || rep.BadSeq != 5 {
		t.Fatalf("VerifyAudit with the first kept record deleted = %+v; want bad seq 5", rep)
	}
}

// TestAuditRotation checks that a scheduled intermediate rotation is in
// the trail, and that the head, now signed by the new intermediate,
// verifies.
func TestAuditRotation(t *testing.T) {
	f := newAuditFixture(t)
	ctx := context.Background()
	doActions(t, f.a)
	old := f.a.Snapshot().signer.id
	f.clock.Advance(DefaultIntermediateTTL/2 + time.Minute)
	if err := f.a.scheduledRotation(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _, _ := f.a.AuditList(ctx, 4, time.Time{}, 10)
	if len(recs) != 1 || recs[0].Action != AuditKeyRotate || recs[0].Target == old || recs[0].Target != f.a.Snapshot().signer.id {
		t.Fatalf("records after rotation = %+v; want one key.rotate naming the new intermediate", recs)
	}
	if rep, err := f.a.VerifyAudit(ctx); err != nil || !rep.OK {
		t.Fatalf("VerifyAudit = %+v, %v", rep, err)
	}
}

func TestAuditClip(t *testing.T) {
	f := newAuditFixture(t)
	long := strings.Repeat("é", storage.MaxAuditText)
	if err := f.a.Audit(context.Background(), AuditEvent{Action: AuditRevokeID, Target: "x", Detail: long}); err != nil {
		t.Fatalf("Audit with a long detail: %v", err)
	}
	recs, _, _ := f.a.AuditList(context.Background(), 0, time.Time{}, 1)
	if len(recs) != 1 || len(recs[0].Detail) > storage.MaxAuditText || !strings.HasSuffix(recs[0].Detail, "…") {
		t.Fatalf("detail of %d bytes not clipped to %d", len(recs[0].Detail), storage.MaxAuditText)
	}
	if err := f.a.Audit(context.Background(), AuditEvent{}); err == nil {
		t.Fatalf("Audit without an action = %v; want an error", err)
	}
}

// TestAuditAcrossRootReplacement: a root past its lifetime is replaced at
// start, and the new bundle holds only the new root; the head signed
// under the old one still verifies (its key file is in the key
// directory), so the trail is not marked as tainted.
func TestAuditAcrossRootReplacement(t *testing.T) {
	f := &auditFixture{dir: t.TempDir(), clock: testclock.New(testStart)}
	open := func() {
		s, err := bbolt.Open(filepath.Join(f.dir, "badge.db"), &bbolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		a, err := New(context.Background(), Config{Store: s, KeyDir: filepath.Join(f.dir, "keys"), Time: f.clock.Now, Monotonic: f.clock.Monotonic,
			IntermediateTTL: 20 * time.Minute, RootTTL: 40 * time.Minute})
		if err != nil {
			s.Close()
			t.Fatal(err)
		}
		f.store, f.a = s, a
	}
	open()
	t.Cleanup(f.close)
	doActions(t, f.a)
	oldRoot := f.a.Snapshot().bundle.X509Authorities()[0]
	f.close()
	f.clock.Advance(41 * time.Minute)
	open()
	if roots := f.a.Snapshot().bundle.X509Authorities(); len(roots) != 1 || roots[0].Equal(oldRoot) {
		t.Fatal("the root was not replaced")
	}
	ctx := context.Background()
	if err := f.a.Audit(ctx, AuditEvent{Action: AuditEntryCreate, Target: "after"}); err != nil {
		t.Fatal(err)
	}
	if rep, err := f.a.VerifyAudit(ctx); err != nil || !rep.OK || rep.LastSeq != 5 {
		t.Fatalf("VerifyAudit after the root was replaced = %+v, %v; want ok up to 5", rep, err)
	}
}
