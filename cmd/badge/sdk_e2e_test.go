package main

// End-to-end tests of the Go SDK (sdk and sdk/sdkgrpc) against the real
// daemon. Services and clients built with the SDK run as workloads of other
// uids (the "sdk-server" and "sdk-client" modes below) and report what they
// see as JSON lines on stdout: the certificates they present and receive,
// the peers they accept or refuse, and the state of their X509Source.
//
// Identities: orders is uid 1001, payments uid 1002, inventory uid 1003.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/sdk"
	"github.com/badge-dev/badge/sdk/sdkgrpc"
)

const (
	sdkOrdersID    = "spiffe://example.org/orders"
	sdkPaymentsID  = "spiffe://example.org/payments"
	sdkInventoryID = "spiffe://example.org/inventory"
)

// The SDK workload modes are configured by these variables.
const (
	envSDKProto    = "SDK_PROTO"    // "http" or "grpc"
	envSDKAuthz    = "SDK_AUTHZ"    // the SPIFFE IDs (comma-separated) the workload accepts as its peer
	envSDKSource   = "SDK_SOURCE"   // "badge" (sdk.X509Source, the default) or "go-spiffe" (workloadapi.X509Source)
	envSDKAddr     = "SDK_ADDR"     // sdk-client: host:port of the server
	envSDKCount    = "SDK_COUNT"    // sdk-client: number of requests; 0 runs until stdin closes
	envSDKInterval = "SDK_INTERVAL" // sdk-client: pause between requests
	envSDKHold     = "SDK_HOLD"     // sdk-client: "1" presents the first SVID received for ever, as a stolen copy would
)

func init() {
	workloadModes["sdk-server"] = sdkServerMain
	workloadModes["sdk-client"] = sdkClientMain
}

// sdkEvent is one line reported by an SDK workload.
type sdkEvent struct {
	// Event is one of:
	//   listening  the server is up: Addr, ID, Own
	//   svid       the sdk.X509Source serves a new SVID: ID, Own, NotAfter
	//   status     the source's connection changed: Connected, Code, Error
	//   log        the source logged: Level, Msg, Code, Error
	//   request    the server's handler ran: Peer and Serial of the client
	//   refused    the server refused a client during the handshake: Peer, Serial, Reason, Error
	//   cert_error the workload had no certificate to present: Error
	//   response   the client's request succeeded: Peer and Serial of the server, Own, Status
	//   error      the client's request failed: Code, Error, AsAuthz, and Peer and Reason if the client refused the server
	//   summary    at exit: Requests, Failures, Handshakes, Refused
	Event     string    `json:"event"`
	At        time.Time `json:"at"`
	Addr      string    `json:"addr,omitempty"`
	ID        string    `json:"id,omitempty"`
	Own       string    `json:"own,omitempty"`
	Peer      string    `json:"peer,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	Status    int       `json:"status,omitempty"`
	Connected bool      `json:"connected,omitempty"`
	Code      string    `json:"code,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	AsAuthz   bool      `json:"as_authz,omitempty"`
	Error     string    `json:"error,omitempty"`
	Level     string    `json:"level,omitempty"`
	Msg       string    `json:"msg,omitempty"`

	Requests   int `json:"requests,omitempty"`
	Failures   int `json:"failures,omitempty"`
	Handshakes int `json:"handshakes,omitempty"`
	Refused    int `json:"refused,omitempty"`
}

// --- The workload side -----------------------------------------------------

type eventWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (w *eventWriter) emit(e sdkEvent) {
	e.At = time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.enc.Encode(e)
}

// eventLogHandler reports the source's log records as events, with the gRPC
// code of their error.
type eventLogHandler struct{ w *eventWriter }

func (h eventLogHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h eventLogHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h eventLogHandler) WithGroup(string) slog.Handler            { return h }
func (h eventLogHandler) Handle(_ context.Context, r slog.Record) error {
	e := sdkEvent{Event: "log", Level: r.Level.String(), Msg: r.Message}
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "error" {
			e.Error, e.Code = err.Error(), status.Code(err).String()
		}
		return true
	})
	h.w.emit(e)
	return nil
}

func serialOf(certs []*x509.Certificate) string {
	if len(certs) == 0 {
		return ""
	}
	return certs[0].SerialNumber.Text(16)
}

func idOf(certs []*x509.Certificate) string {
	if len(certs) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return ""
	}
	return id.String()
}

