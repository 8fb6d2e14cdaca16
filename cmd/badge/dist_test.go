package main

// Tests of the service files in dist/: the systemd unit and the container
// image definition. They check the files against the code they run (the
// default paths, the descriptor budget, the flags and environment
// variables) and, where the tools are installed, with systemd's own
// verifier and under the unit's sandbox.

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	unitFile       = "dist/badge.service"
	dockerfile     = "dist/Dockerfile"
	exampleConfig  = "dist/server.toml"
	unitBinaryPath = "/usr/local/bin/badge"
)

// unitDirectives parses a systemd unit into its [Service] (and other
// sections') directives, key to values in order; "KEY=" resets a list as
// systemd does.
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a directive: %q", path, line)
		}
		if v == "" {
			out[k] = nil
			continue
		}
		out[k] = append(out[k], v)
	}
	return out
}

// TestSystemdUnitMatchesServer: the unit gives the server what its
// defaults as root expect (state in /var/lib/badge, sockets in /run/badge,
// modes it accepts), enough descriptors for 10,000 streams by the
// server's own budget, the hardening the issue asks for, a reload that
// checks the configuration before SIGHUP, and an ExecStart whose flags,
// with the example config, pass --check-config.
func TestSystemdUnitMatchesServer(t *testing.T) {
	u := unitDirectives(t, unitFile)
	one := func(k string) string {
		t.Helper()
		if len(u[k]) != 1 {
			t.Fatalf("%s: want exactly one %s=, have %q", unitFile, k, u[k])
		}
		return u[k][0]
	}
	dataDir, _ := defaultDataDir(0, func(string) string { return "" })
	if got := "/var/lib/" + one("StateDirectory"); got != dataDir {
		t.Errorf("StateDirectory makes %s, the server's default data dir as root is %s", got, dataDir)
	}
	if got := "/run/" + one("RuntimeDirectory"); got != rootSocketDir {
		t.Errorf("RuntimeDirectory makes %s, the server's socket directory as root is %s", got, rootSocketDir)
	}
	if m := one("StateDirectoryMode"); m != "0700" {
		t.Errorf("StateDirectoryMode=%s: the data dir holds the CA keys, want 0700", m)
	}
	if m, _ := strconv.ParseUint(one("RuntimeDirectoryMode"), 8, 32); m&0o022 != 0 || m&0o005 != 0o005 {
		t.Errorf("RuntimeDirectoryMode=%o: the server refuses a socket directory others can write, and workloads must reach the socket", m)
	}
	for k, want := range map[string]string{"ProtectSystem": "strict", "NoNewPrivileges": "yes", "Type": "exec"} {
		if got := one(k); got != want {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
	// 10,000 streams at two descriptors each on kernels without
	// SO_PEERPIDFD, the reserve, and a quarter of all for --listen.
	need := (2*10000 + fdReserve) * 4 / 3
	if n, err := strconv.Atoi(one("LimitNOFILE")); err != nil || n < need {
		t.Errorf("LimitNOFILE=%s, want at least %d for 10,000 streams", one("LimitNOFILE"), need)
	}
	start := strings.Fields(one("ExecStart"))
	if start[0] != unitBinaryPath || start[1] != "server" {
		t.Fatalf("ExecStart=%q does not run %s server", start, unitBinaryPath)
	}
	reload := u["ExecReload"]
	if len(reload) != 2 || reload[0] != strings.Join(append(start[:2:2], append([]string{"--check-config"}, start[2:]...)...), " ") ||
		reload[1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload=%q: want --check-config with ExecStart's flags, then SIGHUP", reload)
	}
	// ExecStart's flags, with the shipped example as the config file,
	// make a configuration the server accepts.
	args := start[2:]
	for i, a := range args {
		if a == "/etc/badge/server.toml" {
			args[i] = exampleConfig
		}
	}
	if !slices.Contains(args, exampleConfig) {
		t.Fatalf("ExecStart=%q does not read /etc/badge/server.toml", start)
	}
	out, errOut, code := checkConfig(t, nil, args...)
	if code != exitOK || !strings.Contains(out, "configuration OK") {
		t.Errorf("the unit's ExecStart with %s: exit %d\n%s%s", exampleConfig, code, out, errOut)
	}
}

// unitForTest copies the unit into a temporary directory with ExecStart
// and ExecReload running bin, which must exist for systemd-analyze.
func unitForTest(t *testing.T, bin string) string {
	t.Helper()
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "badge.service")
	if err := os.WriteFile(p, bytes.ReplaceAll(data, []byte(unitBinaryPath), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSystemdUnitVerify: systemd's own checks accept the unit without a
// warning, and rate its exposure at most 3.0 of 10 ("OK").
func TestSystemdUnitVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd): the unit is checked by TestSystemdUnitMatchesServer only")
	}
	unit := unitForTest(t, testBinary)
	out, err := exec.Command(sa, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(sa, "security", "--offline=true", "--threshold=30", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: exposure above 3.0 (%v):\n%s", err, out)
	}
	if m := regexp.MustCompile(`Overall exposure level for badge.service: ([0-9.]+)`).FindSubmatch(out); m == nil {
		t.Fatalf("systemd-analyze security printed no exposure level:\n%s", out)
	}
}

// syscallSet expands systemd syscall filter groups (such as
// @system-service) into syscall names with systemd-analyze.
func syscallSet(t *testing.T, sa string, names []string, seen map[string]bool) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, n := range names {
		if !strings.HasPrefix(n, "@") {
			out[n] = true
			continue
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		b, err := exec.Command(sa, "syscall-filter", n).Output()
		if err != nil {
			t.Fatalf("systemd-analyze syscall-filter %s: %v", n, err)
		}
		var members []string
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(l); len(f) > 0 && f[0] != "#" {
				members = append(members, f[0])
			}
		}
		for s := range syscallSet(t, sa, members, seen) {
			out[s] = true
		}
	}
	return out
}

// unitSyscalls returns the syscalls the unit's SystemCallFilter= lines
// allow: the allow-lists, less the deny-lists (~).
func unitSyscalls(t *testing.T, sa string, filters []string) map[string]bool {
	t.Helper()
	var allow, deny []string
	for _, f := range filters {
		if rest, ok := strings.CutPrefix(f, "~"); ok {
			deny = append(deny, strings.Fields(rest)...)
		} else {
			allow = append(allow, strings.Fields(f)...)
		}
	}
	out := syscallSet(t, sa, allow, map[string]bool{})
	for s := range syscallSet(t, sa, deny, map[string]bool{}) {
		delete(out, s)
	}
	return out
}

// unitCaps returns the unit's CapabilityBoundingSet= as setpriv's
// --bounding-set argument ("-all,+sys_ptrace,...").
func unitCaps(t *testing.T, u map[string][]string) string {
	t.Helper()
	arg := "-all"
	for _, v := range u["CapabilityBoundingSet"] {
		for _, c := range strings.Fields(v) {
			arg += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
		}
	}
	return arg
}

// TestSystemdUnitSandbox runs the real daemon under the parts of the
// unit's sandbox that can be applied without systemd (its capability
// bounding set and no_new_privs, with setpriv) and traces it with strace:
// a workload of another uid still gets its SVID on an entry pinning its
// executable (which needs /proc/PID/exe of another user), a revocation and
// the public listener work, and every system call the daemon made is one
// the unit's SystemCallFilter allows, so the filter cannot kill it.
func TestSystemdUnitSandbox(t *testing.T) {
	requireRoot(t)
	sa, err1 := exec.LookPath("systemd-analyze")
	setpriv, err2 := exec.LookPath("setpriv")
	strace, err3 := exec.LookPath("strace")
	if err1 != nil || err2 != nil || err3 != nil {
		t.Skip("needs systemd-analyze, setpriv and strace (apt-get install systemd util-linux strace)")
	}
	u := unitDirectives(t, unitFile)
	allowed := unitSyscalls(t, sa, u["SystemCallFilter"])
	if len(allowed) < 100 {
		t.Fatalf("the unit's filter expands to %d syscalls; systemd-analyze did not answer as expected", len(allowed))
	}
	trace := filepath.Join(t.TempDir(), "strace.txt")
	wrap := []string{setpriv, "--no-new-privs", "--bounding-set=" + unitCaps(t, u), "--inh-caps=-all",
		strace, "-f", "-c", "-o", trace}
	d := startDaemonWith(t, wrap, nil, "--listen", "127.0.0.1:0")
	// The daemon is strace's child: signalled through strace, or left
	// behind by a killed strace, it would outlive the test. Stop it
	// directly, so that strace sees it exit and writes its count.
	daemonPID := childPID(t, d.cmd.Process.Pid)
	stopDaemon := func() {
		if d.cmd == nil {
			return
		}
		syscall.Kill(daemonPID, syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(20 * time.Second):
			syscall.Kill(daemonPID, syscall.SIGKILL)
			<-d.exited
			t.Error("the traced daemon did not exit within 20s of SIGTERM")
		}
		d.cmd = nil
	}
	t.Cleanup(stopDaemon)

	d.createEntry("spiffe://example.org/pinned", "unix:uid:1001", "unix:path:"+testBinary)
	if r := d.runWorkload(1001, 1001, "fetch"); r.Error != "" || len(r.SVIDs) != 1 || r.SVIDs[0].ID != "spiffe://example.org/pinned" {
		t.Fatalf("under the unit's capabilities, a workload pinned by its executable got %+v", r)
	}
	d.mustBadge("revoke", "--id", "spiffe://example.org/pinned")

	stopDaemon()
	data, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	var used, denied []string
	for _, l := range strings.Split(string(data), "\n") {
		// "% time  seconds  usecs/call  calls  errors  syscall": the name
		// is the last column.
		f := strings.Fields(l)
		if len(f) < 4 || f[0] == "%" || strings.HasPrefix(f[0], "---") {
			continue
		}
		name := f[len(f)-1]
		if name == "total" {
			continue
		}
		used = append(used, name)
		if !allowed[name] {
			denied = append(denied, name)
		}
	}
	if len(used) < 20 {
		t.Fatalf("strace counted %d syscalls; the trace is not of the daemon:\n%s", len(used), data)
	}
	if len(denied) > 0 {
		t.Errorf("the daemon made system calls the unit's SystemCallFilter denies: %v\n%s", denied, data)
	}
}

// childPID returns the child of pid (the daemon, ready, under strace).
func childPID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		t.Fatalf("process %d has children %q, want the daemon alone", pid, f)
	}
	c, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}
