package main

// What operators see of the running server: Prometheus metrics, health
// and readiness probes (--metrics-listen, and the public listener), and
// `badge status`.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/nodeapi"
	"github.com/badge-dev/badge/internal/connlimit"
	"github.com/badge-dev/badge/internal/jsonout"
	"github.com/badge-dev/badge/internal/metrics"
)

// Bounds of the metrics listener: a scraper or two and probes, not the
// world.
const (
	metricsMaxConns        = 64
	metricsMaxConnsPerAddr = 16
)

// ops is the server's metrics and readiness checks.
type ops struct {
	metrics   *metrics.Metrics
	readiness *metrics.Readiness
	// agents is the agent listener, once started.
	agents atomic.Pointer[nodeapi.Server]
}

// nodeConnections is admin.Config.NodeConnections.
func (o *ops) nodeConnections(name string) int {
	if a := o.agents.Load(); a != nil {
		return a.NodeConnections(name)
	}
	return 0
}

// newOps builds the metrics and readiness checks of a server: the
// database must commit a write and keep the free-space reserve
// (--min-free-mib) below which new X.509-SVIDs are refused; the signing
// intermediate must sign; the revocation list must be fresh.
func newOps(auth *ca.Authority, store storeOps, minFree uint64, errLog *metrics.ErrorLog) *ops {
	r := metrics.NewReadiness(0,
		metrics.Check{Name: "database", Run: func(ctx context.Context) error {
			if err := store.ping(ctx); err != nil {
				return err
			}
			if minFree == 0 || store.freeSpace == nil {
				return nil
			}
			free, err := store.freeSpace()
			if err != nil {
				return err
			}
			if free < minFree {
				return fmt.Errorf("%s free for the database, less than the %s reserve (--min-free-mib): new X.509-SVIDs are refused",
					mibString(free), mibString(minFree))
			}
			return nil
		}},
		metrics.Check{Name: "signing_key", Run: func(context.Context) error { return auth.CheckSigner() }},
		metrics.Check{Name: "crl", Run: func(context.Context) error { return auth.CheckCRL() }},
	)
	m := metrics.New(metrics.Config{
		Authority:   auth,
		DBStats:     store.stats,
		Compactions: store.compactions,
		Readiness:   r,
		Errors:      errLog,
		Version:     version,
	})
	return &ops{metrics: m, readiness: r}
}

func mibString(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// ready is admin.Config.Ready.
func (o *ops) ready(ctx context.Context) error { return o.readiness.Check(ctx).Err() }

// status is admin.Config.Status.
func (o *ops) status(ctx context.Context) any { return o.metrics.Status(ctx) }

// startMetricsListener serves /metrics, /healthz and /readyz over plain
// HTTP on addr (--metrics-listen) until ctx ends; a failure of the
// listener is sent on errc.
func startMetricsListener(addr string, o *ops, log *slog.Logger, errc chan<- error) (*http.Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           metrics.Handler(o.metrics, o.readiness),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		err := srv.Serve(connlimit.Listen(l, connlimit.Config{Max: metricsMaxConns, MaxPerAddr: metricsMaxConnsPerAddr, Name: "metrics", Logger: log}))
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("metrics listener: %w", err)
		}
	}()
	log.Info("metrics listener ready", slog.String("address", "http://"+l.Addr().String()),
		slog.String("paths", "/metrics /healthz /readyz"))
	return srv, nil
}

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("status", "[--json]")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "json"); err != nil {
		return err
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	var st metrics.Status
	if err := c.Status(ctx, &st); err != nil {
		return err
	}
	if *asJSON {
		return jsonout.Write(e.stdout, st)
	}
	return printStatus(e, st)
}

func printStatus(e *env, st metrics.Status) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	ready := "yes"
	if !st.Ready {
		ready = "NO"
	}
	fmt.Fprintf(tw, "badge\t%s\n", st.Version)
	fmt.Fprintf(tw, "trust domain\t%s\n", st.TrustDomain)
	fmt.Fprintf(tw, "up since\t%s (%s)\n", st.StartedAt.Format(time.RFC3339), time.Duration(st.UptimeSeconds)*time.Second)
	fmt.Fprintf(tw, "ready\t%s\n", ready)
	for _, c := range st.Checks {
		if c.OK {
			fmt.Fprintf(tw, "  %s\tok\n", c.Name)
		} else {
			fmt.Fprintf(tw, "  %s\tFAIL: %s\n", c.Name, c.Error)
		}
	}
	fmt.Fprintf(tw, "entries\t%d\n", st.Entries)
	fmt.Fprintf(tw, "open streams\t%d\n", st.OpenStreams)
	if a := st.AgentListener; a != nil {
		fmt.Fprintf(tw, "agent listener\t%s, %d nodes connected\n", a.Address, a.ConnectedNodes)
	}
	fmt.Fprintf(tw, "issued, last minute\t%d X.509-SVIDs, %d JWT-SVIDs\n", st.IssuedLastMinute.X509, st.IssuedLastMinute.JWT)
	fmt.Fprintf(tw, "revocations in force\t%d SPIFFE IDs, %d serials\n", st.Revocations.SPIFFEIDs, st.Revocations.Serials)
	fmt.Fprintf(tw, "revocation list\tnumber %d, next update %s\n", st.CRL.Number, st.CRL.NextUpdate.Format(time.RFC3339))
	if st.Database.Error != "" {
		fmt.Fprintf(tw, "database\tFAIL: %s\n", st.Database.Error)
	} else {
		fmt.Fprintf(tw, "database\t%s, %d serial records\n", mibString(uint64(max(st.Database.SizeBytes, 0))), st.Database.Serials)
	}
	fmt.Fprintln(tw, "\nKEY\tID\tNOT AFTER\tSIGNING")
	for _, k := range st.Keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", k.Kind, k.ID, k.NotAfter.Format(time.RFC3339), k.Signing)
	}
	fmt.Fprintln(tw)
	if len(st.LastErrors) == 0 {
		fmt.Fprintln(tw, "last errors\tnone")
	} else {
		fmt.Fprintln(tw, "LAST ERRORS")
		for _, le := range st.LastErrors {
			fmt.Fprintf(tw, "%s\t%s\n", le.Time.Format(time.RFC3339), strings.TrimSpace(le.Message+" "+le.Attrs))
		}
	}
	return tw.Flush()
}