// openSource returns the source named by SDK_SOURCE. The badge source finds
// the Workload API through SPIFFE_ENDPOINT_SOCKET, as a service would; its
// state changes are reported as events until ctx ends.
func openSource(ctx context.Context, addr string, w *eventWriter) (sdk.Source, func(), error) {
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch kind := os.Getenv(envSDKSource); kind {
	case "go-spiffe":
		src, err := workloadapi.NewX509Source(wait, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
		if err != nil {
			return nil, nil, err
		}
		return src, func() { src.Close() }, nil
	case "", "badge":
		src, err := sdk.NewX509Source(wait, sdk.WithLogger(slog.New(eventLogHandler{w})))
		if err != nil {
			return nil, nil, err
		}
		go reportSource(ctx, src, w)
		return src, func() { src.Close() }, nil
	default:
		return nil, nil, fmt.Errorf("unknown %s %q", envSDKSource, kind)
	}
}

// reportSource reports every change of src's connection and of the SVID it
// serves.
func reportSource(ctx context.Context, src *sdk.X509Source, w *eventWriter) {
	connected, serial := true, ""
	for {
		ch := src.Changed()
		if st := src.Status(); st.Connected != connected {
			connected = st.Connected
			e := sdkEvent{Event: "status", Connected: connected}
			if st.Err != nil {
				e.Error, e.Code = st.Err.Error(), status.Code(st.Err).String()
			}
			w.emit(e)
		}
		if svid, err := src.GetX509SVID(); err == nil && serialOf(svid.Certificates) != serial {
			serial = serialOf(svid.Certificates)
			w.emit(sdkEvent{Event: "svid", ID: svid.ID.String(), Own: serial, NotAfter: svid.Certificates[0].NotAfter})
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

func authzFromEnv() (sdk.Authorizer, error) {
	var ids []spiffeid.ID
	for v := range strings.SplitSeq(os.Getenv(envSDKAuthz), ",") {
		id, err := spiffeid.FromString(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envSDKAuthz, err)
		}
		ids = append(ids, id)
	}
	if len(ids) == 1 {
		return sdk.AuthorizeID(ids[0]), nil
	}
	return sdk.AuthorizeOneOf(ids...), nil
}

// heldSource presents one X509-SVID for ever, whatever its source receives
// later, as a copy of a certificate and key taken from a workload would be
// presented; bundles and revocations still follow the source.
type heldSource struct {
	sdk.Source
	svid *x509svid.SVID
}

func (h heldSource) GetX509SVID() (*x509svid.SVID, error) { return h.svid, nil }

func (h heldSource) CheckRevocation(id spiffeid.ID, leaf *x509.Certificate) error {
	if rc, ok := h.Source.(sdk.RevocationChecker); ok {
		return rc.CheckRevocation(id, leaf)
	}
	return nil
}

// sdkServerMain serves HTTPS or gRPC on 127.0.0.1 with the SDK, admitting
// only the client SDK_AUTHZ, until stdin closes.
func sdkServerMain(ctx context.Context, addr string) int {
	w := &eventWriter{enc: json.NewEncoder(os.Stdout)}
	fail := func(err error) int {
		w.emit(sdkEvent{Event: "error", Error: err.Error()})
		return 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	authz, err := authzFromEnv()
	if err != nil {
		return fail(err)
	}
	src, closeSrc, err := openSource(ctx, addr, w)
	if err != nil {
		return fail(err)
	}
	defer closeSrc()
	svid, err := src.GetX509SVID()
	if err != nil {
		return fail(err)
	}

	var handshakes, refused atomic.Int64
	trace := sdk.Trace{
		GotCertificate: func(i sdk.GotCertificateInfo) {
			if i.Err != nil {
				w.emit(sdkEvent{Event: "cert_error", Error: i.Err.Error()})
			}
		},
		VerifiedPeer: func(i sdk.VerifiedPeerInfo) {
			handshakes.Add(1)
			if i.Err == nil {
				return
			}
			refused.Add(1)
			e := sdkEvent{Event: "refused", Error: i.Err.Error()}
			if !i.ID.IsZero() {
				e.Peer = i.ID.String()
			}
			if i.Serial != nil {
				e.Serial = i.Serial.Text(16)
			}
			var ae *sdk.AuthorizationError
			if errors.As(i.Err, &ae) {
				e.Reason = ae.Reason.String()
			}
			w.emit(e)
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	switch proto := os.Getenv(envSDKProto); proto {
	case "http":
		mux := http.NewServeMux()
		mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
			e := sdkEvent{Event: "request", Serial: serialOf(r.TLS.PeerCertificates)}
			if id, ok := sdk.PeerID(r); ok {
				e.Peer = id.String()
			}
			w.emit(e)
			fmt.Fprintf(rw, "hello %s\n", e.Peer)
		})
		srv := sdk.NewHTTPServer("", mux, src, authz, sdk.WithTrace(trace))
		go srv.ServeTLS(l, "", "")
		defer srv.Close()
	case "grpc":
		srv := grpc.NewServer(grpc.Creds(sdkgrpc.ServerCredentials(src, authz, sdk.WithTrace(trace))))
		grpc_health_v1.RegisterHealthServer(srv, healthRecorder{w: w})
		go srv.Serve(l)
		defer srv.Stop()
	default:
		return fail(fmt.Errorf("unknown %s %q", envSDKProto, proto))
	}
	w.emit(sdkEvent{Event: "listening", Addr: l.Addr().String(), ID: svid.ID.String(), Own: serialOf(svid.Certificates)})
	io.Copy(io.Discard, os.Stdin)
	w.emit(sdkEvent{Event: "summary", Handshakes: int(handshakes.Load()), Refused: int(refused.Load())})
	return 0
}

// healthRecorder answers health checks and reports who called.
type healthRecorder struct {
	grpc_health_v1.UnimplementedHealthServer
	w *eventWriter
}

func (h healthRecorder) Check(ctx context.Context, _ *grpc_health_v1.HealthCheckRequest) (*grpc_health_v1.HealthCheckResponse, error) {
	e := sdkEvent{Event: "request"}
	if id, ok := sdkgrpc.PeerIDFromContext(ctx); ok {
		e.Peer = id.String()
	}
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			e.Serial = serialOf(info.State.PeerCertificates)
		}
	}
	h.w.emit(e)
	return &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING}, nil
}

// sdkClientMain calls the server at SDK_ADDR with the SDK, accepting only
// the server SDK_AUTHZ, on a new connection for every request.
func sdkClientMain(ctx context.Context, addr string) int {
	w := &eventWriter{enc: json.NewEncoder(os.Stdout)}
	fail := func(err error) int {
		w.emit(sdkEvent{Event: "error", Error: err.Error()})
		return 1
	}
	authz, err := authzFromEnv()
	if err != nil {
		return fail(err)
	}
	count, err := strconv.Atoi(os.Getenv(envSDKCount))
	if err != nil {
		return fail(fmt.Errorf("%s: %w", envSDKCount, err))
	}
	var interval time.Duration
	if v := os.Getenv(envSDKInterval); v != "" {
		if interval, err = time.ParseDuration(v); err != nil {
			return fail(fmt.Errorf("%s: %w", envSDKInterval, err))
		}
	}
	target := os.Getenv(envSDKAddr)
	// Closing stdin stops the loop between requests, so that every
	// handshake belongs to a request that is counted.
	stopping := make(chan struct{})
	if count == 0 {
		go func() { io.Copy(io.Discard, os.Stdin); close(stopping) }()
	}
	src, closeSrc, err := openSource(ctx, addr, w)
	if err != nil {
		return fail(err)
	}
	defer closeSrc()
	if os.Getenv(envSDKHold) == "1" {
		svid, err := src.GetX509SVID()
		if err != nil {
			return fail(err)
		}
		src = heldSource{Source: src, svid: svid}
	}

	var (
		handshakes, refusals atomic.Int64
		own                  atomic.Pointer[big.Int]
		lastRefusal          atomic.Pointer[sdk.VerifiedPeerInfo]
	)
	trace := sdk.Trace{
		GotCertificate: func(i sdk.GotCertificateInfo) {
			if i.Err != nil {
				w.emit(sdkEvent{Event: "cert_error", Error: i.Err.Error()})
				return
			}
			own.Store(i.Cert.Leaf.SerialNumber)
		},
		VerifiedPeer: func(i sdk.VerifiedPeerInfo) {
			handshakes.Add(1)
			if i.Err != nil {
				lastRefusal.Store(&i)
				refusals.Add(1)
			}
		},
	}
	// call makes one request on a new connection and returns the server's
	// certificates and the HTTP status.
	var call func(ctx context.Context) ([]*x509.Certificate, int, error)
	switch proto := os.Getenv(envSDKProto); proto {
	case "http":
		client := sdk.NewHTTPClient(src, authz, sdk.WithTrace(trace))
		client.Transport.(*http.Transport).DisableKeepAlives = true
		call = func(ctx context.Context) ([]*x509.Certificate, int, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+target+"/hello", nil)
			if err != nil {
				return nil, 0, err
			}
			resp, err := client.Do(req)
			if err != nil {
				return nil, 0, err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return nil, 0, err
			}
			return resp.TLS.PeerCertificates, resp.StatusCode, nil
		}
	case "grpc":
		creds := sdkgrpc.ClientCredentials(src, authz, sdk.WithTrace(trace))
		call = func(ctx context.Context) ([]*x509.Certificate, int, error) {
			conn, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(creds))
			if err != nil {
				return nil, 0, err
			}
			defer conn.Close()
			var p peer.Peer
			if _, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
				return nil, 0, err
			}
			info, ok := p.AuthInfo.(credentials.TLSInfo)
			if !ok {
				return nil, 0, errors.New("RPC did not run over TLS")
			}
			return info.State.PeerCertificates, 0, nil
		}
	default:
		return fail(fmt.Errorf("unknown %s %q", envSDKProto, proto))
	}

	requests, failures := 0, 0
