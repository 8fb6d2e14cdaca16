package sdk

import (
	"net"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fakeWorkloadAPI is a Workload API server on a real Unix socket whose
// FetchX509SVID streams are fed by the test: Push sends a response to
// every open stream (and to streams opened later), Fail ends them with an
// error, Stop takes the socket away. It is a hand-made fake of the
// consumer-side interface; the real server lives elsewhere.
type fakeWorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	path string
	srv  *grpc.Server

	mu       sync.Mutex
	resp     *workload.X509SVIDResponse
	fail     error
	open     int // streams currently open
	attempts int // FetchX509SVID calls so far
	changed  chan struct{}
}

func startFakeAPI(t testing.TB, path string) *fakeWorkloadAPI {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return serveFakeAPI(t, l, path)
}

// serveFakeAPI serves a fake Workload API on l, whose socket is at path.
func serveFakeAPI(t testing.TB, l net.Listener, path string) *fakeWorkloadAPI {
	t.Helper()
	f := &fakeWorkloadAPI{path: path, srv: grpc.NewServer(), changed: make(chan struct{})}
	workload.RegisterSpiffeWorkloadAPIServer(f.srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.srv.Serve(l)
	}()
	t.Cleanup(func() {
		f.Stop()
		<-done
	})
	return f
}

// notify wakes waiters; f.mu must be held.
func (f *fakeWorkloadAPI) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Changed returns a channel closed at the next state change.
func (f *fakeWorkloadAPI) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Push makes resp the current response.
func (f *fakeWorkloadAPI) Push(resp *workload.X509SVIDResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resp = resp
	f.notify()
}

// Fail ends open streams, and those opened later, with err until
// Fail(nil).
func (f *fakeWorkloadAPI) Fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
	f.notify()
}

// Stop closes the socket and every stream.
func (f *fakeWorkloadAPI) Stop() { f.srv.Stop() }

// Open returns the number of open streams.
func (f *fakeWorkloadAPI) Open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}

// Attempts returns the number of FetchX509SVID calls received.
func (f *fakeWorkloadAPI) Attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

func (f *fakeWorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	f.mu.Lock()
	f.attempts++
	f.open++
	f.notify()
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.open--
		f.notify()
		f.mu.Unlock()
	}()

	var sent *workload.X509SVIDResponse
	for {
		f.mu.Lock()
		resp, fail, ch := f.resp, f.fail, f.changed
		f.mu.Unlock()
		if fail != nil {
			return fail
		}
		if resp != nil && resp != sent {
			if err := stream.Send(resp); err != nil {
				return err
			}
			sent = resp
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}
