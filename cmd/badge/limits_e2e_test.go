package main

// End-to-end tests of the limits on what one caller can take: a real
// daemon, workloads as other uids, a real descriptor limit, a real small
// filesystem.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca/admin"
)

func init() {
	workloadModes["rawconns"] = rawConnsMain
}

// rawConnsReport is what the rawconns workload reports once its
// connections are open.
type rawConnsReport struct {
	Open int `json:"open"` // connected
	Kept int `json:"kept"` // answered by the server's HTTP/2 settings within a second
}

// rawConnsMain opens BADGE_E2E_CONNS Unix connections to the Workload API
// that never send the HTTP/2 preface, reports, and holds them until stdin
// closes.
func rawConnsMain(_ context.Context, addr string) int {
	n, _ := strconv.Atoi(os.Getenv("BADGE_E2E_CONNS"))
	path := strings.TrimPrefix(addr, "unix://")
	var r rawConnsReport
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("unix", path)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	r.Open = len(conns)
	// The server writes its settings once it has admitted a connection.
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			r.Kept++
		}
	}
	json.NewEncoder(os.Stdout).Encode(r)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// holdRawConns runs the rawconns workload as uid with n connections and
// returns its report; the connections stay open until the test ends.
func (d *daemon) holdRawConns(uid uint32, n int) rawConnsReport {
	d.t.Helper()
	cmd := d.workloadCmd(uid, uid, "rawconns", fmt.Sprintf("BADGE_E2E_CONNS=%d", n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	var r rawConnsReport
	if err := json.NewDecoder(stdout).Decode(&r); err != nil {
		d.t.Fatalf("rawconns workload as uid %d: %v", uid, err)
	}
	return r
}

// startDaemonWith is startDaemon with the daemon run under wrap (a command
// prefix, or nil) and prepare run on the daemon's directories first.
func startDaemonWith(t *testing.T, wrap []string, prepare func(*daemon), args ...string) *daemon {
	t.Helper()
	requireRoot(t)
	dir := worldReadableTempDir(t)
	d := &daemon{
		t:       t,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		socket:  filepath.Join(dir, "sock", "workload.sock"),
		admin:   filepath.Join(dir, "sock", "admin.sock"),
		args:    args,
		wrap:    wrap,
	}
	if prepare != nil {
		prepare(d)
	}
	d.start()
	t.Cleanup(d.stop)
	return d
}

func TestE2EConnectionCapPerUID(t *testing.T) {
	d := startDaemon(t, "--uid-max-conns", "4", "--handshake-timeout", "1m")
	d.createEntry("spiffe://example.org/a", "unix:uid:1001")
	d.createEntry("spiffe://example.org/b", "unix:uid:1002")

	if r := d.holdRawConns(1001, 4); r.Kept != 4 {
		t.Fatalf("uid 1001 kept %d of its 4 connections, want all", r.Kept)
	}
	r := d.runWorkload(1001, 1001, "fetch")
	if r.Code != codes.ResourceExhausted.String() || !strings.Contains(r.Error, "uid 1001 holds 4 Workload API connections, the limit per uid") {
		t.Fatalf("uid 1001 over its cap: %s %q, want ResourceExhausted naming the limit", r.Code, r.Error)
	}
	if r := d.runWorkload(1002, 1002, "fetch"); r.Error != "" || len(r.SVIDs) != 1 {
		t.Fatalf("uid 1002 while uid 1001 is at its cap: %s %s", r.Code, r.Error)
	}
	if n := strings.Count(d.logs(), "Workload API limit reached"); n != 1 {
		t.Errorf("%d log lines about uid 1001's refusals, want 1", n)
	}
}

// TestE2ESigningRatePerUID checks that a uid's signing budget survives
// reconnection: every fetch below is a new process and a new connection.
func TestE2ESigningRatePerUID(t *testing.T) {
	d := startDaemon(t, "--uid-sign-rate", "0.1", "--uid-sign-burst", "2")
	d.createEntry("spiffe://example.org/a", "unix:uid:1001")
	d.createEntry("spiffe://example.org/b", "unix:uid:1002")
	for i := range 2 {
		if r := d.runWorkload(1001, 1001, "fetch"); r.Error != "" {
			t.Fatalf("fetch %d within the burst: %s", i, r.Error)
		}
	}
	for range 2 {
		r := d.runWorkload(1001, 1001, "fetch")
		if r.Code != codes.ResourceExhausted.String() || !strings.Contains(r.Error, "uid 1001 exceeded its signing rate limit of 0.1 SVIDs per second (burst 2)") {
			t.Fatalf("fetch over the rate: %s %q, want ResourceExhausted naming the limit", r.Code, r.Error)
		}
	}
	if r := d.runWorkload(1002, 1002, "fetch"); r.Error != "" {
		t.Fatalf("another uid: %s", r.Error)
	}
	if n := strings.Count(d.logs(), "Workload API limit reached"); n != 1 {
		t.Errorf("%d log lines about uid 1001's refusals, want 1", n)
	}
}

// TestE2EDescriptorFlood floods the Workload API with raw connections
// beyond the daemon's open-file limit: the admin API must still answer
// root, and other workloads must still be served.
func TestE2EDescriptorFlood(t *testing.T) {
	const nofile = 600
	d := startDaemonWith(t, []string{"sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile)}, nil,
		"--handshake-timeout", "1m")
	if lim := daemonNoFile(t, d); lim != nofile {
		t.Skipf("could not set the daemon's open-file limit (it is %d): needs a shell with ulimit", lim)
	}
	d.createEntry("spiffe://example.org/flood", "unix:uid:1003")
	d.createEntry("spiffe://example.org/other", "unix:uid:1002")

	r := d.holdRawConns(1003, nofile+100)
	// 600 descriptors, 128 kept back: 472 connections, at most half for
	// one uid, and 4 refused ones kept for a second to answer a status.
	if r.Kept < 236 || r.Kept > 240 {
		t.Errorf("the flooding uid holds %d connections, want 236 (half of 600 less the reserve of 128) and up to 4 refusals", r.Kept)
	}
	if _, errOut, code := d.badge("entry", "list"); code != 0 {
		t.Fatalf("admin API under the flood: exit %d: %s", code, errOut)
	}
	if r := d.runWorkload(1002, 1002, "fetch"); r.Error != "" || len(r.SVIDs) != 1 {
		t.Fatalf("another uid under the flood: %s %s", r.Code, r.Error)
	}
	// The flooder itself gets a clear answer once the refusals it caused
	// have lingered out (poll: there is no event to wait on).
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := d.runWorkload(1003, 1003, "fetch")
		if r.Code == codes.ResourceExhausted.String() && strings.Contains(r.Error, "the limit per uid") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flooding uid got %s %q, want ResourceExhausted naming the limit", r.Code, r.Error)
		}
	}
	if strings.Contains(d.logs(), "too many open files") {
		t.Errorf("the daemon ran out of descriptors:\n%s", d.logs())
	}
}

// daemonNoFile is the daemon process's soft open-file limit.
func daemonNoFile(t *testing.T, d *daemon) int {
	t.Helper()
	var lim unix.Rlimit
	if err := unix.Prlimit(d.cmd.Process.Pid, unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		t.Fatalf("prlimit of the daemon: %v", err)
	}
	return int(lim.Cur)
}

// TestE2EDiskFullRevocation fills a small filesystem with issuance: the
// daemon must refuse new SVIDs before the disk is full, so that a
// revocation can still be written, durably.
func TestE2EDiskFullRevocation(t *testing.T) {
	const id = "spiffe://example.org/storm"
	d := startDaemonWith(t, nil, smallDataDir(t), "--min-free-mib", "4")
	d.createEntry(id, "unix:uid:0")

	// Leave 1 MiB above the reserve, then issue until refused.
	var st unix.Statfs_t
	if err := unix.Statfs(d.dataDir, &st); err != nil {
		t.Fatal(err)
	}
	fill := int64(st.Bavail*uint64(st.Bsize)) - 5<<20
	if err := os.WriteFile(filepath.Join(d.dataDir, "filler"), make([]byte, fill), 0o600); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true"), 2*time.Minute)
	defer cancel()
	issued := 0
	for {
		err := func() error {
			sctx, scancel := context.WithCancel(ctx)
			defer scancel()
			stream, err := api.FetchX509SVID(sctx, &workload.X509SVIDRequest{})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "kept for revocations") {
				t.Fatalf("after %d SVIDs: %v, want ResourceExhausted for the reserve", issued, err)
			}
			break
		}
		issued++
	}
	t.Logf("%d SVIDs issued before the reserve was reached", issued)

	if _, errOut, code := d.badge("revoke", "--id", id, "--reason", "storm"); code != 0 {
		t.Fatalf("revoke on a nearly full disk: exit %d: %s", code, errOut)
	}
	d.restart()
	var revs admin.Revocations
	if err := json.Unmarshal([]byte(d.mustBadge("revocations", "list", "--json")), &revs); err != nil {
		t.Fatal(err)
	}
	if len(revs.IDs) != 1 || revs.IDs[0].SPIFFEID != id {
		t.Fatalf("revocation not durable across a restart: %+v", revs.IDs)
	}
	if !strings.Contains(d.logs(), "the data directory is nearly full") {
		t.Error("the refusal of issuance was not logged")
	}
}

