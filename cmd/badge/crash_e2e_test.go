package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// fetchedSerial is one X.509-SVID a fetchloop workload received.
type fetchedSerial struct {
	ID     string `json:"id,omitempty"`
	Serial string `json:"serial,omitempty"`
	Error  string `json:"error,omitempty"`
}

func init() {
	// fetchloop fetches X.509-SVIDs with go-spiffe's client, a fresh
	// connection each time, and reports each serial as a JSON line as soon
	// as it has the certificate, until a fetch fails or stdin closes.
	workloadModes["fetchloop"] = func(ctx context.Context, addr string) int {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
		enc := json.NewEncoder(os.Stdout)
		for ctx.Err() == nil {
			svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(addr))
			if err != nil {
				enc.Encode(fetchedSerial{Error: err.Error()})
				return 0
			}
			enc.Encode(fetchedSerial{ID: svid.ID.String(), Serial: svid.Certificates[0].SerialNumber.Text(16)})
		}
		return 0
	}
}

// TestE2ECrashKeepsRevocability kills the daemon with SIGKILL while
// concurrent go-spiffe clients fetch fresh SVIDs, restarts it, and revokes
// every identity: each certificate any client received must then be on the
// revocation list, whether revocation by ID found it or the restart revoked
// its serial as reserved but never bound.
func TestE2ECrashKeepsRevocability(t *testing.T) {
	d := startDaemon(t)
	uids := []uint32{1001, 1002, 1003}
	ids := map[uint32]string{}
	for _, uid := range uids {
		ids[uid] = fmt.Sprintf("spiffe://example.org/crash/%d", uid)
		d.createEntry(ids[uid], fmt.Sprintf("unix:uid:%d", uid))
	}

	// Two fetchers per uid.
	var (
		mu       sync.Mutex
		received = map[string]string{} // serial → SPIFFE ID
		enough   = make(chan struct{})
		once     sync.Once
		wg       sync.WaitGroup
	)
	const wantBeforeKill = 300
	for _, uid := range uids {
		for range 2 {
			w := startLines[fetchedSerial](d, uid, uid, "fetchloop")
			wg.Go(func() {
				for r := range w.updates {
					if r.Serial == "" {
						continue // the daemon is gone
					}
					if r.ID != ids[uid] {
						t.Errorf("uid %d received an SVID for %s", uid, r.ID)
					}
					mu.Lock()
					received[r.Serial] = r.ID
					if len(received) >= wantBeforeKill {
						once.Do(func() { close(enough) })
					}
					mu.Unlock()
				}
			})
		}
	}
	select {
	case <-enough:
	case <-time.After(60 * time.Second):
		t.Fatalf("fewer than %d SVIDs fetched within 60s", wantBeforeKill)
	}
	d.signal(syscall.SIGKILL)
	// Every fetcher reports its last certificate and exits on the first
	// failed fetch.
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d SVIDs received before the kill", len(received))

	d.start()
	for _, uid := range uids {
		d.mustBadge("revoke", "--id", ids[uid], "--reason", "crash test")
	}
	s := d.startRawStream(1001, 1001)
	u := s.next(t, 10*time.Second)
	if u.Error != "" {
		t.Fatalf("stream after restart: %s", u.Error)
	}
	listed := crlSerials(verifiedCRL(t, u))
	var missing []string
	for serial, id := range received {
		if !slices.Contains(listed, serial) {
			missing = append(missing, serial+" ("+id+")")
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d certificates received before the crash are not on the revocation list after revoking every identity: %v",
			len(missing), len(received), missing[:min(len(missing), 10)])
	}
}
