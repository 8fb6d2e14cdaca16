// Command orders is an example client secured with badge. Every few
// seconds it calls POST /pay on the payments service over mutual TLS,
// and it talks only to a server whose SPIFFE ID is
// spiffe://example.org/payments, whatever host answers at the address.
//
//	badge entry create --id spiffe://example.org/orders \
//	    --selector unix:path:$(command -v orders)
//	orders -payments https://127.0.0.1:8443
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/badge-dev/badge/sdk"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func main() {
	url := flag.String("payments", "https://127.0.0.1:8443", "base URL of the payments service")
	want := flag.String("payments-id", "spiffe://example.org/payments", "SPIFFE ID the payments service must have")
	every := flag.Duration("every", 2*time.Second, "time between payments")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *want, *every); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url, want string, every time.Duration) error {
	payments, err := spiffeid.FromString(want)
	if err != nil {
		return fmt.Errorf("-payments-id: %w", err)
	}
	log := slog.Default()

	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	src, err := sdk.NewX509Source(waitCtx, sdk.WithLogger(log))
	if err != nil {
		return err
	}
	defer src.Close()

	client := sdk.NewHTTPClient(src, sdk.AuthorizeID(payments))
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := pay(ctx, client, url); err != nil {
			var refused *sdk.AuthorizationError
			if errors.As(err, &refused) {
				log.Error("refused the server", "peer", refused.ID.String(), "reason", refused.Reason.String())
			} else {
				log.Error("payment failed", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func pay(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/pay", strings.NewReader(`{"amount":42}`))
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /pay: %s", resp.Status)
	}
	slog.Info("paid", "answer", strings.TrimSpace(string(body)))
	return nil
}
