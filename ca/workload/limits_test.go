package workload_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/attest"
	"github.com/badge-dev/badge/ca"
	badgeworkload "github.com/badge-dev/badge/ca/workload"
	"github.com/badge-dev/badge/internal/testclock"
	"github.com/badge-dev/badge/storage/bbolt"
)

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count returns the number of lines containing s.
func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// clock is a settable clock.
// startLimited is start with the given limits (applied to this process's
// uid, root included) and a log captured in logs.
func startLimited(t *testing.T, lim badgeworkload.Limits, logs io.Writer) *fixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "badge-wl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	store, err := bbolt.Open(filepath.Join(dir, "badge.db"), &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	auth, err := ca.New(context.Background(), ca.Config{Store: store, KeyDir: filepath.Join(dir, "keys")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auth.Close() })
	f := &fixture{auth: auth, sock: filepath.Join(dir, "workload.sock"), served: make(chan error, 1)}
	l, err := badgeworkload.Listen(f.sock)
	if err != nil {
		t.Fatal(err)
	}
	lim.LimitRoot = true
	if logs == nil {
		logs = io.Discard
	}
	srv, err := badgeworkload.New(badgeworkload.Config{
		Source: auth.WorkloadSource(), Attestor: attest.New(attest.Config{}), JWT: auth.WorkloadSource(),
		Logger: slog.New(slog.NewTextHandler(logs, nil)), Limits: lim,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	go func() { f.served <- f.srv.Serve(l) }()
	t.Cleanup(func() { f.shutdown(t) })
	f.api = f.dial(t)
	return f
}

// dial opens a new connection to the fixture.
func (f *fixture) dial(t *testing.T) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+f.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

// fetch opens a FetchX509SVID stream on api and returns its first answer.
func fetch(t *testing.T, api workload.SpiffeWorkloadAPIClient) (*workload.X509SVIDResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 10*time.Second)
	defer cancel()
	stream, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}

func wantExhausted(t *testing.T, err error, msg string) {
	t.Helper()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("got %v, want ResourceExhausted naming %q", err, msg)
	}
}

func TestSigningRateLimit(t *testing.T) {
	clk := testclock.New(time.Now())
	var logs logBuffer
	f := startLimited(t, badgeworkload.Limits{SignRate: 1, SignBurst: 2, Time: clk.Now}, &logs)
	f.create(t, "spiffe://example.org/me", mySelector())

	for i := range 2 {
		if _, err := fetch(t, f.api); err != nil {
			t.Fatalf("fetch %d within the burst: %v", i, err)
		}
	}
	for range 3 {
		_, err := fetch(t, f.api)
		wantExhausted(t, err, "signing rate limit of 1 SVIDs per second (burst 2)")
	}
	// JWT-SVIDs are signatures too.
	_, err := f.api.FetchJWTSVID(withHeader(context.Background()), &workload.JWTSVIDRequest{Audience: []string{"db"}})
	wantExhausted(t, err, "signing rate limit")
	if n := logs.count("Workload API limit reached"); n != 1 {
		t.Errorf("%d log lines about the refusals, want 1 per interval:\n%s", n, logs.buf.String())
	}

	clk.Advance(time.Second)
	if _, err := fetch(t, f.api); err != nil {
		t.Fatalf("fetch after the bucket refilled: %v", err)
	}
	clk.Advance(time.Second)
	if _, err := f.api.FetchJWTSVID(withHeader(context.Background()), &workload.JWTSVIDRequest{Audience: []string{"db"}}); err != nil {
		t.Fatalf("JWT-SVID after the bucket refilled: %v", err)
	}
	// The same token again comes from the cache and costs nothing.
	for i := range 3 {
		if _, err := f.api.FetchJWTSVID(withHeader(context.Background()), &workload.JWTSVIDRequest{Audience: []string{"db"}}); err != nil {
			t.Fatalf("cached JWT-SVID %d: %v", i, err)
		}
	}
	clk.Advance(time.Minute)
	_, _ = fetch(t, f.api)
	_, _ = fetch(t, f.api)
	_, err = fetch(t, f.api)
	wantExhausted(t, err, "signing rate limit")
	if n := logs.count("Workload API limit reached"); n != 2 {
		t.Errorf("%d log lines after a second interval, want 2", n)
	}
	if n := logs.count("refused_since_last_report=3"); n != 1 {
		t.Errorf("the second line does not count the 3 refusals it stood for:\n%s", logs.buf.String())
	}
}

