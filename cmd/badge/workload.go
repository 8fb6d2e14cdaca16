package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/internal/atomicfile"
	"github.com/badge-dev/badge/internal/jsonout"
	"github.com/badge-dev/badge/internal/socketpath"
)

// svidJSON is the stable JSON form of one X.509-SVID (no private key).
type svidJSON struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Hint      string    `json:"hint,omitempty"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	Chain     int       `json:"chain_length"`
}

func runSVIDFetch(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("svid fetch", "[--socket PATH] [--write DIR] [--json]")
	sockFlag := fs.String("socket", "", "Workload API socket `path` (default: $SPIFFE_ENDPOINT_SOCKET, $BADGE_SOCKET, "+socketpath.ClientDefaultHelp(socketpath.WorkloadName)+")")
	dir := fs.String("write", "", "write svid.pem, svid_key.pem (0600) and svid_bundle.pem of the default SVID into `DIR`")
	asJSON := fs.Bool("json", false, "print the SVIDs as stable JSON")
	timeout := durationVar(fs, "timeout", 10*time.Second, "give up after this long")
	if err := e.parseNoArgs(fs, args, "socket", "write", "json", "timeout"); err != nil {
		return err
	}
	sock, err := e.workloadSocket(*sockFlag)
	if err != nil {
		return err
	}
	dial, explain, err := e.trustedDialer(sock)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	xc, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+sock), workloadapi.WithDialOptions(dial))
	if err != nil {
		if refused := explain(err); refused != err {
			return fmt.Errorf("fetching X.509-SVID from %s: %w", sock, refused)
		}
		return fetchError(sock, *timeout, err)
	}
	if len(xc.SVIDs) == 0 {
		return errors.New("the Workload API returned no SVID")
	}
	if *dir != "" {
		if err := writeSVIDFiles(*dir, xc); err != nil {
			return err
		}
	}
	out := make([]svidJSON, len(xc.SVIDs))
	for i, s := range xc.SVIDs {
		leaf := s.Certificates[0]
		out[i] = svidJSON{
			SPIFFEID: s.ID.String(), Hint: s.Hint, Serial: fmt.Sprintf("%x", leaf.SerialNumber),
			NotBefore: leaf.NotBefore.UTC(), NotAfter: leaf.NotAfter.UTC(), DNSNames: leaf.DNSNames, Chain: len(s.Certificates),
		}
	}
	if *asJSON {
		return jsonout.Write(e.stdout, out)
	}
	for _, s := range out {
		fmt.Fprintf(e.stdout, "SPIFFE ID:  %s\nSerial:     %s\nNot before: %s\nNot after:  %s\n\n",
			s.SPIFFEID, s.Serial, s.NotBefore.Format(time.RFC3339), s.NotAfter.Format(time.RFC3339))
	}
	if *dir != "" {
		fmt.Fprintf(e.stdout, "wrote svid.pem, svid_key.pem and svid_bundle.pem to %s\n", *dir)
	}
	return nil
}

// fetchError turns a failed fetch into one sentence that says what to do:
// the server's own refusal as it is, a socket nobody answers on as the
// likely cause, anything else with its gRPC code.
func fetchError(sock string, timeout time.Duration, err error) error {
	st := status.Convert(err)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || st.Code() == codes.DeadlineExceeded:
		return fmt.Errorf("no answer from the Workload API at %s within %s: is badge server running and healthy (badge healthcheck)?", sock, timeout)
	case st.Code() == codes.PermissionDenied:
		return errors.New(st.Message())
	case st.Code() == codes.Unavailable:
		c, derr := net.Dial("unix", sock)
		if derr == nil {
			c.Close()
			break
		}
		if errors.Is(derr, syscall.EACCES) {
			return fmt.Errorf("permission denied on the Workload API socket %s: its directory or the socket is not open to this user", sock)
		}
		if errors.Is(derr, syscall.ENOENT) || errors.Is(derr, syscall.ECONNREFUSED) {
			return fmt.Errorf("cannot reach the Workload API at %s: is badge server or badge agent running? (if it listens elsewhere, set --socket or SPIFFE_ENDPOINT_SOCKET)", sock)
		}
	}
	return fmt.Errorf("fetching X.509-SVID from %s: %s (%s)", sock, st.Message(), st.Code())
}

// writeSVIDFiles writes the default SVID in the file layout of spiffe-helper.
func writeSVIDFiles(dir string, xc *workloadapi.X509Context) error {
	svid := xc.DefaultSVID()
	certs, key, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("encoding SVID: %w", err)
	}
	b, err := xc.Bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return err
	}
	bundle, err := b.Marshal()
	if err != nil {
		return fmt.Errorf("encoding bundle: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{"svid_key.pem", key, 0o600},
		{"svid.pem", certs, 0o644},
		{"svid_bundle.pem", bundle, 0o644},
	} {
		if err := atomicfile.WriteFile(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("writing %s: %w", f.name, err)
		}
	}
	return nil
}

func runBundleShow(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("bundle show", "[--format pem|jwks]")
	format := fs.String("format", "pem", "pem or jwks")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "format"); err != nil {
		return err
	}
	if *format != "pem" && *format != "jwks" {
		return usagef("invalid --format %q: want pem or jwks", *format)
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	data, err := c.Bundle(ctx, *format)
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(data)
	return err
}

func runHealthcheck(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("healthcheck", "[--socket PATH] [--admin-socket PATH]")
	sockFlag := fs.String("socket", "", "Workload API socket `path`")
	asock := adminFlags(fs)
	timeout := durationVar(fs, "timeout", 5*time.Second, "give up after this long")
	if err := e.parseNoArgs(fs, args, "socket", "timeout"); err != nil {
		return err
	}
	sock, err := e.workloadSocket(*sockFlag)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// A host that runs `badge agent` runs no server and has no admin
	// socket: with none given and none at the default path, the Workload
	// API alone is checked (the agent answers it only once its server has
	// sent the node's state).
	apath, err := socketpath.Admin(*asock, e.getenv)
	if err != nil {
		return usageError{err}
	}
	if _, serr := os.Lstat(apath); *asock != "" || e.getenv(socketpath.EnvAdmin) != "" || serr == nil {
		c, err := e.adminClient(*asock)
		if err != nil {
			return err
		}
		if err := c.Health(ctx); err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
	}
	dial, explain, err := e.trustedDialer(sock)
	if err != nil {
		return err
	}
	if err := probeWorkloadAPI(ctx, sock, dial); err != nil {
		err = explain(err)
		return fmt.Errorf("workload API: %w", err)
	}
	fmt.Fprintln(e.stdout, "ok")
	return nil
}

var version = "dev"

func runVersion(_ context.Context, e *env, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	fmt.Fprintf(e.stdout, "badge %s\n", version)
	return nil
}
