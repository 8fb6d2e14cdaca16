package metrics

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultErrorLogSize is how many of the last errors `badge status` shows.
const DefaultErrorLogSize = 10

// LoggedError is one error record of the server's log.
type LoggedError struct {
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
	// Attrs are the record's attributes as key=value text.
	Attrs string `json:"attrs,omitempty"`
}

// ErrorLog keeps the last error records of a logger for `badge status`.
// Wrap the server's log handler with Handler.
type ErrorLog struct {
	mu   sync.Mutex
	ring []LoggedError
	next int
	full bool
}

// NewErrorLog returns an ErrorLog keeping the last n errors (0:
// DefaultErrorLogSize).
func NewErrorLog(n int) *ErrorLog {
	if n <= 0 {
		n = DefaultErrorLogSize
	}
	return &ErrorLog{ring: make([]LoggedError, n)}
}

// Last returns the kept errors, oldest first.
func (l *ErrorLog) Last() []LoggedError {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.full {
		return slices.Clone(l.ring[:l.next])
	}
	return append(slices.Clone(l.ring[l.next:]), l.ring[:l.next]...)
}

func (l *ErrorLog) add(e LoggedError) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = e
	l.next++
	if l.next == len(l.ring) {
		l.next, l.full = 0, true
	}
}

// Handler returns h, also keeping every record at level Error or above.
func (l *ErrorLog) Handler(h slog.Handler) slog.Handler {
	return &errorHandler{next: h, log: l}
}

type errorHandler struct {
	next   slog.Handler
	log    *ErrorLog
	prefix string // attributes added by WithAttrs, rendered
	group  string // group prefix of further attributes
}

func (h *errorHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= slog.LevelError || h.next.Enabled(ctx, level)
}

func (h *errorHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		var b strings.Builder
		b.WriteString(h.prefix)
		r.Attrs(func(a slog.Attr) bool {
			appendAttr(&b, h.group, a)
			return true
		})
		h.log.add(LoggedError{Time: r.Time, Message: r.Message, Attrs: strings.TrimSpace(b.String())})
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *errorHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range attrs {
		appendAttr(&b, h.group, a)
	}
	return &errorHandler{next: h.next.WithAttrs(attrs), log: h.log, prefix: b.String(), group: h.group}
}

func (h *errorHandler) WithGroup(name string) slog.Handler {
	return &errorHandler{next: h.next.WithGroup(name), log: h.log, prefix: h.prefix, group: h.group + name + "."}
}

func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			appendAttr(b, group+a.Key+".", g)
		}
		return
	}
	b.WriteString(" ")
	b.WriteString(group + a.Key)
	b.WriteString("=")
	b.WriteString(a.Value.String())
}
