// Command payments is an example service secured with badge. It serves
// HTTPS with mutual TLS on its own SPIFFE identity and lets only
// spiffe://example.org/orders call POST /pay. Its certificate rotates
// underneath it; nothing is restarted.
//
// Run it next to a badge server, with a registration entry for this
// binary:
//
//	badge entry create --id spiffe://example.org/payments \
//	    --selector unix:path:$(command -v payments)
//	payments -listen 127.0.0.1:8443
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/badge-dev/badge/sdk"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8443", "address to serve HTTPS on")
	allow := flag.String("allow", "spiffe://example.org/orders", "the only SPIFFE ID allowed to POST /pay")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *allow); err != nil {
		fmt.Fprintln(os.Stderr, "payments:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen, allow string) error {
	orders, err := spiffeid.FromString(allow)
	if err != nil {
		return fmt.Errorf("-allow: %w", err)
	}
	log := slog.Default()

	// Connect to the Workload API (SPIFFE_ENDPOINT_SOCKET, BADGE_SOCKET or
	// /run/badge/workload.sock) and wait for our first certificate.
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	src, err := sdk.NewX509Source(waitCtx, sdk.WithLogger(log))
	if err != nil {
		return err
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	// Only orders may pay; any workload of our trust domain may check
	// health.
	mux.Handle("POST /pay", sdk.RequirePeer(sdk.AuthorizeID(orders), http.HandlerFunc(pay)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	srv := sdk.NewHTTPServer(listen, mux, src, sdk.AuthorizeMemberOf(svid.ID.TrustDomain()))

	// Close open connections of callers revoked after they connected.
	watcher := sdk.NewConnWatcher(src)
	watcher.WatchHTTPServer(srv)
	go watcher.Run(ctx, src.Changed)

	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
	}()
	// The address actually bound: with -listen 127.0.0.1:0, the port picked.
	log.Info("payments listening", "addr", l.Addr().String(), "id", svid.ID.String(), "allow", orders.String())
	if err := srv.ServeTLS(l, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func pay(w http.ResponseWriter, r *http.Request) {
	caller, _ := sdk.PeerID(r) // RequirePeer already checked it
	fmt.Fprintf(w, "payment accepted from %s\n", caller)
}
