package sdk

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// newSource connects a source to api with fast reconnects.
func newSource(t testing.TB, api *fakeWorkloadAPI, opts ...SourceOption) *X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts = append([]SourceOption{WithAddress("unix://" + api.path), WithBackoff(5*time.Millisecond, 50*time.Millisecond)}, opts...)
	src, err := NewX509Source(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func currentLeaf(t testing.TB, src *X509Source) *x509.Certificate {
	t.Helper()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return svid.Certificates[0]
}

func hasLeaf(src *X509Source, want *x509svid.SVID) func() bool {
	return func() bool {
		svid, err := src.GetX509SVID()
		return err == nil && sameCert(svid.Certificates[0], want.Certificates[0])
	}
}

func TestNewX509SourceWaitsForFirstSVID(t *testing.T) {
	ca := newTestCA(t, td)
	api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
	orders := ca.svid(t, ordersID)

	type result struct {
		src *X509Source
		err error
	}
	got := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		src, err := NewX509Source(ctx, WithAddress(api.path))
		got <- result{src, err}
	}()

	// The stream is open but nothing was sent: NewX509Source must still
	// be waiting.
	waitFor(t, api.Changed, "the source to open a stream", func() bool { return api.Open() == 1 })
	select {
	case r := <-got:
		t.Fatalf("NewX509Source returned before any SVID: %v", r.err)
	default:
	}

	api.Push(ca.response(t, []*x509svid.SVID{orders}))
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.src.Close()

	svid, err := r.src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != ordersID || !sameCert(svid.Certificates[0], orders.Certificates[0]) {
		t.Errorf("GetX509SVID = %s, want the pushed orders SVID", svid.ID)
	}
	b, err := r.src.GetX509BundleForTrustDomain(td)
	if err != nil {
		t.Fatal(err)
	}
	if !b.HasX509Authority(ca.root) {
		t.Error("bundle does not hold the root")
	}
	if _, err := r.src.GetX509BundleForTrustDomain(otherTD); err == nil {
		t.Error("bundle for an unknown trust domain: want an error")
	}
	st := r.src.Status()
	if !st.Connected || st.Err != nil || st.Addr != api.path || !st.SVIDExpiresAt.Equal(orders.Certificates[0].NotAfter) {
		t.Errorf("Status = %+v, want connected to %s with the SVID's expiry", st, api.path)
	}
}

func TestNewX509SourceDeadline(t *testing.T) {
	t.Run("server never sends", func(t *testing.T) {
		api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		src, err := NewX509Source(ctx, WithAddress(api.path))
		if !errors.Is(err, context.DeadlineExceeded) || src != nil {
			t.Fatalf("NewX509Source = %v, %v; want nil and a deadline error", src, err)
		}
		// The source released its stream.
		waitFor(t, api.Changed, "the stream to close", func() bool { return api.Open() == 0 })
	})
	t.Run("no server", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := NewX509Source(ctx, WithAddress(filepath.Join(shortTempDir(t), "missing.sock")), WithBackoff(time.Millisecond, 10*time.Millisecond))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline error", err)
		}
		if s, ok := status.FromError(err); !ok || s.Code() != codes.Unavailable {
			t.Errorf("err = %v, want it to also wrap the last Unavailable error", err)
		}
	})
	t.Run("no matching SVID", func(t *testing.T) {
		ca := newTestCA(t, td)
		api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
		api.Push(ca.response(t, []*x509svid.SVID{ca.svid(t, ordersID)}))
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := NewX509Source(ctx, WithAddress(api.path), WithSVIDID(paymentID))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline error", err)
		}
	})
}

func TestSourceFollowsRotation(t *testing.T) {
	ca := newTestCA(t, td)
	api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
	first := ca.svid(t, ordersID)
	api.Push(ca.response(t, []*x509svid.SVID{first}))
	src := newSource(t, api)
	if !hasLeaf(src, first)() {
		t.Fatal("source does not serve the first SVID")
	}
	certBefore, err := src.tlsCertificate()
	if err != nil {
		t.Fatal(err)
	}

	for i := range 3 {
		next := ca.svid(t, ordersID)
		api.Push(ca.response(t, []*x509svid.SVID{next}))
		waitFor(t, src.Changed, "rotation", hasLeaf(src, next))
		cert, err := src.tlsCertificate()
		if err != nil {
			t.Fatal(err)
		}
		if !sameCert(cert.Leaf, next.Certificates[0]) || sameCert(cert.Leaf, certBefore.Leaf) {
			t.Fatalf("rotation %d: tls certificate not updated", i)
		}
		if len(cert.Certificate) != 2 {
			t.Errorf("rotation %d: presented chain has %d certificates, want leaf and intermediate", i, len(cert.Certificate))
		}
		certBefore = cert
	}
}

