// Command badge-bench is the load generator for the SPIFFE Workload API,
// shipped beside the badge daemon as redis-benchmark ships beside redis.
//
// It talks to a running server only through its sockets: the Workload API
// socket, with go-spiffe's client (workloadapi.Client for fetch and jwt, the
// generated Workload API client for streams, where every response must be
// timed as it arrives) and, for --mode propagation or --setup, badge's
// admin socket. fetch, jwt and stream need nothing but a Workload API, so
// they run against a SPIRE agent's socket as well. The daemon's process is
// the one that listens on the socket (SO_PEERCRED of a connection to it);
// its CPU time and RSS come from /proc.
//
// --mode fleet is a fleet in one process: it runs the real agent code
// (package agent) for many nodes against a server's agent listener, each
// agent with a Workload API of its own, and workload streams on each (see
// fleet.go). The server it measures is the one that listens on the admin
// socket. --node scopes the entries of propagation and --setup to a node,
// to measure through that node's agent.
//
// --uids runs every worker as a uid of its own. A process cannot hold
// several uids, so badge-bench re-executes itself once per uid (as that
// uid) and the children report back to the parent as JSON lines on a pipe:
// the parent sends the run's spec, then "go"; a child answers with its
// samples, then serves "wait" (propagation) until "close".
//
// Exit codes: 0 success, 1 failure with a one-line cause on stderr, 2 usage
// error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// env is what the command needs from its process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// usageError is a mistake in how the command was called: exit code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	var err error
	if len(args) > 0 && args[0] == benchChildArg {
		err = runChild(ctx, e.stdin, e.stdout)
	} else {
		err = runBench(ctx, e, args)
	}
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "badge-bench: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "badge-bench: %s\n", strings.Join(strings.Fields(err.Error()), " "))
		return exitFailure
	}
}
