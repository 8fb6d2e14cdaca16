package metrics

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Defaults of Readiness.
const (
	// DefaultCheckTimeout is how long a readiness check may take before
	// it counts as failed (a database on a frozen or hung disk).
	DefaultCheckTimeout = 2 * time.Second
	// ReadyCacheFor is how long a readiness result is reused: a probe
	// costs a database sync, and /readyz is on the public listener.
	ReadyCacheFor = time.Second
)

// Check is one readiness condition.
type Check struct {
	// Name names the condition in reports: database, signing_key, crl.
	Name string
	// Run returns nil when the condition holds, else what is wrong.
	Run func(ctx context.Context) error
}

// CheckResult is the outcome of one Check.
type CheckResult struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Report is the outcome of every check.
type Report struct {
	Ready  bool          `json:"ready"`
	Checks []CheckResult `json:"checks"`
}

// Err returns nil for a ready report, else an error naming the failed checks.
func (r Report) Err() error {
	if r.Ready {
		return nil
	}
	msg := "not ready:"
	for _, c := range r.Checks {
		if !c.OK {
			msg += fmt.Sprintf(" %s: %s;", c.Name, c.Error)
		}
	}
	return fmt.Errorf("%s", msg[:len(msg)-1])
}

// Readiness runs the readiness checks for /readyz, badge_ready, `badge
// healthcheck` and `badge status`. At most one round of checks runs at a
// time and its result is reused for ReadyCacheFor, so that probes cannot
// make the daemon sync its database in a loop. A check that has not
// answered within the timeout counts as failed; it keeps running, and no
// second copy of it starts until it returns.
type Readiness struct {
	checks  []Check
	timeout time.Duration

	mu       sync.Mutex
	last     Report
	lastAt   time.Time
	inflight chan struct{} // closed when the running round ends; nil when none runs
	partial  []CheckResult // results of the running round; Name set, OK false, Error "" while pending
}

// NewReadiness returns a Readiness running checks, each failing after
// timeout (0: DefaultCheckTimeout).
func NewReadiness(timeout time.Duration, checks ...Check) *Readiness {
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	return &Readiness{checks: checks, timeout: timeout}
}

// Check returns the outcome of the checks, at most ReadyCacheFor old.
func (r *Readiness) Check(ctx context.Context) Report {
	r.mu.Lock()
	if !r.lastAt.IsZero() && time.Since(r.lastAt) < ReadyCacheFor {
		rep := r.last
		r.mu.Unlock()
		return rep
	}
	if r.inflight == nil {
		r.start()
	}
	done := r.inflight
	r.mu.Unlock()

	t := time.NewTimer(r.timeout)
	defer t.Stop()
	select {
	case <-done:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.last
	case <-t.C:
	case <-ctx.Done():
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-done:
		return r.last
	default:
	}
	rep := Report{Ready: false, Checks: make([]CheckResult, len(r.partial))}
	for i, c := range r.partial {
		if !c.OK && c.Error == "" {
			c.Error = fmt.Sprintf("no answer within %s", r.timeout)
		}
		rep.Checks[i] = c
	}
	return rep
}

// start runs a round of checks in the background; r.mu is held.
func (r *Readiness) start() {
	done := make(chan struct{})
	r.inflight = done
	r.partial = make([]CheckResult, len(r.checks))
	for i, c := range r.checks {
		r.partial[i] = CheckResult{Name: c.Name}
	}
	var wg sync.WaitGroup
	for i, c := range r.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
			defer cancel()
			err := c.Run(ctx)
			r.mu.Lock()
			defer r.mu.Unlock()
			if err != nil {
				r.partial[i].Error = err.Error()
			} else {
				r.partial[i].OK = true
			}
		}()
	}
	go func() {
		wg.Wait()
		r.mu.Lock()
		defer r.mu.Unlock()
		rep := Report{Ready: true, Checks: r.partial}
		for _, c := range r.partial {
			rep.Ready = rep.Ready && c.OK
		}
		r.last, r.lastAt, r.inflight, r.partial = rep, time.Now(), nil, nil
		close(done)
	}()
}

// Healthz answers 200 "ok" while the process serves HTTP: liveness.
func Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "ok")
}

// Readyz answers 200 when every check of r passes and 503 otherwise,
// with one line per check: "ok NAME" or "fail NAME: what is wrong".
func (r *Readiness) Readyz(w http.ResponseWriter, req *http.Request) {
	rep := r.Check(req.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if rep.Ready {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	for _, c := range rep.Checks {
		if c.OK {
			fmt.Fprintf(w, "ok %s\n", c.Name)
		} else {
			fmt.Fprintf(w, "fail %s: %s\n", c.Name, c.Error)
		}
	}
}

// Handler serves /metrics, /healthz and /readyz: what --metrics-listen
// serves. r may be nil: /readyz then answers like /healthz.
func Handler(m *Metrics, r *Readiness) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", Healthz)
	if r != nil {
		mux.HandleFunc("GET /readyz", r.Readyz)
	} else {
		mux.HandleFunc("GET /readyz", Healthz)
	}
	return mux
}
