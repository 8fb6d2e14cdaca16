package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryLinksNoEtcdServer: the badge binary talks to etcd through the
// client only; the server (and its raft, bbolt backend, metrics) is
// linked into tests alone, through storage/etcd/etcdtest.
func TestBinaryLinksNoEtcdServer(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go tool")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	client := false
	for _, d := range deps {
		switch {
		case strings.HasPrefix(d, "go.etcd.io/etcd/server/"), strings.HasPrefix(d, "go.etcd.io/raft/"),
			strings.HasSuffix(d, "/storage/etcd/etcdtest"):
			t.Errorf("the badge binary links %s", d)
		case d == "go.etcd.io/etcd/client/v3":
			client = true
		}
	}
	if !client {
		t.Errorf("the badge binary does not link go.etcd.io/etcd/client/v3; is --storage etcd:// still wired?")
	}
}