func TestSourcePicksSVID(t *testing.T) {
	ca := newTestCA(t, td)
	orders, payments := ca.svid(t, ordersID), ca.svid(t, paymentID)
	resp := &workload.X509SVIDResponse{Svids: []*workload.X509SVID{
		ca.svidMsg(t, orders, "internal"),
		ca.svidMsg(t, payments, "external"),
	}}
	for _, tc := range []struct {
		name string
		opts []SourceOption
		want spiffeid.ID
	}{
		{"default is the first", nil, ordersID},
		{"by ID", []SourceOption{WithSVIDID(paymentID)}, paymentID},
		{"by hint", []SourceOption{WithSVIDHint("external")}, paymentID},
		{"by ID and hint", []SourceOption{WithSVIDID(ordersID), WithSVIDHint("internal")}, ordersID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
			api.Push(resp)
			src := newSource(t, api, tc.opts...)
			svid, err := src.GetX509SVID()
			if err != nil {
				t.Fatal(err)
			}
			if svid.ID != tc.want {
				t.Errorf("picked %s, want %s", svid.ID, tc.want)
			}
		})
	}
}

func TestSourceRejectsBadUpdates(t *testing.T) {
	ca := newTestCA(t, td)
	api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
	good := ca.svid(t, ordersID)
	api.Push(ca.response(t, []*x509svid.SVID{good}))
	src := newSource(t, api, WithSVIDID(ordersID))

	badKey := ca.response(t, []*x509svid.SVID{ca.svid(t, ordersID)})
	badKey.Svids[0].X509SvidKey = []byte("not a key")
	noBundle := ca.response(t, []*x509svid.SVID{ca.svid(t, ordersID)})
	noBundle.Svids[0].Bundle = nil
	wrongID := ca.response(t, []*x509svid.SVID{ca.svid(t, ordersID)})
	wrongID.Svids[0].SpiffeId = paymentID.String()
	for _, tc := range []struct {
		name string
		resp *workload.X509SVIDResponse
	}{
		{"empty", &workload.X509SVIDResponse{}},
		{"bad key", badKey},
		{"empty bundle", noBundle},
		{"spiffe_id does not match", wrongID},
		{"selected ID missing", ca.response(t, []*x509svid.SVID{ca.svid(t, invID)})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api.Push(tc.resp)
			waitFor(t, src.Changed, "the update to be rejected", func() bool { return src.Status().Err != nil })
			if !hasLeaf(src, good)() {
				t.Error("a rejected update replaced the SVID")
			}
			// A good update clears the error.
			api.Push(ca.response(t, []*x509svid.SVID{good}))
			waitFor(t, src.Changed, "a good update", func() bool { return src.Status().Err == nil })
		})
	}
}

func TestSourceFederatedBundles(t *testing.T) {
	ca, other := newTestCA(t, td), newTestCA(t, otherTD)
	api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
	resp := ca.response(t, []*x509svid.SVID{ca.svid(t, ordersID)})
	resp.FederatedBundles = map[string][]byte{
		otherTD.IDString(): other.root.Raw,
		td.IDString():      other.root.Raw, // must not replace the local bundle
	}
	api.Push(resp)
	src := newSource(t, api)
	b, err := src.GetX509BundleForTrustDomain(otherTD)
	if err != nil || !b.HasX509Authority(other.root) {
		t.Fatalf("federated bundle = %v, %v; want another.org's root", b, err)
	}
	local, err := src.GetX509BundleForTrustDomain(td)
	if err != nil || !local.HasX509Authority(ca.root) || local.HasX509Authority(other.root) {
		t.Fatal("a federated bundle replaced the local one")
	}
	set, err := src.Bundles()
	if err != nil || set.Len() != 2 {
		t.Fatalf("Bundles = %v, %v; want 2 bundles", set, err)
	}
}

