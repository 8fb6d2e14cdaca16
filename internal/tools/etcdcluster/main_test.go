package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// toolRoleEnv makes the test binary run as the command, with the
// arguments after "--", so that a test can send it a real signal.
const toolRoleEnv = "ETCDCLUSTER_TEST_TOOL"

func TestMain(m *testing.M) {
	if os.Getenv(toolRoleEnv) != "" {
		main()
	}
	os.Exit(m.Run())
}

func TestParse(t *testing.T) {
	good := []struct {
		args  []string
		want  config
		ports []int
	}{
		{[]string{"--data-dir", "/d"}, config{members: 3, dataDir: "/d", fsync: true}, nil},
		{[]string{"--data-dir", "/d", "--members", "1", "--fsync=false"}, config{members: 1, dataDir: "/d"}, nil},
		{[]string{"--data-dir", "/d", "--client-ports", "2379,22379,32379"}, config{members: 3, dataDir: "/d", fsync: true}, []int{2379, 22379, 32379}},
		{[]string{"--data-dir", "/d", "--members", "2", "--client-ports", "1,65535"}, config{members: 2, dataDir: "/d", fsync: true}, []int{1, 65535}},
	}
	for _, tt := range good {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			c, err := parse(tt.args, io.Discard)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if c.members != tt.want.members || c.dataDir != tt.want.dataDir || c.fsync != tt.want.fsync || !slices.Equal(c.clientPorts, tt.ports) {
				t.Errorf("parse = %+v, want %+v with ports %v", c, tt.want, tt.ports)
			}
		})
	}
	bad := []struct {
		args []string
		want string // in the error
	}{
		{nil, "--data-dir is required"},
		{[]string{"--data-dir", "/d", "--members", "0"}, "invalid --members 0"},
		{[]string{"--data-dir", "/d", "--members", "10"}, "invalid --members 10"},
		{[]string{"--data-dir", "/d", "--client-ports", "2379,22379"}, "2 ports for 3 members"},
		{[]string{"--data-dir", "/d", "--members", "1", "--client-ports", "2379,"}, `"" is not a port`},
		{[]string{"--data-dir", "/d", "--members", "2", "--client-ports", "2379,2379"}, "port 2379 is given twice"},
		{[]string{"--data-dir", "/d", "--members", "1", "--client-ports", "0"}, `"0" is not a port`},
		{[]string{"--data-dir", "/d", "--members", "1", "--client-ports", "65536"}, `"65536" is not a port`},
		{[]string{"--data-dir", "/d", "--members", "1", "--client-ports", "+2379"}, `"+2379" is not a port`},
		{[]string{"--data-dir", "/d", "--members", "1", "--client-ports", " 2379"}, `" 2379" is not a port`},
		{[]string{"--data-dir", "/d", "--members", "1", "--client-ports", "http"}, `"http" is not a port`},
		{[]string{"--data-dir", "/d", "extra"}, `unexpected argument "extra"`},
		{[]string{"--members", "x"}, "invalid value"},
	}
	for _, tt := range bad {
		t.Run("bad/"+strings.Join(tt.args, " "), func(t *testing.T) {
			var ue usageError
			_, err := parse(tt.args, io.Discard)
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parse(%q) = %v, want a usage error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

// A data dir with anything in it is refused before a member starts, and
// left as it was.
func TestNonEmptyDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "m0"), 0o700); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--data-dir", dir, "--members", "1"}, &out, &errOut)
	if code != exitFailure || !strings.Contains(errOut.String(), dir+" is not empty") || out.Len() != 0 {
		t.Errorf("exit %d, stdout %q, stderr %q: want exit 1 naming the directory, nothing on stdout", code, out.String(), errOut.String())
	}
	if names, _ := os.ReadDir(dir); len(names) != 1 {
		t.Errorf("the data dir holds %v, want m0 alone", names)
	}
}

// TestClusterRunsUntilSIGTERM runs the command in a process of its own:
// three members on the client ports given form one cluster (a write
// through one member is read through the others), and SIGTERM closes
// them all and exits 0, leaving the ports free and the data on disk.
func TestClusterRunsUntilSIGTERM(t *testing.T) {
	ports := make([]string, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	dir := filepath.Join(t.TempDir(), "etcd") // created by the command
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "--data-dir", dir, "--client-ports", strings.Join(ports, ","), "--fsync=false")
	cmd.Env = append(os.Environ(), toolRoleEnv+"=1")
	var errOut syncBuffer // read while the command writes to it
	cmd.Stderr = &errOut
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once waitErr is set
	var waitErr error
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
		io.Copy(io.Discard, stdout)
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill() // if a failed test left it running
		<-exited
	})
	var eps []string
	select {
	case l := <-line:
		want := "etcd://127.0.0.1:" + strings.Join(ports, ",127.0.0.1:") + "\n"
		if l != want {
			t.Fatalf("stdout %q, want %q; stderr %s", l, want, errOut.String())
		}
		eps = strings.Split(strings.TrimSuffix(strings.TrimPrefix(l, "etcd://"), "\n"), ",")
	case <-time.After(60 * time.Second):
		t.Fatalf("no endpoints within 60 s; stderr %s", errOut.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, ep := range eps {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		// Each member writes a key and reads the one its predecessor
		// wrote: a linearizable read goes through the cluster's leader.
		if _, err := cli.Put(ctx, fmt.Sprintf("k%d", i), ep); err != nil {
			t.Fatalf("put through %s: %v", ep, err)
		}
		if i > 0 {
			r, err := cli.Get(ctx, fmt.Sprintf("k%d", i-1))
			if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != eps[i-1] {
				t.Errorf("get k%d through %s: %v, %v; want %s", i-1, ep, r, err, eps[i-1])
			}
		}
		r, err := cli.MemberList(ctx)
		if err != nil || len(r.Members) != 3 {
			t.Errorf("member list through %s: %v, %v; want 3 members", ep, r, err)
		}
		cli.Close()
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("after SIGTERM: %v; stderr %s", waitErr, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30 s after SIGTERM; stderr %s", errOut.String())
	}
	if !strings.Contains(errOut.String(), "stopping") {
		t.Errorf("stderr %q: want the stop announced", errOut.String())
	}
	for _, ep := range eps {
		l, err := net.Listen("tcp", ep)
		if err != nil {
			t.Errorf("%s still taken after the command exited: %v", ep, err)
			continue
		}
		l.Close()
	}
	for _, m := range []string{"m0", "m1", "m2"} {
		if _, err := os.Stat(filepath.Join(dir, m, "etcd", "member")); err != nil {
			t.Errorf("member %s's data: %v", m, err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