func TestConnectionsPerUID(t *testing.T) {
	var logs logBuffer
	f := startLimited(t, badgeworkload.Limits{ConnsPerUID: 2}, &logs)
	f.create(t, "spiffe://example.org/me", mySelector())

	// f.api is the first connection; a second one is within the limit.
	if _, err := fetch(t, f.api); err != nil {
		t.Fatal(err)
	}
	second := f.dial(t)
	if _, err := fetch(t, second); err != nil {
		t.Fatal(err)
	}
	_, err := fetch(t, f.dial(t))
	wantExhausted(t, err, "holds 2 Workload API connections, the limit per uid")

	// Calls are bounded per uid too, however few the connections: the two
	// open streams above ended, so two may be open, not three.
	var streams []workload.SpiffeWorkloadAPI_FetchX509SVIDClient
	for range 2 {
		ctx, cancel := context.WithCancel(withHeader(context.Background()))
		t.Cleanup(cancel)
		s, err := f.api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	_, err = fetch(t, second)
	wantExhausted(t, err, "has 2 Workload API calls in progress, the limit per uid")
	if n := logs.count("Workload API limit reached"); n != 1 {
		t.Errorf("%d log lines, want 1", n)
	}
}

func TestConnectionRefusedAtOnceBeyondRefusals(t *testing.T) {
	f := startLimited(t, badgeworkload.Limits{ConnsPerUID: 1}, nil)
	// The fixture's connection is lazy: hold the one allowed connection.
	hold, err := net.Dial("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	// Wait until the server has admitted it (its HTTP/2 settings arrive):
	// connections are admitted concurrently, and one dialled next could
	// otherwise take the slot first.
	hold.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := hold.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the first connection was not admitted: %v", err)
	}
	// A few refused connections are kept briefly to answer a status;
	// beyond them each is closed at once, holding no descriptor.
	var closed int
	for range 12 {
		c, err := net.Dial("unix", f.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
			closed++
		}
	}
	if closed < 12-4 {
		t.Errorf("%d of 12 connections over the limit closed, want at least 8", closed)
	}
}

func TestPrefaceTimeout(t *testing.T) {
	f := startLimited(t, badgeworkload.Limits{HandshakeTimeout: 300 * time.Millisecond}, nil)
	c, err := net.Dial("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, c) // until the server closes
	if err != nil {
		t.Fatalf("connection without a preface not closed by the server: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %s, want about the 300ms handshake timeout", d)
	}
}

// TestOversizedHeadersRefused sends a request whose header list is far over
// the limit, from a raw HTTP/2 client that ignores the server's setting (a
// gRPC client would refuse to send it).
func TestOversizedHeadersRefused(t *testing.T) {
	f := startLimited(t, badgeworkload.Limits{MaxHeaderBytes: 4 << 10}, nil)
	f.create(t, "spiffe://example.org/me", mySelector())
	for _, tc := range []struct {
		name string
		size int
		ok   bool
	}{
		{"small", 1 << 10, true},
		{"oversized", 256 << 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", f.sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
				t.Fatal(err)
			}
			fr := http2.NewFramer(c, c)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			if err := fr.WriteSettings(); err != nil {
				t.Fatal(err)
			}
			var block bytes.Buffer
			enc := hpack.NewEncoder(&block)
			for _, h := range [][2]string{
				{":method", "POST"}, {":scheme", "http"}, {":path", "/SpiffeWorkloadAPI/FetchJWTBundles"},
				{":authority", "localhost"}, {"content-type", "application/grpc"}, {"te", "trailers"},
				{"workload.spiffe.io", "true"}, {"x-padding", strings.Repeat("a", tc.size)},
			} {
				enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
			}
			// Fragments of 16 KiB: a HEADERS frame, then CONTINUATIONs.
			b := block.Bytes()
			first := b[:min(len(b), 16<<10)]
			b = b[len(first):]
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(b) == 0}); err != nil {
				t.Fatal(err)
			}
			for len(b) > 0 {
				n := min(len(b), 16<<10)
				if err := fr.WriteContinuation(1, n == len(b), b[:n]); err != nil {
					break // the server may close the connection meanwhile
				}
				b = b[n:]
			}
			// The request message: empty, and the end of the request.
			fr.WriteData(1, true, []byte{0, 0, 0, 0, 0})
			answered := false
			for {
				fm, err := fr.ReadFrame()
				if err != nil {
					break // connection closed
				}
				if h, ok := fm.(*http2.MetaHeadersFrame); ok && h.StreamID == 1 {
					answered = true
					break
				}
				if r, ok := fm.(*http2.RSTStreamFrame); ok && r.StreamID == 1 {
					break
				}
				if _, ok := fm.(*http2.GoAwayFrame); ok {
					break
				}
			}
			if answered != tc.ok {
				t.Errorf("request with a %d-byte header answered: %v, want %v", tc.size, answered, tc.ok)
			}
		})
	}
	// The server still serves.
	if _, err := fetch(t, f.api); err != nil {
		t.Fatal(err)
	}
}

func TestMinFreeSpace(t *testing.T) {
	clk := testclock.New(time.Now())
	var free atomic.Uint64
	free.Store(1 << 30)
	var logs logBuffer
	f := startLimited(t, badgeworkload.Limits{
		MinFreeSpace: 64 << 20,
		FreeSpace:    func() (uint64, error) { return free.Load(), nil },
		Time:         clk.Now,
		SignRate:     -1,
	}, &logs)
	f.create(t, "spiffe://example.org/me", mySelector())
	if _, err := fetch(t, f.api); err != nil {
		t.Fatal(err)
	}
	free.Store(10 << 20)
	if _, err := fetch(t, f.api); err != nil {
		t.Fatalf("free space is asked at most once a second, so the next fetch still passes: %v", err)
	}
	clk.Advance(time.Second)
	for range 3 {
		_, err := fetch(t, f.api)
		wantExhausted(t, err, "the data directory has 10.0 MiB free, less than the 64.0 MiB kept for revocations")
	}
	if n := logs.count("the data directory is nearly full"); n != 1 {
		t.Errorf("%d log lines, want 1", n)
	}
	// JWT-SVIDs write nothing: still issued.
	if _, err := f.api.FetchJWTSVID(withHeader(context.Background()), &workload.JWTSVIDRequest{Audience: []string{"db"}}); err != nil {
		t.Errorf("JWT-SVID refused on a full disk: %v", err)
	}
	free.Store(1 << 30)
	clk.Advance(time.Second)
	if _, err := fetch(t, f.api); err != nil {
		t.Fatalf("fetch after space was freed: %v", err)
	}
}