loop:
	for count == 0 || requests < count {
		select {
		case <-stopping:
			break loop
		default:
		}
		before := refusals.Load()
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		certs, code, err := call(rctx)
		rcancel()
		requests++
		if err != nil {
			failures++
			e := sdkEvent{Event: "error", Error: err.Error(), Code: status.Code(err).String()}
			var ae *sdk.AuthorizationError
			if errors.As(err, &ae) {
				e.AsAuthz, e.Peer, e.Reason = true, ae.ID.String(), ae.Reason.String()
			} else if refusals.Load() > before {
				// gRPC reports only a code: take the refusal from the trace.
				if info := lastRefusal.Load(); errors.As(info.Err, &ae) {
					e.Peer, e.Reason = ae.ID.String(), ae.Reason.String()
				}
			}
			w.emit(e)
		} else {
			e := sdkEvent{Event: "response", Peer: idOf(certs), Serial: serialOf(certs), Status: code}
			if s := own.Load(); s != nil {
				e.Own = s.Text(16)
			}
			w.emit(e)
		}
		if interval > 0 {
			select {
			case <-stopping:
			case <-time.After(interval):
			}
		}
	}
	w.emit(sdkEvent{Event: "summary", Requests: requests, Failures: failures, Handshakes: int(handshakes.Load()), Refused: int(refusals.Load())})
	return 0
}

