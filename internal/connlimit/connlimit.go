// Package connlimit bounds the connections a TCP listener holds: in all,
// and per client IP address, so that one client cannot take every
// descriptor of the process.
//
// A connection over a limit is accepted and closed at once: it never holds
// a descriptor beyond Accept, and its client sees the connection closed
// rather than waiting in the kernel's backlog. Refusals are logged at most
// once per LogInterval per address.
//
// Invariant: the connections Accept has returned and not yet closed never
// exceed Max in all nor MaxPerAddr for one address.
package connlimit

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Config bounds a listener.
type Config struct {
	// Max bounds the open connections in all. 0: no limit.
	Max int
	// MaxPerAddr bounds the open connections of one IP address. 0: no
	// limit.
	MaxPerAddr int
	// Name names the listener in log lines.
	Name string
	// Logger receives the refusals. Nil discards them.
	Logger *slog.Logger
	// LogInterval is the least time between two log lines about the same
	// address. 0: one minute.
	LogInterval time.Duration
}

// Listen returns l with the limits of cfg applied to its connections.
func Listen(l net.Listener, cfg Config) net.Listener {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LogInterval <= 0 {
		cfg.LogInterval = time.Minute
	}
	return &listener{Listener: l, cfg: cfg, perAddr: map[string]int{}, logged: map[string]time.Time{}}
}

type listener struct {
	net.Listener
	cfg Config

	mu      sync.Mutex
	total   int
	perAddr map[string]int
	logged  map[string]time.Time // last log line per address
}

// Accept returns the next connection within the limits, closing those
// over them.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := hostOf(c.RemoteAddr())
		if reason := l.admit(addr); reason != "" {
			c.Close()
			l.refused(addr, reason)
			continue
		}
		return &conn{Conn: c, l: l, addr: addr}, nil
	}
}

// admit counts a connection from addr, or returns why it is refused.
func (l *listener) admit(addr string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.cfg.Max > 0 && l.total >= l.cfg.Max:
		return "the listener holds its limit of connections in all"
	case l.cfg.MaxPerAddr > 0 && l.perAddr[addr] >= l.cfg.MaxPerAddr:
		return "the address holds its limit of connections"
	}
	l.total++
	l.perAddr[addr]++
	return ""
}

func (l *listener) release(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perAddr[addr]--; l.perAddr[addr] <= 0 {
		delete(l.perAddr, addr)
	}
}

func (l *listener) refused(addr, reason string) {
	now := time.Now()
	l.mu.Lock()
	last, ok := l.logged[addr]
	log := !ok || now.Sub(last) >= l.cfg.LogInterval
	if log {
		if len(l.logged) > 4096 { // many addresses: forget the old ones
			for a, t := range l.logged {
				if now.Sub(t) >= l.cfg.LogInterval {
					delete(l.logged, a)
				}
			}
		}
		l.logged[addr] = now
	}
	l.mu.Unlock()
	if log {
		l.cfg.Logger.Warn("connection refused: "+reason, slog.String("listener", l.cfg.Name), slog.String("remote", addr),
			slog.Int("max", l.cfg.Max), slog.Int("max_per_address", l.cfg.MaxPerAddr), slog.Duration("report_interval", l.cfg.LogInterval))
	}
}

// AddressKey is the source a request is limited by: the IP address of
// the peer (remote is HOST:PORT, or a bare host), an IPv6 address by its
// /64 (what one host usually holds). Behind a proxy every request comes
// from the proxy's address.
func AddressKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.WithZone("").Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// hostOf is the IP address of a TCP peer, or the whole address otherwise.
func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if a == nil {
		return ""
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

type conn struct {
	net.Conn
	l    *listener
	addr string
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}
