package sdk

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// listenAsUID returns a listener on a Unix socket at path whose listen(2)
// ran with effective uid uid, which is what SO_PEERCRED reports to the
// clients of a socket: the socket of a server run by that user. Only the
// calling thread changes its uid (a raw setresuid, not syscall.Setresuid,
// which changes every thread), and it changes back before it is unlocked.
func listenAsUID(t *testing.T, path string, uid int) net.Listener {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a socket of another uid needs root")
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		keep := uintptr(^uint32(0)) // (uid_t)-1: leave unchanged
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
			runtime.UnlockOSThread()
			errc <- e
			return
		}
		err := syscall.Listen(fd, 16)
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, keep, 0, keep); e == 0 {
			runtime.UnlockOSThread()
		} // else the thread ends with this goroutine, still locked
		errc <- err
	}()
	if err := <-errc; err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestSourceRefusesUntrustedServer: a Workload API socket served by
// another user (here uid 1001: not root, not this process) is refused at
// once, naming the socket and the uid, although it answers with valid
// SVIDs; naming the uid (option or environment) makes it trusted.
func TestSourceRefusesUntrustedServer(t *testing.T) {
	ca := newTestCA(t, td)
	path := filepath.Join(shortTempDir(t), "api.sock")
	api := serveFakeAPI(t, listenAsUID(t, path, 1001), path)
	api.Push(ca.response(t, []*x509svid.SVID{ca.svid(t, ordersID)}))
	t.Setenv(EnvEndpointSocket, "")
	t.Setenv(EnvBadgeSocket, "")
	t.Setenv(EnvServerUID, "")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := NewX509Source(ctx, WithAddress(path))
	var ue *UntrustedServerError
	if !errors.Is(err, ErrUntrustedServer) || !errors.As(err, &ue) || ue.UID != 1001 || ue.Socket != path ||
		!strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "uid 1001") {
		t.Fatalf("NewX509Source = %v, want an UntrustedServerError naming %s and uid 1001", err, path)
	}
	if ctx.Err() != nil {
		t.Fatal("NewX509Source waited for its context instead of refusing at once")
	}

	jctx, jcancel := context.WithTimeout(ctx, time.Second)
	defer jcancel()
	if _, err := NewJWTSource(jctx, WithAddress(path)); !errors.Is(err, ErrUntrustedServer) {
		t.Fatalf("NewJWTSource = %v, want ErrUntrustedServer", err)
	}

	for name, opt := range map[string][]SourceOption{
		"WithServerUID": {WithAddress(path), WithServerUID(1001)},
		EnvServerUID:    {WithAddress(path)},
	} {
		if name == EnvServerUID {
			t.Setenv(EnvServerUID, strconv.Itoa(1001))
		}
		src, err := NewX509Source(ctx, opt...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		src.Close()
	}

	t.Setenv(EnvServerUID, "badge")
	if _, err := NewX509Source(ctx, WithAddress(path)); err == nil || !strings.Contains(err.Error(), EnvServerUID) {
		t.Fatalf("invalid %s: %v, want an error naming it", EnvServerUID, err)
	}
}
