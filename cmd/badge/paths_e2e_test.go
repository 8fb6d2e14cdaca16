package main

// Attacks by an unprivileged local user (uid 1001) on the paths badge
// trusts: the socket directory, the data dir and its files, and the socket
// a client dials.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const attacker = 1001

func init() {
	// listen-unix is a server of another user: it listens on
	// $BADGE_E2E_LISTEN, prints "ready", and accepts connections (answering
	// nothing) until stdin closes.
	workloadModes["listen-unix"] = func(ctx context.Context, _ string) int {
		l, err := net.Listen("unix", os.Getenv("BADGE_E2E_LISTEN"))
		if err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			return 1
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(io.Discard, c); c.Close() }()
			}
		}()
		os.Stdout.WriteString("ready\n")
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
}

// chown sets the owner and mode of path, failing the test on error.
func chown(t *testing.T, path string, uid int, mode fs.FileMode) {
	t.Helper()
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string, uid int, mode fs.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	chown(t, path, uid, mode)
}

// wantRefused checks that a server exited 1 with a one-line message that
// holds every one of want.
func wantRefused(t *testing.T, code int, errOut string, want ...string) {
	t.Helper()
	line := strings.TrimSpace(errOut)
	if code != exitFailure || strings.Contains(line, "\n") {
		t.Fatalf("exit %d, stderr %q; want exit 1 and one line", code, errOut)
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Fatalf("stderr %q does not name %q", line, w)
		}
	}
}

// TestE2ESocketDirTakeover: a socket directory that another user owns or
// can write, or one under a directory they own, is refused before anything
// is created in the data dir.
func TestE2ESocketDirTakeover(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) (sockDir string, want []string)
	}{
		{"socket directory created by another user", func(t *testing.T, dir string) (string, []string) {
			s := filepath.Join(dir, "badge")
			mkdir(t, s, attacker, 0o755)
			return s, []string{"socket directory " + s + " is owned by uid 1001 with mode 0755"}
		}},
		{"socket directory writable by everyone", func(t *testing.T, dir string) (string, []string) {
			s := filepath.Join(dir, "badge")
			mkdir(t, s, 0, 0o777)
			return s, []string{s + " is owned by uid 0 with mode 0777"}
		}},
		{"sticky socket directory writable by everyone", func(t *testing.T, dir string) (string, []string) {
			s := filepath.Join(dir, "badge")
			mkdir(t, s, 0, fs.ModeSticky|0o777)
			return s, []string{s + " is owned by uid 0 with mode 1777"}
		}},
		{"parent owned by another user", func(t *testing.T, dir string) (string, []string) {
			p := filepath.Join(dir, "run")
			mkdir(t, p, attacker, 0o755)
			s := filepath.Join(p, "badge")
			mkdir(t, s, 0, 0o755)
			return s, []string{s + ": " + p + " is owned by uid 1001 with mode 0755"}
		}},
		{"missing directory under another user's", func(t *testing.T, dir string) (string, []string) {
			p := filepath.Join(dir, "run")
			mkdir(t, p, attacker, 0o755)
			return filepath.Join(p, "badge"), []string{p + " is owned by uid 1001 with mode 0755"}
		}},
		{"symbolic link to another user's directory", func(t *testing.T, dir string) (string, []string) {
			p := filepath.Join(dir, "evil")
			mkdir(t, p, attacker, 0o755)
			s := filepath.Join(dir, "badge")
			if err := os.Symlink(p, s); err != nil {
				t.Fatal(err)
			}
			return s, []string{p + " is owned by uid 1001 with mode 0755"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := worldReadableTempDir(t)
			sockDir, want := tc.setup(t, dir)
			data := filepath.Join(dir, "data")
			code, errOut := runServerOnce(t, "--data-dir", data,
				"--socket", filepath.Join(sockDir, "workload.sock"), "--admin-socket", filepath.Join(sockDir, "admin.sock"))
			wantRefused(t, code, errOut, want...)
			if _, err := os.Lstat(data); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the refused server created its data dir: %v", err)
			}
			for _, s := range []string{"workload.sock", "admin.sock"} {
				if _, err := os.Lstat(filepath.Join(sockDir, s)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("the refused server left %s: %v", s, err)
				}
			}
		})
	}
}

