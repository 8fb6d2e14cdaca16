package main

// Tests of the service files in dist/: the systemd unit and the container
// image definition. They check the files against the code they run (the
// default paths, the descriptor budget, the flags and environment
// variables) and, where the tools are installed, with systemd's own
// verifier and under the unit's sandbox.

import (
	"bufio"
	"bytes"
	"debug/elf"
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

	"github.com/badge-dev/badge/internal/socketpath"
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
	if got := "/run/" + one("RuntimeDirectory"); got != socketpath.RootDir {
		t.Errorf("RuntimeDirectory makes %s, the server's socket directory as root is %s", got, socketpath.RootDir)
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
		// Other lines (the header, rulers, and what strace prints of a
		// thread it detaches from, "3192  ???( <detached ...>") are
		// not rows: a row starts with two numbers.
		f := strings.Fields(l)
		if len(f) < 4 || !isNumber(f[0]) || !isNumber(f[1]) {
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

// dockerfileStage is one stage of a Dockerfile: its FROM line and its
// instructions, continuation lines joined.
type dockerfileStage struct {
	from  string
	instr [][2]string // instruction (upper case), arguments
}

func parseDockerfile(t *testing.T, path string) []dockerfileStage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages []dockerfileStage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		op, args, _ := strings.Cut(line, " ")
		op = strings.ToUpper(op)
		if op == "FROM" {
			stages = append(stages, dockerfileStage{from: strings.TrimSpace(args)})
			return
		}
		if len(stages) > 0 {
			stages[len(stages)-1].instr = append(stages[len(stages)-1].instr, [2]string{op, strings.TrimSpace(args)})
		}
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		flush()
	}
	flush()
	return stages
}

// get returns the arguments of the stage's instructions op.
func (s dockerfileStage) get(op string) []string {
	var out []string
	for _, in := range s.instr {
		if in[0] == op {
			out = append(out, in[1])
		}
	}
	return out
}

// imageEnv returns the ENV of the stage as KEY=VALUE.
func (s dockerfileStage) env(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, args := range s.get("ENV") {
		for _, kv := range strings.Fields(args) {
			if !strings.Contains(kv, "=") {
				t.Fatalf("ENV %q: want KEY=VALUE pairs", args)
			}
			out = append(out, kv)
		}
	}
	return out
}

// imageUser returns the uid and gid of the stage's USER.
func (s dockerfileStage) user(t *testing.T) (uint32, uint32) {
	t.Helper()
	users := s.get("USER")
	if len(users) != 1 {
		t.Fatalf("the final stage has USER %q, want one numeric uid:gid", users)
	}
	u, g, _ := strings.Cut(users[0], ":")
	uid, err1 := strconv.ParseUint(u, 10, 32)
	gid, err2 := strconv.ParseUint(g, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("USER %q: want a numeric uid:gid (a name needs /etc/passwd to mean anything)", users[0])
	}
	return uint32(uid), uint32(gid)
}

// TestContainerImageDefinition: the image is built in stages into a
// static binary (no cgo) on a distroless static base, runs as a user other
// than root, and its environment alone is a configuration the server
// accepts when run as that user (no HOME, no XDG_RUNTIME_DIR), naming its
// volumes; its health check is `badge healthcheck`.
func TestContainerImageDefinition(t *testing.T) {
	stages := parseDockerfile(t, dockerfile)
	if len(stages) < 2 {
		t.Fatalf("%s has %d stages, want a build stage and a runtime stage", dockerfile, len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	var buildCmd string
	for _, r := range build.get("RUN") {
		if strings.Contains(r, "go build") {
			buildCmd = r
		}
	}
	if !strings.Contains(buildCmd, "CGO_ENABLED=0") || !strings.Contains(buildCmd, "./cmd/badge") {
		t.Errorf("build step %q: want CGO_ENABLED=0 go build ... ./cmd/badge (a static binary)", buildCmd)
	}
	if !strings.Contains(final.from, "distroless/static") {
		t.Errorf("final stage FROM %s: want a distroless static base", final.from)
	}
	uid, gid := final.user(t)
	if uid == 0 {
		t.Errorf("the image runs as root")
	}
	if hc := final.get("HEALTHCHECK"); len(hc) != 1 || !strings.HasSuffix(hc[0], `CMD ["/usr/local/bin/badge", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %q: want badge healthcheck", hc)
	}
	env := final.env(t)
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	for _, vol := range []string{vals["BADGE_DATA_DIR"], filepath.Dir(vals["BADGE_SOCKET"]), filepath.Dir(vals["BADGE_ADMIN_SOCKET"])} {
		if v := final.get("VOLUME"); len(v) != 1 || !strings.Contains(v[0], `"`+vol+`"`) {
			t.Errorf("VOLUME %q does not hold %s", v, vol)
		}
	}

	requireRoot(t)
	cmd := exec.Command(testBinary, "server", "--check-config")
	cmd.Env = append([]string{"BADGE_E2E_ROLE=badge", noRaceExitPause}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the image's environment, as uid %d: %v\n%s", uid, err, out)
	}
	for _, want := range [][]string{
		{"data-dir", vals["BADGE_DATA_DIR"], "environment BADGE_DATA_DIR"},
		{"socket", vals["BADGE_SOCKET"], "environment BADGE_SOCKET"},
		{"admin-socket", vals["BADGE_ADMIN_SOCKET"], "environment BADGE_ADMIN_SOCKET"},
	} {
		if !containsFields(string(out), want) {
			t.Errorf("--check-config with the image's environment lacks %q:\n%s", want, out)
		}
	}
}

// TestContainerImageRun builds the image's binary with the Dockerfile's
// own build command, checks that it is static, lays out the image's file
// system (its binary, and its state and socket directories as the build
// makes them), and runs the server there under chroot as the image's user
// with the image's environment and command; the image's health check
// must pass. It compiles badge without the race detector, which takes
// minutes on a cold build cache, so it runs only with BADGE_E2E_IMAGE=1.
func TestContainerImageRun(t *testing.T) {
	if os.Getenv("BADGE_E2E_IMAGE") != "1" {
		t.Skip("set BADGE_E2E_IMAGE=1 to build the image's static binary and run it as the image would (a cold build takes minutes)")
	}
	requireRoot(t)
	stages := parseDockerfile(t, dockerfile)
	build, final := stages[0], stages[len(stages)-1]
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "usr/local/bin/badge")
	for _, r := range build.get("RUN") {
		if !strings.Contains(r, "go build") {
			continue
		}
		c := exec.Command("sh", "-c", strings.Replace(r, "-o /out/badge", "-o "+bin, 1))
		c.Dir = "../.."
		c.Env = append(os.Environ(), "VERSION=image-test")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("the Dockerfile's build step: %v\n%s", err, out)
		}
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the image's binary is dynamically linked (%s): a distroless static base has no libc", p.Type)
		}
	}
	f.Close()
	uid, gid := final.user(t)
	env := final.env(t)
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	for dir, mode := range map[string]os.FileMode{vals["BADGE_DATA_DIR"]: 0o700, filepath.Dir(vals["BADGE_SOCKET"]): 0o755} {
		p := filepath.Join(root, dir)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
	}
	// /proc is the kernel's, as in a container run with --pid=host.
	proc := filepath.Join(root, "proc")
	if err := os.Mkdir(proc, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("/proc", proc, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		t.Skipf("cannot bind-mount /proc (%v)", err)
	}
	t.Cleanup(func() { syscall.Unmount(proc, syscall.MNT_DETACH) })

	run := func(args ...string) *exec.Cmd {
		c := exec.Command("/usr/local/bin/badge", args...)
		c.Env = env
		c.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		return c
	}
	server := run("server") // the image's CMD
	var logs syncBuffer
	ready := make(chan struct{})
	server.Stderr = writerFunc(func(p []byte) (int, error) {
		logs.Write(p)
		if strings.Contains(logs.String(), "badge server ready") {
			select {
			case <-ready:
			default:
				close(ready)
			}
		}
		return len(p), nil
	})
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- server.Wait() }()
	t.Cleanup(func() {
		server.Process.Signal(syscall.SIGTERM)
		<-exited
	})
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("the image's server exited (%v):\n%s", err, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("the image's server not ready within 20s:\n%s", logs.String())
	}
	if out, err := run("healthcheck").CombinedOutput(); err != nil {
		t.Fatalf("the image's health check: %v\n%s\nserver log:\n%s", err, out, logs.String())
	}
	if out, err := run("entry", "create", "--id", "spiffe://example.org/web", "--selector", "unix:uid:1001").CombinedOutput(); err != nil {
		t.Fatalf("an admin command in the image (docker exec): %v\n%s", err, out)
	}
}

// writerFunc is an io.Writer of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// isNumber reports whether s is a decimal number, as strace -c prints its
// columns.
func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}