// --- The test side ---------------------------------------------------------

// sdkProc is an SDK workload running as another uid.
type sdkProc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuffer
	exited chan struct{} // closed when stdout has ended and the process has exited
	err    error         // the process's exit status, once exited is closed

	mu      sync.Mutex
	events  []sdkEvent
	changed chan struct{} // closed and replaced on every event
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startSDK starts an SDK workload as uid (and gid uid) in mode, with env
// (KEY=VALUE) for it. It is stopped when t ends.
func startSDK(t *testing.T, d *daemon, name string, uid uint32, mode string, env ...string) *sdkProc {
	t.Helper()
	p := &sdkProc{t: t, name: name, stderr: &syncBuffer{}, exited: make(chan struct{}), changed: make(chan struct{})}
	// A race-enabled binary waits a second at exit for late race reports;
	// reports found before exit still fail the run (exit status 66).
	env = append(slices.Clone(env), "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	p.cmd = d.workloadCmd(uid, uid, mode, env...)
	p.cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e sdkEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				e = sdkEvent{Event: "garbage", Error: sc.Text()}
			}
			p.mu.Lock()
			p.events = append(p.events, e)
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("%s did not exit within 10s of its stdin closing", p.name)
		}
		if p.err != nil {
			t.Errorf("%s: %v", p.name, p.err)
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

// runSDK runs an SDK workload to completion and returns its events.
func runSDK(t *testing.T, d *daemon, name string, uid uint32, mode string, env ...string) []sdkEvent {
	t.Helper()
	p := startSDK(t, d, name, uid, mode, env...)
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running after 30s", name)
	}
	return p.snapshot()
}

func (p *sdkProc) snapshot() []sdkEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

// waitFor waits until cond holds for the events so far and returns them.
func (p *sdkProc) waitFor(deadline time.Time, what string, cond func([]sdkEvent) bool) []sdkEvent {
	p.t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		p.mu.Lock()
		evs, ch := slices.Clone(p.events), p.changed
		p.mu.Unlock()
		if cond(evs) {
			return evs
		}
		select {
		case <-ch:
		case <-p.exited:
			if evs := p.snapshot(); cond(evs) {
				return evs
			}
			p.t.Fatalf("%s exited before %s; events:\n%s\nstderr:\n%s", p.name, what, describeEvents(p.snapshot()), p.stderr.String())
		case <-timer.C:
			p.t.Fatalf("%s: no %s by the deadline; events:\n%s", p.name, what, describeEvents(p.snapshot()))
		}
	}
}

// next waits for the first event of kind after the first n events.
func (p *sdkProc) next(deadline time.Time, n int, kind string) sdkEvent {
	p.t.Helper()
	evs := p.waitFor(deadline, "event "+kind, func(evs []sdkEvent) bool { return slices.ContainsFunc(evs[n:], eventIs(kind)) })
	return evs[n+slices.IndexFunc(evs[n:], eventIs(kind))]
}

// stop closes the workload's stdin and returns its summary.
func (p *sdkProc) stop() sdkEvent {
	p.t.Helper()
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("%s did not exit within 15s of its stdin closing", p.name)
	}
	evs := eventsOf(p.snapshot(), "summary")
	if len(evs) != 1 {
		p.t.Fatalf("%s printed %d summaries; stderr:\n%s", p.name, len(evs), p.stderr.String())
	}
	return evs[0]
}

// eventIs matches the events of kind.
func eventIs(kind string) func(sdkEvent) bool {
	return func(e sdkEvent) bool { return e.Event == kind }
}

