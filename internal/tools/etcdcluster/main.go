// Command etcdcluster runs an etcd cluster of N members (default 3) in
// one process, on 127.0.0.1, for developers: to try several badge
// servers on one machine with no etcd installed (README, "Run several
// servers") and to measure one replica against several. It is the
// embedded etcd server that the tests start (storage/etcd/etcdtest), and
// is never linked into the badge binary.
//
//	go run ./internal/tools/etcdcluster --data-dir /tmp/etcd [--members 3] [--client-ports 2379,22379,32379]
//
// When every member is ready it prints one line on stdout, the --storage
// value of badge server (etcd://127.0.0.1:PORT,...), and runs until
// SIGINT or SIGTERM; it then closes the members (followers first) and
// exits 0. Clients reach the members directly, in plain text; the
// members sync every write to disk as production members do, unless
// --fsync=false. The data dir must be new or empty: each member keeps
// its data in DIR/m0, DIR/m1, ... and the peer ports of a run are picked
// afresh, so a later run cannot take over an earlier run's data.
//
// Exit codes: 0 stopped by a signal, 1 failure (a member did not start
// or stopped with an error), 2 usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/badge-dev/badge/storage/etcd/etcdtest"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// maxMembers bounds --members: etcd clusters have an odd handful.
const maxMembers = 9

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is what etcdcluster was asked to run.
type config struct {
	members     int
	dataDir     string
	clientPorts []int // one per member, or nil for free ports
	fsync       bool
}

// usageError is a mistake in how the command was called: exit code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

const usageLine = "etcdcluster --data-dir DIR [--members N] [--client-ports PORT,PORT,...] [--fsync=false]"

func parse(args []string, stderr io.Writer) (config, error) {
	c := config{members: 3, fsync: true}
	fs := flag.NewFlagSet("etcdcluster", flag.ContinueOnError)
	fs.IntVar(&c.members, "members", c.members, "members of the cluster, 1 to "+strconv.Itoa(maxMembers))
	fs.StringVar(&c.dataDir, "data-dir", "", "new or empty `directory` for the members' data (DIR/m0, DIR/m1, ...); required")
	ports := fs.String("client-ports", "", "the members' client `ports` on 127.0.0.1, comma-separated, one per member (default: free ports)")
	fs.BoolVar(&c.fsync, "fsync", c.fsync, "sync every write to disk, as production members do; false is faster and loses writes if the machine crashes")
	fs.SetOutput(io.Discard) // errors are reported once, by run
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", usageLine)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return c, err
		}
		return c, usagef("%v (run 'etcdcluster -h' for usage)", err)
	}
	if fs.NArg() > 0 {
		return c, usagef("unexpected argument %q", fs.Arg(0))
	}
	if c.members < 1 || c.members > maxMembers {
		return c, usagef("invalid --members %d: want 1 to %d", c.members, maxMembers)
	}
	if c.dataDir == "" {
		return c, usagef("--data-dir is required: a new or empty directory for the members' data")
	}
	if *ports != "" {
		p, err := parsePorts(*ports)
		if err != nil {
			return c, usageError{fmt.Errorf("invalid --client-ports: %w", err)}
		}
		if len(p) != c.members {
			return c, usagef("--client-ports has %d ports for %d members: give one per member", len(p), c.members)
		}
		c.clientPorts = p
	}
	return c, nil
}

// parsePorts parses "PORT,PORT,...": distinct TCP ports, 1 to 65535.
func parsePorts(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for f := range strings.SplitSeq(s, ",") {
		if f == "" || f[0] == '+' || strings.TrimSpace(f) != f {
			return nil, fmt.Errorf("%q is not a port: want PORT,PORT,... such as 2379,22379,32379", f)
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%q is not a port (1 to 65535)", f)
		}
		if seen[p] {
			return nil, fmt.Errorf("port %d is given twice", p)
		}
		seen[p] = true
		out = append(out, p)
	}
	return out, nil
}

// checkDataDir creates dir if it does not exist and refuses one that
// holds anything: an earlier run's members, with their peer ports, would
// not match this run's.
func checkDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if len(names) > 0 {
		return fmt.Errorf("--data-dir %s is not empty (it holds %s): remove what an earlier run left, or give a new directory", dir, names[0])
	}
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c, err := parse(args, stderr)
	var ue usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "etcdcluster: %v\n", err)
		return exitUsage
	}
	if err := serve(ctx, c, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "etcdcluster: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// serve starts the cluster, prints its endpoints, and closes it when ctx
// ends or a member fails.
func serve(ctx context.Context, c config, stdout, stderr io.Writer) error {
	if err := checkDataDir(c.dataDir); err != nil {
		return err
	}
	cl, err := etcdtest.NewClusterWith(c.dataDir, c.members, etcdtest.ClusterOptions{
		ClientPorts: c.clientPorts, Fsync: c.fsync, Direct: true,
	})
	if err != nil {
		return err
	}
	defer cl.Close()
	fsync := "on"
	if !c.fsync {
		fsync = "off"
	}
	fmt.Fprintf(stderr, "etcdcluster: %d members ready, data in %s, fsync %s; stop with Ctrl-C or SIGTERM\n", c.members, c.dataDir, fsync)
	fmt.Fprintf(stdout, "etcd://%s\n", strings.Join(cl.Endpoints(), ","))
	// Wait for the signal or for the first member to fail. Close closes
	// the members' error channels, which ends these goroutines.
	failed := make(chan error, len(cl.Members))
	for i, m := range cl.Members {
		errc := m.Err() // here: Close clears it
		go func() {
			if err, ok := <-errc; ok {
				failed <- fmt.Errorf("member m%d (%s) stopped: %w", i, m.Endpoint, err)
			}
		}()
	}
	select {
	case <-ctx.Done():
		fmt.Fprintf(stderr, "etcdcluster: stopping\n")
		return nil
	case err := <-failed:
		return err
	}
}
