// Command whoami prints the SPIFFE ID that badge gives the process running
// it: the smallest complete Workload API client, written with go-spiffe
// alone, as any SPIFFE client would be.
//
// go-spiffe has no default socket: SPIFFE_ENDPOINT_SOCKET must name badge's
// Workload API. Run it as a uid that an entry names, here uid 1001:
//
//	badge entry create --id spiffe://example.org/payments --selector unix:uid:1001
//	go build -o whoami ./sdk/examples/whoami
//	SPIFFE_ENDPOINT_SOCKET=unix:///run/badge/workload.sock \
//	    setpriv --reuid=1001 --regid=1001 --clear-groups ./whoami
//
// It prints spiffe://example.org/payments. To go-spiffe's X509Source a
// caller that no entry matches is not an error: it waits, retrying, for an
// entry to appear. whoami gives up after -timeout and says what the server
// answered, for example that no registration entry matches the caller.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func main() {
	timeout := flag.Duration("timeout", 10*time.Second, "give up when no SVID arrives within this time")
	flag.Parse()
	if err := run(*timeout); err != nil {
		fmt.Fprintln(os.Stderr, "whoami:", err)
		os.Exit(1)
	}
}

func run(timeout time.Duration) error {
	addr := os.Getenv("SPIFFE_ENDPOINT_SOCKET")
	if addr == "" {
		return errors.New("SPIFFE_ENDPOINT_SOCKET is not set: set it to badge's Workload API socket, e.g. SPIFFE_ENDPOINT_SOCKET=unix:///run/badge/workload.sock")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	// The source retries quietly; its logger is where the reason shows.
	var last lastError
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithLogger(&last)))
	if err != nil {
		if why := last.get(); why != nil {
			st := status.Convert(why)
			if st.Code() == codes.Unavailable {
				return fmt.Errorf("cannot reach the Workload API at %s within %s: is badge server running? (%s)", addr, timeout, st.Message())
			}
			return fmt.Errorf("no X.509-SVID from %s within %s: %s", addr, timeout, st.Message())
		}
		return fmt.Errorf("no X.509-SVID from %s within %s: %w", addr, timeout, err)
	}
	defer src.Close()

	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}
	fmt.Println(svid.ID)
	return nil
}

// lastError is a go-spiffe logger that keeps the last error it is given.
type lastError struct {
	mu  sync.Mutex
	err error
}

func (l *lastError) get() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *lastError) Errorf(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	for _, a := range args {
		if e, ok := a.(error); ok {
			err = e // keep the gRPC status
		}
	}
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

func (l *lastError) Debugf(string, ...any) {}
func (l *lastError) Infof(string, ...any)  {}
func (l *lastError) Warnf(string, ...any)  {}