// eventsOf returns the events of kind.
func eventsOf(evs []sdkEvent, kind string) []sdkEvent {
	var out []sdkEvent
	for _, e := range evs {
		if e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

// onlyEvent returns the one event of kind, failing the test unless there is
// exactly one.
func onlyEvent(t *testing.T, evs []sdkEvent, kind string) sdkEvent {
	t.Helper()
	got := eventsOf(evs, kind)
	if len(got) != 1 {
		t.Fatalf("%d %q events, want 1:\n%s", len(got), kind, describeEvents(evs))
	}
	return got[0]
}

// describeEvents prints the last events, one JSON line each.
func describeEvents(evs []sdkEvent) string {
	const max = 40
	var b strings.Builder
	if len(evs) > max {
		fmt.Fprintf(&b, "  (%d earlier events)\n", len(evs)-max)
		evs = evs[len(evs)-max:]
	}
	for _, e := range evs {
		line, _ := json.Marshal(e)
		fmt.Fprintf(&b, "  %s\n", line)
	}
	return b.String()
}

// distinctValues returns the distinct values of field over the events of
// kind, in order of first appearance.
func distinctValues(evs []sdkEvent, kind string, field func(sdkEvent) string) []string {
	var out []string
	for _, e := range eventsOf(evs, kind) {
		if v := field(e); !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// newSerials returns the distinct serials of the events of kind that are
// not in old.
func newSerials(evs []sdkEvent, kind string, old []string) []string {
	return slices.DeleteFunc(distinctValues(evs, kind, serialOfEvent), func(s string) bool { return slices.Contains(old, s) })
}

// waitResponsesAfter waits for n responses of a client after since.
func (p *sdkProc) waitResponsesAfter(deadline, since time.Time, n int, what string) {
	p.t.Helper()
	p.waitFor(deadline, fmt.Sprintf("%d responses %s", n, what), func(evs []sdkEvent) bool {
		k := 0
		for _, e := range eventsOf(evs, "response") {
			if e.At.After(since) {
				k++
			}
		}
		return k >= n
	})
}

func serialOfEvent(e sdkEvent) string { return e.Serial }
func ownOfEvent(e sdkEvent) string    { return e.Own }

// sdkDaemon starts a daemon with the three identities registered by uid.
func sdkDaemon(t *testing.T, args ...string) *daemon {
	d := startDaemon(t, args...)
	d.createEntry(sdkOrdersID, "unix:uid:1001")
	d.createEntry(sdkPaymentsID, "unix:uid:1002")
	d.createEntry(sdkInventoryID, "unix:uid:1003")
	return d
}

// startSDKServer starts an sdk-server workload and waits until it listens.
func startSDKServer(t *testing.T, d *daemon, name string, uid uint32, env ...string) (*sdkProc, sdkEvent) {
	t.Helper()
	p := startSDK(t, d, name, uid, "sdk-server", env...)
	l := p.next(time.Now().Add(30*time.Second), 0, "listening")
	return p, l
}

// TestE2ESDKAuthorization: a server that admits only orders accepts orders
// and refuses inventory, and its handler sees the caller's ID; a client that
// accepts only payments refuses a server with another ID. Over HTTP and
// gRPC, with the badge source and with go-spiffe's workloadapi.X509Source.
func TestE2ESDKAuthorization(t *testing.T) {
	t.Parallel()
	d := sdkDaemon(t)
	for _, tc := range []struct{ proto, source string }{
		{"http", "badge"},
		{"grpc", "badge"},
		{"http", "go-spiffe"},
		{"grpc", "go-spiffe"},
	} {
		t.Run(tc.proto+"/"+tc.source, func(t *testing.T) {
			env := []string{envSDKProto + "=" + tc.proto, envSDKSource + "=" + tc.source}
			serverEnv := append(slices.Clone(env), envSDKAuthz+"="+sdkOrdersID)
			payments, pl := startSDKServer(t, d, "payments", 1002, serverEnv...)
			inventory, il := startSDKServer(t, d, "inventory", 1003, serverEnv...)
			if pl.ID != sdkPaymentsID || il.ID != sdkInventoryID {
				t.Fatalf("servers run as %s and %s, want %s and %s", pl.ID, il.ID, sdkPaymentsID, sdkInventoryID)
			}
			client := func(name string, uid uint32, addr string) []sdkEvent {
				return runSDK(t, d, name, uid, "sdk-client", append(slices.Clone(env),
					envSDKAuthz+"="+sdkPaymentsID, envSDKAddr+"="+addr, envSDKCount+"=1")...)
			}
			deadline := time.Now().Add(20 * time.Second)

			// orders calls payments: both accept.
			resp := onlyEvent(t, client("orders", 1001, pl.Addr), "response")
			if resp.Peer != sdkPaymentsID || resp.Serial != pl.Own {
				t.Errorf("orders reached %s (serial %s), want %s (serial %s)", resp.Peer, resp.Serial, sdkPaymentsID, pl.Own)
			}
			req := payments.next(deadline, 0, "request")
			if req.Peer != sdkOrdersID {
				t.Errorf("payments' handler saw caller %q, want %s", req.Peer, sdkOrdersID)
			}
			if req.Serial != resp.Own {
				t.Errorf("payments' handler saw client serial %s, orders presented %s", req.Serial, resp.Own)
			}

			// inventory calls payments: payments refuses it in the handshake.
			n := len(payments.snapshot())
			failed := onlyEvent(t, client("inventory", 1003, pl.Addr), "error")
			if tc.proto == "grpc" && failed.Code != "Unavailable" {
				t.Errorf("inventory's RPC failed with %s, want Unavailable: %s", failed.Code, failed.Error)
			}
			ref := payments.next(deadline, n, "refused")
			if ref.Peer != sdkInventoryID || ref.Reason != sdk.ReasonNotAuthorized.String() {
				t.Errorf("payments refused %q (%s), want %s (%s)", ref.Peer, ref.Reason, sdkInventoryID, sdk.ReasonNotAuthorized)
			}

			// orders calls inventory, which would admit it: orders refuses
			// the server, which is not payments.
			failed = onlyEvent(t, client("orders", 1001, il.Addr), "error")
			if failed.Peer != sdkInventoryID || failed.Reason != sdk.ReasonNotAuthorized.String() {
				t.Errorf("orders' call to inventory failed with peer %q reason %q (%s), want a refusal of %s", failed.Peer, failed.Reason, failed.Error, sdkInventoryID)
			}
			if tc.proto == "grpc" && failed.Code != "Unavailable" {
				t.Errorf("orders' RPC to inventory failed with %s, want Unavailable: %s", failed.Code, failed.Error)
			}
			if tc.proto == "http" && !failed.AsAuthz {
				t.Errorf("errors.As found no *sdk.AuthorizationError in the HTTP client's error %q", failed.Error)
			}

			// Nothing else reached a handler.
			if s := payments.stop(); s.Handshakes != 2 || s.Refused != 1 {
				t.Errorf("payments: %d handshakes, %d refused; want 2 and 1", s.Handshakes, s.Refused)
			}
			if got := eventsOf(payments.snapshot(), "request"); len(got) != 1 {
				t.Errorf("payments' handler ran %d times, want once (for orders):\n%s", len(got), describeEvents(got))
			}
			inventory.stop()
			if got := eventsOf(inventory.snapshot(), "request"); len(got) != 0 {
				t.Errorf("inventory's handler ran for a client that refused it:\n%s", describeEvents(got))
			}
		})
	}
}

// TestE2ESDKRotation keeps one server and clients opening a new connection
// every few milliseconds across three rotations of 10s SVIDs (one every
// 5s): no handshake fails, and the serial the server sees changes.
func TestE2ESDKRotation(t *testing.T) {
	t.Parallel()
	const ttl = 10 * time.Second
	d := sdkDaemon(t, "--svid-ttl", ttl.String(), "--max-svid-ttl", ttl.String())
	type pair struct {
		name           string
		server, client *sdkProc
	}
	var pairs []pair
	for _, tc := range []struct{ proto, source string }{
		{"http", "badge"},
		{"grpc", "badge"},
		{"http", "go-spiffe"},
	} {
		name := tc.proto + "/" + tc.source
		server, l := startSDKServer(t, d, "payments "+name, 1002,
			envSDKProto+"="+tc.proto, envSDKSource+"="+tc.source, envSDKAuthz+"="+sdkOrdersID)
		client := startSDK(t, d, "orders "+name, 1001, "sdk-client",
			envSDKProto+"="+tc.proto, envSDKSource+"="+tc.source, envSDKAuthz+"="+sdkPaymentsID,
			envSDKAddr+"="+l.Addr, envSDKCount+"=0", envSDKInterval+"=20ms")
		pairs = append(pairs, pair{name, server, client})
	}
	start := time.Now()
	deadline := start.Add(4*ttl/2 + 15*time.Second)
	const rotations = 3
	for _, p := range pairs {
		p.server.waitFor(deadline, fmt.Sprintf("%d rotations of the client's serial", rotations), func(evs []sdkEvent) bool {
			return len(distinctValues(evs, "request", serialOfEvent)) > rotations
		})
		p.client.waitFor(deadline, fmt.Sprintf("%d rotations of the server's serial", rotations), func(evs []sdkEvent) bool {
			return len(distinctValues(evs, "response", serialOfEvent)) > rotations
		})
	}
	for _, p := range pairs {
		cs := p.client.stop()
		ss := p.server.stop()
		evs, sevs := p.client.snapshot(), p.server.snapshot()
		if cs.Failures != 0 || cs.Refused != 0 || ss.Refused != 0 {
			t.Errorf("%s: %d of %d requests failed, client refused %d handshakes, server %d:\n%s",
				p.name, cs.Failures, cs.Requests, cs.Refused, ss.Refused, describeEvents(eventsOf(evs, "error")))
		}
		if errs := append(eventsOf(evs, "cert_error"), eventsOf(sevs, "cert_error")...); len(errs) > 0 {
			t.Errorf("%s: no certificate to present:\n%s", p.name, describeEvents(errs))
		}
		// Every request had its own handshake, on both sides.
		if cs.Handshakes != cs.Requests || ss.Handshakes != cs.Requests {
			t.Errorf("%s: %d requests, but %d client and %d server handshakes", p.name, cs.Requests, cs.Handshakes, ss.Handshakes)
		}
		clientSerials := distinctValues(sevs, "request", serialOfEvent)
		if own := distinctValues(evs, "response", ownOfEvent); !slices.Equal(own, clientSerials) {
			t.Errorf("%s: the client presented serials %v, the server saw %v", p.name, own, clientSerials)
		}
		t.Logf("%s: %d handshakes in %s, %d failed; the server saw %d client serials, the client %d server serials",
			p.name, cs.Handshakes, time.Since(start).Round(100*time.Millisecond), cs.Failures, len(clientSerials), len(distinctValues(evs, "response", serialOfEvent)))
	}
}

// TestE2ESDKDaemonRestart stops the daemon under a running server and
// client, by SIGKILL and then by SIGTERM: connections keep succeeding on the
// cached SVIDs, the sources reconnect once the daemon is back on the same
// socket, and they follow its rotations.
func TestE2ESDKDaemonRestart(t *testing.T) {
	t.Parallel()
	const ttl = 10 * time.Second
	d := sdkDaemon(t, "--svid-ttl", ttl.String(), "--max-svid-ttl", ttl.String())
	server, l := startSDKServer(t, d, "payments", 1002, envSDKProto+"=http", envSDKAuthz+"="+sdkOrdersID)
	client := startSDK(t, d, "orders", 1001, "sdk-client", envSDKProto+"=http", envSDKAuthz+"="+sdkPaymentsID,
		envSDKAddr+"="+l.Addr, envSDKCount+"=0", envSDKInterval+"=10ms")
	client.next(time.Now().Add(30*time.Second), 0, "response")

	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		// Stop the daemon. Both sources notice, and keep serving.
		deadline := time.Now().Add(30 * time.Second)
		nServer, nClient := len(server.snapshot()), len(client.snapshot())
		stopped := time.Now()
		d.signal(sig)
		lostServer := server.next(deadline, nServer, "status")
		lostClient := client.next(deadline, nClient, "status")
		if lostServer.Connected || lostClient.Connected {
			t.Fatalf("%v: first status changes after the daemon stopped are %+v and %+v, want disconnections", sig, lostServer, lostClient)
		}
		lost := laterOf(lostServer.At, lostClient.At)
		const whileDown = 50
		client.waitResponsesAfter(deadline, lost, whileDown, "while the daemon is down")
		serverSerials := distinctValues(server.snapshot(), "request", serialOfEvent)
		clientSerials := distinctValues(client.snapshot(), "response", serialOfEvent)

		// Start it again on the same socket: both sources reconnect.
		nServer, nClient = len(server.snapshot()), len(client.snapshot())
		d.start()
		ready := time.Now()
		var recovered []time.Duration
		for _, p := range []struct {
			proc *sdkProc
			n    int
		}{{server, nServer}, {client, nClient}} {
			e := p.proc.next(deadline, p.n, "status")
			if !e.Connected {
				t.Fatalf("%v: %s: status %+v after the restart, want connected", sig, p.proc.name, e)
			}
			recovered = append(recovered, e.At.Sub(ready).Round(time.Millisecond))
		}

		// The new daemon issues fresh SVIDs at once, then rotates them at
		// half-life: each side sees the other's serial change twice.
		deadline = time.Now().Add(ttl + 10*time.Second)
		after := newSerials(server.waitFor(deadline, "two client serials issued after the restart", func(evs []sdkEvent) bool {
			return len(newSerials(evs[nServer:], "request", serverSerials)) >= 2
		})[nServer:], "request", serverSerials)
		client.waitFor(deadline, "two server serials issued after the restart", func(evs []sdkEvent) bool {
			return len(newSerials(evs[nClient:], "response", clientSerials)) >= 2
		})
		if errs := eventsOf(client.snapshot(), "error"); len(errs) > 0 {
			t.Fatalf("%v: %d requests failed:\n%s", sig, len(errs), describeEvents(errs))
		}
		t.Logf("%v: daemon down %s (sources noticed after %s and %s); %d requests meanwhile on cached SVIDs; "+
			"sources reconnected %v after the daemon was ready; then saw client serials %v",
			sig, ready.Sub(stopped).Round(time.Millisecond), lostServer.At.Sub(stopped).Round(time.Millisecond),
			lostClient.At.Sub(stopped).Round(time.Millisecond), whileDown, recovered, after)
	}

	cs, ss := client.stop(), server.stop()
	if cs.Failures != 0 || cs.Refused != 0 || ss.Refused != 0 || cs.Handshakes != cs.Requests {
		t.Errorf("%d of %d requests failed, %d handshakes (client refused %d, server %d):\n%s",
			cs.Failures, cs.Requests, cs.Handshakes, cs.Refused, ss.Refused, describeEvents(eventsOf(client.snapshot(), "error")))
	}
	t.Logf("%d requests, each on a new connection; %d failed", cs.Requests, cs.Failures)
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestE2ESDKPermissionDeniedThenEntry starts a service before its entry
// exists: the source keeps retrying through PermissionDenied and picks the
// identity up within its backoff once the entry is created.
func TestE2ESDKPermissionDeniedThenEntry(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	server := startSDK(t, d, "payments", 1002, "sdk-server", envSDKProto+"=http", envSDKAuthz+"="+sdkOrdersID)
	deadline := time.Now().Add(20 * time.Second)
	const attempts = 3
	server.waitFor(deadline, fmt.Sprintf("%d attempts refused with PermissionDenied", attempts), func(evs []sdkEvent) bool {
		n := 0
		for _, e := range eventsOf(evs, "log") {
			if e.Code == "PermissionDenied" {
				n++
			}
		}
		return n >= attempts
	})
	if evs := server.snapshot(); slices.ContainsFunc(evs, eventIs("listening")) {
		t.Fatal("the server started without an identity")
	}
	created := time.Now()
	d.createEntry(sdkPaymentsID, "unix:uid:1002")
	l := server.next(deadline, 0, "listening")
	if l.ID != sdkPaymentsID {
		t.Fatalf("server runs as %s, want %s", l.ID, sdkPaymentsID)
	}
	// The default backoff is at most 5s.
	if took := l.At.Sub(created); took > 5*time.Second {
		t.Errorf("the source picked up the new entry %s after it was created, more than its 5s maximum backoff", took)
	} else {
		t.Logf("the source picked up the new entry %s after it was created", took.Round(time.Millisecond))
	}
}

// TestE2ESDKExamples builds sdk/examples/payments and orders and runs them
// as two uids, as the README's "Secure a Go service" section says.
func TestE2ESDKExamples(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is needed to build the examples")
	}
	d := startDaemon(t)
	dir := worldReadableTempDir(t)
	build := exec.Command(goTool, "build", "-o", dir+"/", "./sdk/examples/payments", "./sdk/examples/orders")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	payments, orders := filepath.Join(dir, "payments"), filepath.Join(dir, "orders")
	d.createEntry(sdkPaymentsID, "unix:path:"+payments)
	d.createEntry(sdkOrdersID, "unix:path:"+orders)

	start := func(uid uint32, lines chan<- string, bin string, args ...string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"SPIFFE_ENDPOINT_SOCKET=unix://" + d.socket}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() {
			defer close(exited)
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				select {
				case lines <- sc.Text():
				default: // nobody is waiting any more: keep draining
				}
			}
			cmd.Wait()
		}()
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Errorf("%s did not stop within 10s of SIGTERM", bin)
			}
		})
	}
	// await returns the fields of the first line holding all of want.
	await := func(lines <-chan string, what string, want ...string) map[string]string {
		t.Helper()
		timeout := time.After(20 * time.Second)
		var seen []string
		for {
			select {
			case line := <-lines:
				seen = append(seen, line)
				if !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(line, w) }) {
					return slogFields(line)
				}
			case <-timeout:
				t.Fatalf("no %s within 20s; output:\n%s", what, strings.Join(seen, "\n"))
			}
		}
	}

	plines := make(chan string, 100)
	start(1002, plines, payments, "-listen", "127.0.0.1:0")
	listening := await(plines, "listening line from payments", "payments listening")
	addr := listening["addr"]
	if host, port, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("payments logged listen address %q, want 127.0.0.1 and the port it got", addr)
	}
	if listening["id"] != sdkPaymentsID {
		t.Fatalf("payments runs as %q, want %s", listening["id"], sdkPaymentsID)
	}

	olines := make(chan string, 100)
	start(1001, olines, orders, "-payments", "https://"+addr, "-every", "100ms")
	paid := await(olines, "payment", "paid")
	if want := "payment accepted from " + sdkOrdersID; paid["answer"] != want {
		t.Fatalf("orders got answer %q, want %q", paid["answer"], want)
	}

	// An orders that insists on another server ID refuses payments.
	wrong := make(chan string, 100)
	start(1001, wrong, orders, "-payments", "https://"+addr, "-payments-id", "spiffe://example.org/billing", "-every", "100ms")
	refused := await(wrong, "refusal", "refused the server")
	if refused["peer"] != sdkPaymentsID || refused["reason"] != sdk.ReasonNotAuthorized.String() {
		t.Fatalf("orders refused peer %q for %q, want %s for %q", refused["peer"], refused["reason"], sdkPaymentsID, sdk.ReasonNotAuthorized)
	}
}

// slogFields parses the key=value pairs of a log/slog text line as the
// default logger prints it.
func slogFields(line string) map[string]string {
	fields := map[string]string{}
	for rest := line; rest != ""; {
		i := strings.IndexByte(rest, '=')
		if i < 0 {
			break
		}
		key := rest[strings.LastIndexByte(rest[:i], ' ')+1 : i]
		rest = rest[i+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			if q, err := strconv.QuotedPrefix(rest); err == nil {
				val, _ = strconv.Unquote(q)
				rest = rest[len(q):]
			}
		} else {
			val, rest, _ = strings.Cut(rest, " ")
		}
		fields[key] = val
	}
	return fields
}