// TestE2EDataDirTakeover: a data dir, database or key file that another
// user owns or can write, or a data dir under a directory they own, is
// refused, naming the path; the keys are never served from it.
func TestE2EDataDirTakeover(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, data string) []string // returns what the message names
	}{
		{"data dir created by another user", func(t *testing.T, data string) []string {
			mkdir(t, data, attacker, 0o700)
			return []string{"data directory " + data + " is owned by uid 1001 with mode 0700"}
		}},
		{"data dir writable by group", func(t *testing.T, data string) []string {
			mkdir(t, data, 0, 0o770)
			return []string{data + " is owned by uid 0 with mode 0770"}
		}},
		{"data dir under another user's directory", func(t *testing.T, data string) []string {
			p := filepath.Dir(data)
			chown(t, p, attacker, 0o755)
			mkdir(t, data, 0, 0o700)
			return []string{p + " is owned by uid 1001 with mode 0755"}
		}},
		{"key file owned by another user", func(t *testing.T, data string) []string {
			key := initDataDir(t, data)
			chown(t, key, attacker, 0o600)
			return []string{"key file " + key + " is owned by uid 1001"}
		}},
		{"key file readable by others", func(t *testing.T, data string) []string {
			key := initDataDir(t, data)
			chown(t, key, 0, 0o644)
			return []string{"key file " + key + " has mode 0644"}
		}},
		{"key directory owned by another user", func(t *testing.T, data string) []string {
			initDataDir(t, data)
			keys := filepath.Join(data, "keys")
			chown(t, keys, attacker, 0o700)
			return []string{"key directory " + keys + " is owned by uid 1001"}
		}},
		{"database owned by another user", func(t *testing.T, data string) []string {
			initDataDir(t, data)
			db := filepath.Join(data, "badge.db")
			chown(t, db, attacker, 0o600)
			return []string{db + " is owned by uid 1001 with mode 0600"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := worldReadableTempDir(t)
			parent := filepath.Join(dir, "state")
			mkdir(t, parent, 0, 0o755)
			data := filepath.Join(parent, "data")
			want := tc.setup(t, data)
			code, errOut := runServerOnce(t, "--data-dir", data,
				"--socket", filepath.Join(dir, "sock", "w.sock"), "--admin-socket", filepath.Join(dir, "sock", "a.sock"))
			// A key file is read after the database is opened, which logs.
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			wantRefused(t, code, lines[len(lines)-1], want...)
		})
	}
}

// initDataDir runs a server on data once, so that it holds a database and
// keys, and returns the path of one key file.
func initDataDir(t *testing.T, data string) string {
	t.Helper()
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "sock")
	d := &daemon{t: t, dir: filepath.Dir(data), dataDir: data,
		socket: filepath.Join(sock, "w.sock"), admin: filepath.Join(sock, "a.sock")}
	d.start()
	d.signal(syscall.SIGTERM)
	keys, err := filepath.Glob(filepath.Join(data, "keys", "*.key"))
	if err != nil || len(keys) == 0 {
		t.Fatalf("no key files after the first start: %v", err)
	}
	return keys[0]
}

