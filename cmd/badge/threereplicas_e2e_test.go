package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/badge-dev/badge/storage/etcd/etcdtest"
)

// TestE2EEtcdThreeReplicas is the deployment README "Run several servers"
// describes: three servers sharing a three-member etcd. An entry created
// through A reaches workloads waiting on B and C within 200 ms, through
// their watches; a revocation made through B puts the certificates that A
// and C issued for the ID on the CRL of their open streams within 1 s.
func TestE2EEtcdThreeReplicas(t *testing.T) {
	requireRoot(t)
	c := etcdtest.StartCluster(t, 3)
	args := []string{"--storage", "etcd://" + strings.Join(c.Endpoints(), ","), "--root-kek", writeKEK(t, t.TempDir())}
	a := etcdReplica(t, args...)
	a.createEntry("spiffe://example.org/base", "unix:uid:1001")
	b := etcdReplica(t, args...)
	r3 := etcdReplica(t, args...)

	replicas := []struct {
		name string
		d    *daemon
	}{{"A", a}, {"B", b}, {"C", r3}}
	streams := make([]*lineWorkload[rawUpdate], len(replicas))
	for i, r := range replicas {
		streams[i] = r.d.startRawStream(1001, 1001)
		if u := streams[i].next(t, 10*time.Second); !slices.Equal(u.IDs, []string{"spiffe://example.org/base"}) {
			t.Fatalf("first update on %s: %v %s", r.name, u.IDs, u.Error)
		}
	}

	const added = "spiffe://example.org/added"
	created := time.Now() // before the command: the lag includes running it
	a.createEntry(added, "unix:uid:1001", "unix:gid:1001")
	held := make([]string, len(replicas)) // serial of added's SVID on each stream
	for i, r := range replicas {
		u := streams[i].next(t, 5*time.Second)
		if !slices.Equal(u.IDs, []string{"spiffe://example.org/base", added}) {
			t.Fatalf("%s's stream after the create on A got %v %s", r.name, u.IDs, u.Error)
		}
		held[i] = u.Serials[1]
		if i == 0 {
			continue
		}
		lag := u.At.Sub(created)
		t.Logf("entry created on A reached %s's stream %s after the create began", r.name, lag.Round(time.Microsecond))
		if lag > 200*time.Millisecond {
			t.Errorf("entry created on A reached %s's stream %s after the create began, want within 200ms", r.name, lag)
		}
	}

	revoked := time.Now()
	if _, stderr, code := b.badge("revoke", "--id", added, "--reason", "key compromise"); code != 0 {
		t.Fatalf("revoke on B: exit %d: %s", code, stderr)
	}
	for i, r := range replicas {
		if i == 1 {
			continue
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			u := streams[i].next(t, time.Until(deadline))
			if u.Error != "" {
				t.Fatalf("%s's stream: %s %s", r.name, u.Code, u.Error)
			}
			if !slices.Contains(crlSerials(verifiedCRL(t, u)), held[i]) {
				continue
			}
			lag := u.At.Sub(revoked)
			t.Logf("revocation on B put %s's certificate on its stream's CRL %s after revoke began", r.name, lag.Round(time.Microsecond))
			if lag > time.Second {
				t.Errorf("revocation on B reached %s's CRL %s after revoke began, want within 1s", r.name, lag)
			}
			break
		}
	}
}
