package etcd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage/etcd/etcdtest"
	"github.com/badge-dev/badge/storage/storagetest"
)

// shared is the etcd member of the package's tests that need no member of
// their own: each test keeps its records under a trust domain of its own.
var shared *etcdtest.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "badge-etcd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared, err = etcdtest.New(dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	shared.Stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var tdSeq atomic.Uint64

// newTrustDomain returns a trust domain no other test uses.
func newTrustDomain() string { return fmt.Sprintf("td%d.test", tdSeq.Add(1)) }

func open(t *testing.T, opts Options) *Store {
	t.Helper()
	if opts.Endpoints == nil {
		opts.Endpoints = []string{shared.Endpoint}
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = newTrustDomain()
	}
	if opts.ReplicaID == "" {
		opts.ReplicaID = "r1"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storagetest.Store {
		return open(t, Options{})
	})
	// A crash and a restart: the same trust domain and replica (derived
	// from dir), a new run.
	storagetest.RunCrash(t, func(t *testing.T, dir string) storagetest.Store {
		h := sha256.Sum256([]byte(dir))
		return open(t, Options{TrustDomain: "crash-" + hex.EncodeToString(h[:8]) + ".test"})
	}, func(t *testing.T, s storagetest.Store) { crash(t, s.(*Store)) })
}

// crash ends s as a killed process would: the records queued in memory are
// dropped and the connection is cut; the run's lease is left to expire.
func crash(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	s.pending = nil
	s.closing = true
	s.mu.Unlock()
	s.closed.Store(true)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.committerDone
	s.stopKeep()
	if err := s.cli.Close(); err != nil {
		t.Fatal(err)
	}
	// The campaign ends without resigning: its lease expires.
	s.electOnce.Do(func() {})
	if s.stopElect != nil {
		s.stopElect()
		<-s.electDone
	}
}