// recordingHandler keeps log records for assertions.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

// find returns the first record at level with an attribute key.
func (h *recordingHandler) find(level slog.Level, key string) (slog.Record, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if r.Level != level {
			continue
		}
		found := false
		r.Attrs(func(a slog.Attr) bool {
			found = found || a.Key == key
			return true
		})
		if found {
			return r, true
		}
	}
	return slog.Record{}, false
}

func TestSourceReconnects(t *testing.T) {
	ca := newTestCA(t, td)
	path := filepath.Join(shortTempDir(t), "api.sock")
	api := startFakeAPI(t, path)
	first := ca.svid(t, ordersID)
	api.Push(ca.response(t, []*x509svid.SVID{first}))
	logs := &recordingHandler{}
	src := newSource(t, api, WithLogger(slog.New(logs)))

	api.Stop()
	waitFor(t, src.Changed, "the source to notice", func() bool { return !src.Status().Connected })
	st := src.Status()
	if st.Err == nil {
		t.Error("Status.Err = nil while disconnected")
	}
	if !hasLeaf(src, first)() {
		t.Error("the last SVID is not served while disconnected")
	}
	rec, ok := logs.find(slog.LevelWarn, keyExpiresAt)
	if !ok {
		t.Fatal("no warning with the SVID expiry was logged when the stream was lost")
	}
	var expires time.Time
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == keyExpiresAt {
			expires = a.Value.Time()
		}
		return true
	})
	if !expires.Equal(first.Certificates[0].NotAfter) {
		t.Errorf("logged expiry %v, want %v", expires, first.Certificates[0].NotAfter)
	}

	// A server comes back on the same path: the source reconnects and
	// follows the new stream.
	api2 := startFakeAPI(t, path)
	next := ca.svid(t, ordersID)
	api2.Push(ca.response(t, []*x509svid.SVID{next}))
	waitFor(t, src.Changed, "reconnection", func() bool { return src.Status().Connected && hasLeaf(src, next)() })
	if _, ok := logs.find(slog.LevelInfo, keySPIFFEID); !ok {
		t.Error("no log line on reconnection")
	}
	third := ca.svid(t, ordersID)
	api2.Push(ca.response(t, []*x509svid.SVID{third}))
	waitFor(t, src.Changed, "an update after reconnection", hasLeaf(src, third))
}

func TestSourceRetriesPermissionDenied(t *testing.T) {
	ca := newTestCA(t, td)
	api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
	api.Fail(status.Error(codes.PermissionDenied, "no registration entry"))

	got := make(chan error, 1)
	var src atomic.Pointer[X509Source]
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := NewX509Source(ctx, WithAddress(api.path), WithBackoff(time.Millisecond, 5*time.Millisecond))
		src.Store(s)
		got <- err
	}()
	waitFor(t, api.Changed, "retries", func() bool { return api.Attempts() >= 3 })
	api.Fail(nil)
	api.Push(ca.response(t, []*x509svid.SVID{ca.svid(t, ordersID)}))
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	defer src.Load().Close()
	if !src.Load().Status().Connected {
		t.Error("not connected after the entry appeared")
	}
}

func TestSourceServesUntilExpiry(t *testing.T) {
	ca := newTestCA(t, td)
	api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
	svid := ca.svid(t, ordersID, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(5 * time.Minute) })
	api.Push(ca.response(t, []*x509svid.SVID{svid}))
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	src := newSource(t, api, WithClock(func() time.Time { return *now.Load() }))

	api.Stop()
	waitFor(t, src.Changed, "disconnection", func() bool { return !src.Status().Connected })
	if !hasLeaf(src, svid)() {
		t.Fatal("SVID not served before expiry")
	}
	later := svid.Certificates[0].NotAfter.Add(time.Second)
	now.Store(&later)
	if _, err := src.GetX509SVID(); !errors.Is(err, ErrSVIDExpired) {
		t.Errorf("GetX509SVID after expiry: err = %v, want ErrSVIDExpired", err)
	}
	if _, err := ServerConfig(src, AuthorizeAny()).GetCertificate(nil); !errors.Is(err, ErrSVIDExpired) {
		t.Errorf("GetCertificate after expiry: err = %v, want ErrSVIDExpired", err)
	}
}