// smallDataDir mounts a 24 MiB tmpfs on the daemon's data directory.
func smallDataDir(t *testing.T) func(*daemon) {
	return func(d *daemon) {
		if err := os.MkdirAll(d.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", d.dataDir, "tmpfs", 0, "size=24m,mode=0700"); err != nil {
			t.Skipf("cannot mount a small tmpfs for the data dir (%v): the disk-full tests need mount(2)", err)
		}
		t.Cleanup(func() { unix.Unmount(d.dataDir, unix.MNT_DETACH) })
	}
}

// TestE2ERevokeOnDiskFilledByOthers fills the data directory's filesystem
// to the last byte from outside the daemon: the revocation must still be
// written, with the space of the ballast file.
func TestE2ERevokeOnDiskFilledByOthers(t *testing.T) {
	const id = "spiffe://example.org/victim"
	d := startDaemonWith(t, nil, smallDataDir(t), "--min-free-mib", "4") // a 1 MiB ballast
	d.createEntry(id, "unix:uid:0")
	for range 20 {
		if r := d.runWorkload(0, 0, "fetch"); r.Error != "" {
			t.Fatalf("fetch: %s", r.Error)
		}
	}
	filler, err := os.Create(filepath.Join(d.dataDir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for len(chunk) > 0 {
		if _, err := filler.Write(chunk); err != nil {
			chunk = chunk[:len(chunk)/2] // fill to the last block
		}
	}
	filler.Close()
	if _, errOut, code := d.badge("revoke", "--id", id, "--reason", "disk full"); code != 0 {
		t.Fatalf("revoke on a full disk: exit %d: %s", code, errOut)
	}
	if !strings.Contains(d.logs(), "released the ballast file") {
		t.Error("the revocation did not need the ballast: the disk was not full")
	}
	os.Remove(filler.Name())
	d.restart()
	var revs admin.Revocations
	if err := json.Unmarshal([]byte(d.mustBadge("revocations", "list", "--json")), &revs); err != nil {
		t.Fatal(err)
	}
	if len(revs.IDs) != 1 || revs.IDs[0].SPIFFEID != id || len(revs.Serials) != 20 {
		t.Fatalf("revocation not durable across a restart: %d IDs, %d serials", len(revs.IDs), len(revs.Serials))
	}
}
