package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/logkey"
)

// liveSettings are the settings a running server takes on SIGHUP; every
// other setting is read when the server starts. The SVID and JWT
// lifetimes apply to credentials signed from then on; the node CAs
// (read again from their file on every SIGHUP, see serverConfig.onReload)
// to attestations from then on.
var liveSettings = []string{"log-level", "svid-ttl", "jwt-ttl", "node-ca"}

// ttlSetter is the part of the authority a reload changes.
type ttlSetter interface {
	SetTTLs(ca.TTLs) (ca.TTLs, error)
}

// watchReload reloads the configuration on every signal from c.hup until
// ctx is done. The settings in force start as those the server started
// with (c.started).
func watchReload(ctx context.Context, c serverConfig, auth ttlSetter, log *slog.Logger) {
	if c.hup == nil || c.reload == nil {
		return
	}
	running := c.started
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.hup:
		}
		next := c.reload()
		running = reload(running, next, auth, c.level, log)
		if c.onReload != nil && len(next.problems) == 0 {
			c.onReload(next)
		}
	}
}

// reload applies to the running server what changed from running (the
// values in force) to next (the configuration just read), and returns the
// values now in force. A configuration with problems changes nothing;
// settings not in liveSettings are refused with a message saying that a
// restart applies them; new lifetimes out of the running server's bounds
// are refused, and the log level applies on its own. Every outcome is
// logged.
func reload(running map[string]string, next *serverSettings, auth ttlSetter, level *slog.LevelVar, log *slog.Logger) map[string]string {
	if len(next.problems) > 0 {
		msgs := make([]string, len(next.problems))
		for i, p := range next.problems {
			msgs[i] = p.Error()
		}
		log.Error("configuration not reloaded: it has problems; nothing changed", slog.Any("problems", msgs))
		return running
	}
	want := next.values()
	var changed []string
	for k, v := range want {
		if running[k] != v {
			changed = append(changed, k)
		}
	}
	slices.Sort(changed)
	out := make(map[string]string, len(running))
	for k, v := range running {
		out[k] = v
	}
	change := func(k string) string { return fmt.Sprintf("%s: %s -> %s", k, show(running[k]), show(want[k])) }
	var applied, refused []string
	if slices.Contains(changed, "svid-ttl") || slices.Contains(changed, "jwt-ttl") {
		if _, err := auth.SetTTLs(ca.TTLs{SVID: next.c.svidTTL, JWT: next.c.jwtTTL}); err != nil {
			log.Error("configuration reload: lifetimes not changed", slog.Any(logkey.Error, err))
		} else {
			for _, k := range []string{"svid-ttl", "jwt-ttl"} {
				if slices.Contains(changed, k) {
					applied = append(applied, change(k))
					out[k] = want[k]
				}
			}
		}
	}
	old := level.Level()
	if slices.Contains(changed, "log-level") {
		// Log at the more verbose of the two levels, so that the line
		// saying what changed is seen, then settle on the new one.
		level.Set(min(old, next.level))
		applied = append(applied, change("log-level"))
		out["log-level"] = want["log-level"]
	}
	for _, k := range changed {
		if !slices.Contains(liveSettings, k) {
			refused = append(refused, change(k))
		}
	}
	if len(refused) > 0 {
		log.Warn("configuration reload: these settings change only on a restart; restart badge to apply them",
			slog.String("refused", strings.Join(refused, "; ")))
	}
	switch {
	case len(applied) > 0:
		log.Info("configuration reloaded", slog.String("changed", strings.Join(applied, "; ")))
	case len(refused) == 0:
		log.Info("configuration reloaded: nothing changed")
	}
	if slices.Contains(changed, "log-level") {
		level.Set(next.level)
	}
	return out
}

// show is a setting's value in a log line.
func show(v string) string {
	if v == "" {
		return `""`
	}
	return v
}