func TestSourceClose(t *testing.T) {
	ca := newTestCA(t, td)
	api := startFakeAPI(t, filepath.Join(shortTempDir(t), "api.sock"))
	api.Push(ca.response(t, []*x509svid.SVID{ca.svid(t, ordersID)}))
	src := newSource(t, api)
	if api.Open() != 1 {
		t.Fatalf("%d open streams, want 1", api.Open())
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.done:
	default:
		t.Fatal("the stream goroutine is still running after Close")
	}
	waitFor(t, api.Changed, "the stream to close", func() bool { return api.Open() == 0 })
	if _, err := src.GetX509SVID(); !errors.Is(err, ErrClosed) {
		t.Errorf("GetX509SVID after Close: %v, want ErrClosed", err)
	}
	if _, err := src.GetX509BundleForTrustDomain(td); !errors.Is(err, ErrClosed) {
		t.Errorf("GetX509BundleForTrustDomain after Close: %v, want ErrClosed", err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSourceAddress(t *testing.T) {
	ca := newTestCA(t, td)
	path := filepath.Join(shortTempDir(t), "api.sock")
	api := startFakeAPI(t, path)
	api.Push(ca.response(t, []*x509svid.SVID{ca.svid(t, ordersID)}))

	for _, tc := range []struct {
		name           string
		spiffe, badge  string
		opt            []SourceOption
		wantAddr       string
		wantConnection bool
	}{
		{name: "SPIFFE_ENDPOINT_SOCKET URL", spiffe: "unix://" + path, badge: "/nonexistent", wantAddr: "unix://" + path},
		{name: "SPIFFE_ENDPOINT_SOCKET opaque", spiffe: "unix:" + path, wantAddr: "unix:" + path},
		{name: "BADGE_SOCKET", badge: path, wantAddr: path},
		{name: "option wins", spiffe: "unix:///nonexistent", opt: []SourceOption{WithAddress(path)}, wantAddr: path},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvEndpointSocket, tc.spiffe)
			t.Setenv(EnvBadgeSocket, tc.badge)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			src, err := NewX509Source(ctx, tc.opt...)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if got := src.Status().Addr; got != tc.wantAddr {
				t.Errorf("Addr = %q, want %q", got, tc.wantAddr)
			}
		})
	}
}

func TestGRPCTarget(t *testing.T) {
	for _, tc := range []struct {
		addr, want string
		ok         bool
	}{
		{"unix:///run/badge.sock", "unix:///run/badge.sock", true},
		{"unix:/run/badge.sock", "unix:///run/badge.sock", true},
		{"/run/badge.sock", "unix:///run/badge.sock", true},
		{"tcp://127.0.0.1:8081", "", false},
		{"unix:relative.sock", "", false},
		{"unix:///run/badge.sock?x=1", "", false},
		{"unix://host/run/badge.sock", "", false},
		{"relative.sock", "", false},
		{"", "", false},
	} {
		got, err := grpcTarget(tc.addr)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("grpcTarget(%q) = %q, %v; want %q (ok=%v)", tc.addr, got, err, tc.want, tc.ok)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := NewX509Source(ctx, WithAddress("tcp://127.0.0.1:1")); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unsupported address: err = %v, want an immediate error", err)
	}
}

func FuzzGRPCTarget(f *testing.F) {
	for _, s := range []string{"unix:///a", "unix:/a", "/a", "tcp://x", "unix:", "unix://", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		target, err := grpcTarget(addr)
		if err != nil {
			return
		}
		// Every accepted address names an absolute socket path.
		if len(target) < len("unix:///") || target[:len("unix:///")] != "unix:///" {
			t.Errorf("grpcTarget(%q) = %q", addr, target)
		}
	})
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	ceil := 100 * time.Millisecond
	for i := range 10 {
		d := b.next()
		if d < ceil/2 || d > ceil {
			t.Fatalf("attempt %d: wait %v outside [%v, %v]", i, d, ceil/2, ceil)
		}
		ceil = min(2*ceil, time.Second)
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: wait %v, want at most the initial 100ms", d)
	}
}