// TestE2EEmptyDatabaseWithKeys: an empty or missing badge.db next to the
// keys of an existing installation is a corrupt database, not a fresh
// install: the server refuses to start and changes nothing.
func TestE2EEmptyDatabaseWithKeys(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name  string
		state string
		lose  func(db string) error
	}{
		{"empty", "empty", func(db string) error { return os.Truncate(db, 0) }},
		{"missing", "missing", os.Remove},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t)
			d.createEntry("spiffe://example.org/a", "unix:uid:1001")
			d.signal(syscall.SIGTERM)
			db := filepath.Join(d.dataDir, "badge.db")
			if err := tc.lose(db); err != nil {
				t.Fatal(err)
			}
			keysBefore, _ := filepath.Glob(filepath.Join(d.dataDir, "keys", "*"))
			code, errOut := runServerOnce(t, "--data-dir", d.dataDir, "--socket", d.socket, "--admin-socket", d.admin)
			wantRefused(t, code, errOut, db, "database is corrupt", "the file is "+tc.state)
			keysAfter, _ := filepath.Glob(filepath.Join(d.dataDir, "keys", "*"))
			if len(keysAfter) != len(keysBefore) {
				t.Errorf("key files: %d before, %d after the refused start", len(keysBefore), len(keysAfter))
			}
			fi, err := os.Stat(db)
			switch {
			case tc.state == "empty" && (err != nil || fi.Size() != 0):
				t.Errorf("the empty database was changed: %v", err)
			case tc.state == "missing" && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("a new database was created: %v", err)
			}
		})
	}
}

// fakeServer runs a plain Unix listener at path as uid, in another
// process, until the test ends.
func fakeServer(t *testing.T, path string, uid uint32) {
	t.Helper()
	cmd := exec.Command(testBinary)
	cmd.Env = []string{noRaceExitPause, "BADGE_E2E_ROLE=workload", "BADGE_E2E_MODE=listen-unix", "BADGE_E2E_LISTEN=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("fake server as uid %d: %q %v", uid, line, err)
	}
}

// TestE2EClientsRefuseUntrustedServer: a server that another user runs at
// the socket path the CLI uses is refused by the admin commands and by
// svid fetch, naming the socket and the uid, before any request is sent.
func TestE2EClientsRefuseUntrustedServer(t *testing.T) {
	requireRoot(t)
	dir := worldReadableTempDir(t)
	evil := filepath.Join(dir, "evil")
	mkdir(t, evil, attacker, 0o755)
	sock := filepath.Join(evil, "workload.sock")
	admin := filepath.Join(evil, "admin.sock")
	fakeServer(t, sock, attacker)
	fakeServer(t, admin, attacker)

	cli := func(vars map[string]string, args ...string) (string, int) {
		var out, errOut bytes.Buffer
		e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(k string) string { return vars[k] }}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code := e.dispatch(ctx, args)
		return errOut.String(), code
	}
	vars := map[string]string{"BADGE_ADMIN_SOCKET": admin, "SPIFFE_ENDPOINT_SOCKET": "unix://" + sock}
	for _, tc := range []struct {
		args   []string
		socket string
	}{
		{[]string{"revoke", "--id", "spiffe://example.org/a", "--block"}, admin},
		{[]string{"entry", "list"}, admin},
		{[]string{"svid", "fetch", "--timeout", "5s"}, sock},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			errOut, code := cli(vars, tc.args...)
			if code != exitFailure || !strings.Contains(errOut, "refusing "+tc.socket) || !strings.Contains(errOut, "uid 1001") {
				t.Fatalf("exit %d, stderr %q; want exit 1 refusing %s served by uid 1001", code, errOut, tc.socket)
			}
		})
	}
	// Naming the uid makes the server trusted: the error is then the fake
	// server's silence, not a refusal.
	vars["BADGE_SERVER_UID"] = "1001"
	if errOut, code := cli(vars, "svid", "fetch", "--timeout", "1s"); code != exitFailure || strings.Contains(errOut, "refusing") {
		t.Fatalf("with BADGE_SERVER_UID=1001: exit %d, stderr %q; want a failure that is not a refusal", code, errOut)
	}
	vars["BADGE_SERVER_UID"] = "nobody"
	if errOut, code := cli(vars, "entry", "list"); code != exitUsage || !strings.Contains(errOut, "BADGE_SERVER_UID") {
		t.Fatalf("invalid BADGE_SERVER_UID: exit %d, stderr %q; want a usage error naming it", code, errOut)
	}
}
