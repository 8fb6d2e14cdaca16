package main

// The worker processes of --uids: badge-bench re-executes itself once per
// uid with that uid's credentials, and talks to each child in JSON lines
// over its standard input and output.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// benchChildArg, as the first argument, makes the process a worker child
// of another badge-bench (see runChild). It is not a flag so that it stays
// out of the usage text.
const benchChildArg = "--internal-bench-child"

// childMsg is one line of the parent–child protocol. The parent sends
// Spec first, then commands (go, wait, close); the child answers each.
type childMsg struct {
	Spec     *benchSpec    `json:"spec,omitempty"`
	Cmd      string        `json:"cmd,omitempty"`
	ID       string        `json:"id,omitempty"`
	Gone     bool          `json:"gone,omitempty"`
	Timeout  time.Duration `json:"timeout,omitempty"`
	Ready    bool          `json:"ready,omitempty"`
	Result   *groupResult  `json:"result,omitempty"`
	Arrivals []int64       `json:"arrivals,omitempty"`
	Err      string        `json:"error,omitempty"`
}

// runChild is the worker side of --uids: it runs a localGroup as the uid
// it was started with and answers the parent on stdout.
func runChild(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(stdin))
	enc := json.NewEncoder(stdout)
	var m childMsg
	if err := dec.Decode(&m); err != nil || m.Spec == nil || len(m.Spec.Sockets) == 0 {
		return usagef("%s is for badge-bench's own use", benchChildArg)
	}
	g := &localGroup{spec: *m.Spec, uid: uint32(os.Getuid())}
	defer g.Close()
	if err := enc.Encode(childMsg{Ready: true}); err != nil {
		return err
	}
	for {
		var m childMsg
		if err := dec.Decode(&m); err != nil {
			return nil // the parent is gone
		}
		var reply childMsg
		switch m.Cmd {
		case "go":
			r, err := g.Run(ctx)
			reply.Result = &r
			if err != nil {
				reply.Err = err.Error()
			}
		case "wait":
			arr, err := g.Wait(ctx, m.ID, m.Gone, m.Timeout)
			reply.Arrivals = arr
			if err != nil {
				reply.Err = err.Error()
			}
		case "close":
			g.Close()
			return enc.Encode(childMsg{Ready: true})
		default:
			reply.Err = fmt.Sprintf("unknown command %q", m.Cmd)
		}
		if err := enc.Encode(reply); err != nil {
			return err
		}
	}
}

// childGroup is a localGroup in a child process running as another uid.
type childGroup struct {
	uid  uint32
	cmd  *exec.Cmd
	in   io.WriteCloser
	enc  *json.Encoder
	dec  *json.Decoder
	done chan struct{}
}

func startChild(ctx context.Context, exe string, uid uint32, spec benchSpec, stderr io.Writer) (*childGroup, error) {
	gid := uid
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			gid = uint32(g)
		}
	}
	cmd := exec.Command(exe, benchChildArg)
	cmd.Dir = "/"
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &childGroup{uid: uid, cmd: cmd, in: in, enc: json.NewEncoder(in), dec: json.NewDecoder(bufio.NewReader(out)), done: make(chan struct{})}
	go func() { // a cancelled run must not wait on a child that still works
		select {
		case <-ctx.Done():
			cmd.Process.Kill()
		case <-c.done:
		}
	}()
	if _, err := c.roundTrip(childMsg{Spec: &spec}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *childGroup) roundTrip(m childMsg) (childMsg, error) {
	var r childMsg
	if err := c.enc.Encode(m); err != nil {
		return r, fmt.Errorf("worker process: %w", err)
	}
	if err := c.dec.Decode(&r); err != nil {
		return r, fmt.Errorf("worker process exited (%v)", err)
	}
	if r.Err != "" {
		return r, errors.New(r.Err)
	}
	return r, nil
}

func (c *childGroup) UID() uint32 { return c.uid }

func (c *childGroup) Run(ctx context.Context) (groupResult, error) {
	finished := make(chan struct{})
	go func() { // stopping the run ends the child
		select {
		case <-ctx.Done():
			c.cmd.Process.Kill()
		case <-finished:
		}
	}()
	r, err := c.roundTrip(childMsg{Cmd: "go"})
	close(finished)
	if err != nil {
		return groupResult{}, err
	}
	if r.Result == nil {
		return groupResult{}, errors.New("worker process sent no result")
	}
	return *r.Result, nil
}

func (c *childGroup) Wait(_ context.Context, id string, gone bool, timeout time.Duration) ([]int64, error) {
	r, err := c.roundTrip(childMsg{Cmd: "wait", ID: id, Gone: gone, Timeout: timeout})
	return r.Arrivals, err
}

func (c *childGroup) Close() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	if _, err := c.roundTrip(childMsg{Cmd: "close"}); err != nil {
		c.cmd.Process.Kill()
	}
	c.in.Close()
	t := time.AfterFunc(10*time.Second, func() { c.cmd.Process.Kill() })
	err := c.cmd.Wait()
	t.Stop()
	close(c.done)
	return err
}

// benchExecutable returns this executable, or a copy of it in a new 0755
// directory if other uids cannot reach it (a binary under /root, say), and
// a function that removes the copy.
func benchExecutable() (string, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	if worldExecutable(exe) {
		return exe, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "badge-bench-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	cp := filepath.Join(dir, "badge-bench")
	err = os.Chmod(dir, 0o755)
	if err == nil {
		err = copyFile(cp, exe, 0o755)
	}
	if err == nil && !worldExecutable(cp) {
		err = fmt.Errorf("%s is not reachable by other users; set TMPDIR to a directory they can traverse", dir)
	}
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("copying %s for the worker uids: %w", exe, err)
	}
	return cp, cleanup, nil
}

// worldExecutable reports whether any uid can execute path: the file is
// readable and executable by others and every directory above it is
// searchable by others.
func worldExecutable(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o005 != 0o005 {
		return false
	}
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func copyFile(dst, src string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// raiseNoFile raises RLIMIT_NOFILE to at least need, the hard limit too
// when running as root.
func raiseNoFile(need uint64) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if rl.Cur >= need {
		return nil
	}
	if rl.Max < need {
		if os.Geteuid() != 0 {
			return fmt.Errorf("%d streams need %d open files, but the hard limit is %d: raise it (ulimit -Hn) or run as root", need-256, need, rl.Max)
		}
		rl.Max = need
	}
	rl.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("raising the open-file limit to %d: %w (see /proc/sys/fs/nr_open)", need, err)
	}
	return nil
}
