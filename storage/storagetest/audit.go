package storagetest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/badge-dev/badge/storage"
)

// auditRec returns record seq chained to prev, with a made-up hash (the
// store keeps hashes; the authority computes and checks them).
func auditRec(seq uint64, prev string) storage.AuditRecord {
	h := strings.Repeat(string("0123456789abcdef"[seq%16]), 64)
	return storage.AuditRecord{Seq: seq, Time: t0, Action: "entry.create", Target: "e", Result: "ok", Prev: prev, Hash: h}
}

func auditHeadOf(r storage.AuditRecord) storage.AuditHead {
	return storage.AuditHead{Seq: r.Seq, Hash: r.Hash, SignedAt: t0, Signature: []byte{1}, Chain: [][]byte{{2}}}
}

// testAudit: appends must follow the stored head exactly (a record that
// skips, repeats or forks the chain writes nothing), records come back in
// order with the head from the same read, and pruning checks its anchor,
// then deletes and appends in one step.
func testAudit(t *testing.T, s Store) {
	ctx := context.Background()
	if head, last, err := s.AuditHead(ctx); err != nil || head.Seq != 0 || last.Seq != 0 {
		t.Fatalf("AuditHead of a new store = %+v, %+v, %v; want zero", head, last, err)
	}
	var prev string
	for seq := uint64(1); seq <= 3; seq++ {
		r := auditRec(seq, prev)
		if err := s.AppendAudit(ctx, r, auditHeadOf(r)); err != nil {
			t.Fatalf("AppendAudit(%d): %v", seq, err)
		}
		prev = r.Hash
	}
	for _, tc := range []struct {
		name string
		rec  storage.AuditRecord
		head storage.AuditHead
		want error
	}{
		{"gap", auditRec(5, prev), auditHeadOf(auditRec(5, prev)), storage.ErrExists},
		{"replay", auditRec(3, auditRec(2, "").Hash), auditHeadOf(auditRec(3, "")), storage.ErrExists},
		{"fork", auditRec(4, strings.Repeat("f", 64)), auditHeadOf(auditRec(4, "")), storage.ErrExists},
		{"head of another record", auditRec(4, prev), auditHeadOf(auditRec(3, "")), storage.ErrInvalid},
		{"no action", storage.AuditRecord{Seq: 4, Time: t0, Result: "ok", Prev: prev}, storage.AuditHead{Seq: 4}, storage.ErrInvalid},
		{"upper-case hash", storage.AuditRecord{Seq: 4, Time: t0, Action: "a", Result: "ok", Prev: prev, Hash: "AB"}, storage.AuditHead{Seq: 4, Hash: "AB"}, storage.ErrInvalid},
	} {
		if err := s.AppendAudit(ctx, tc.rec, tc.head); !errors.Is(err, tc.want) {
			t.Errorf("%s: AppendAudit = %v; want %v", tc.name, err, tc.want)
		}
	}
	head, last, err := s.AuditHead(ctx)
	if err != nil || head.Seq != 3 || last.Seq != 3 || last.Hash != head.Hash || !last.Time.Equal(t0) {
		t.Fatalf("AuditHead = %+v, %+v, %v; want record 3 (nothing written by the refused appends)", head, last, err)
	}
	var seqs []uint64
	if _, err := s.ScanAudit(ctx, 1, func(r storage.AuditRecord, err error) bool { seqs = append(seqs, r.Seq); return err == nil }); err != nil || len(seqs) != 2 || seqs[0] != 2 {
		t.Fatalf("ScanAudit(after 1) = %v, %v; want 2, 3", seqs, err)
	}
	seqs = nil
	s.ScanAudit(ctx, 0, func(r storage.AuditRecord, err error) bool { seqs = append(seqs, r.Seq); return false })
	if len(seqs) != 1 {
		t.Errorf("ScanAudit went on after fn returned false: %v", seqs)
	}
	r4 := auditRec(4, prev)
	bad := auditHeadOf(r4)
	bad.AnchorSeq, bad.AnchorHash = 2, strings.Repeat("e", 64)
	if _, err := s.PruneAudit(ctx, 2, r4, bad); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("PruneAudit with a wrong anchor hash = %v; want ErrInvalid", err)
	}
	good := auditHeadOf(r4)
	good.AnchorSeq, good.AnchorHash = 2, auditRec(2, "").Hash
	if n, err := s.PruneAudit(ctx, 2, r4, good); err != nil || n != 2 {
		t.Fatalf("PruneAudit = %d, %v; want 2", n, err)
	}
	seqs = nil
	head, err = s.ScanAudit(ctx, 0, func(r storage.AuditRecord, err error) bool { seqs = append(seqs, r.Seq); return true })
	if err != nil || len(seqs) != 2 || seqs[0] != 3 || head.Seq != 4 || head.AnchorSeq != 2 || head.AnchorHash != good.AnchorHash {
		t.Fatalf("after pruning: records %v, head %+v, %v; want 3, 4 anchored at 2", seqs, head, err)
	}
}
