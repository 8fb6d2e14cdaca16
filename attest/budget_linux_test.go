package attest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHashBudget: a uid that keeps an executable changing (so that it is
// hashed again every time) is refused once it has had its budget of bytes
// hashed, with an error naming the uid and the budget; the budget refills
// with time; a settled executable is cached and costs nothing.
func TestHashBudget(t *testing.T) {
	_, p := selfPeer(t)
	bin := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(bin, bytes.Repeat([]byte("a"), 300<<10), 0o755); err != nil {
		t.Fatal(err)
	}
	root := fakeProc(t, p, "testdata/status/self.txt", "testdata/cgroup/empty.txt", bin)

	t.Run("changing executable", func(t *testing.T) {
		// The file was just written, so its hash is never cached: each
		// attestation hashes it again, as after a touch.
		now := time.Now()
		a := New(Config{ProcRoot: root, HashBudget: 500 << 10, MaxExecutableSize: 400 << 10, Time: func() time.Time { return now }})
		if _, err := a.Attest(p, KindSHA256); err != nil {
			t.Fatalf("first hash: %v", err)
		}
		_, err := a.Attest(p, KindSHA256)
		if !errors.Is(err, ErrHashBudget) {
			t.Fatalf("second hash within the minute: %v, want ErrHashBudget", err)
		}
		for _, want := range []string{"uid " + formatID(p.UID), "512000 bytes", "per minute"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if n := a.hashes.computed.Load(); n != 1 {
			t.Errorf("hashed %d times, want 1: a refused attestation must not hash", n)
		}
		// Another uid has a budget of its own.
		if err := a.budget.take(p.UID+1, 300<<10, now, bin); err != nil {
			t.Errorf("another uid: %v", err)
		}
		now = now.Add(40 * time.Second) // refilled 2/3 of 500 KiB: enough
		if _, err := a.Attest(p, KindSHA256); err != nil {
			t.Fatalf("after 40s: %v", err)
		}
	})

	t.Run("settled executable is cached, not charged", func(t *testing.T) {
		a := New(Config{ProcRoot: root, HashBudget: 300 << 10, MaxExecutableSize: 300 << 10, Time: settled})
		for range 10 {
			if _, err := a.Attest(p, KindSHA256); err != nil {
				t.Fatal(err)
			}
		}
		if n := a.hashes.computed.Load(); n != 1 {
			t.Errorf("hashed %d times, want 1", n)
		}
	})

	t.Run("negative means no budget", func(t *testing.T) {
		a := New(Config{ProcRoot: root, HashBudget: -1})
		for range 3 {
			if _, err := a.Attest(p, KindSHA256); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestHashOneAtATime: while one executable is being hashed, another waits.
func TestHashOneAtATime(t *testing.T) {
	_, p := selfPeer(t)
	bin := filepath.Join(t.TempDir(), "exe")
	if err := os.WriteFile(bin, []byte("content"), 0o755); err != nil {
		t.Fatal(err)
	}
	root := fakeProc(t, p, "testdata/status/self.txt", "testdata/cgroup/empty.txt", bin)
	a := New(Config{ProcRoot: root})
	a.hashing <- struct{}{} // another hashing is under way
	done := make(chan error, 1)
	go func() { _, err := a.Attest(p, KindSHA256); done <- err }()
	// Wait until the attestation has started its hashing (it is in flight).
	deadline := time.Now().Add(5 * time.Second)
	for {
		a.hashes.mu.Lock()
		n := len(a.hashes.inflight)
		a.hashes.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the attestation did not start hashing")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("hashed while another hashing held the slot: %v", err)
	default:
	}
	<-a.hashing
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestHashBudgetEviction(t *testing.T) {
	now := time.Now()
	fill := func() *hashBudget {
		h := newHashBudget(100, 100)
		for uid := range uint32(maxBudgets) {
			if err := h.take(uid, 100, now, "x"); err != nil {
				t.Fatal(err)
			}
		}
		return h
	}
	h := fill()
	if err := h.take(0, 1, now, "x"); !errors.Is(err, ErrHashBudget) {
		t.Fatalf("spent uid: %v", err)
	}
	// A new uid makes room; the map stays bounded.
	if err := h.take(maxBudgets, 100, now, "x"); err != nil {
		t.Fatal(err)
	}
	if len(h.m) > maxBudgets {
		t.Errorf("%d buckets, bound %d", len(h.m), maxBudgets)
	}
	// After a minute every bucket is full again, and those go first.
	h = fill()
	if err := h.take(maxBudgets, 100, now.Add(time.Minute), "x"); err != nil {
		t.Fatal(err)
	}
	if len(h.m) != 1 {
		t.Errorf("%d buckets after refilled ones were evicted, want 1", len(h.m))
	}
}

func TestKindString(t *testing.T) {
	for _, tt := range []struct {
		k    Kind
		want string
	}{
		{0, ""},
		{KindUID, "unix:uid"},
		{KindPath | KindSHA256, "unix:path,unix:sha256"},
		{KindDockerContainer | KindUID, "unix:uid,docker:container_id"},
	} {
		if got := tt.k.String(); got != tt.want {
			t.Errorf("Kind(%b).String() = %q, want %q", tt.k, got, tt.want)
		}
	}
}
