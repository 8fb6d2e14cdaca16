package connlimit

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// serve accepts on a limited listener and holds every connection it
// returns until the test ends.
func serve(t *testing.T, cfg Config) string {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(inner, cfg)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			// Held until the client closes it.
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return inner.Addr().String()
}

// dial connects from the local address from and reports whether the
// server kept the connection (true) or closed it at once.
func dial(t *testing.T, addr, from string) (net.Conn, bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	return c, errors.As(err, &ne) && ne.Timeout()
}

func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		from []string
		want []bool
	}{
		{"per address", Config{MaxPerAddr: 2}, []string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2"}, []bool{true, true, false, true}},
		{"in all", Config{Max: 2}, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, []bool{true, true, false}},
		{"none", Config{}, []string{"127.0.0.1", "127.0.0.1", "127.0.0.1"}, []bool{true, true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, tc.cfg)
			for i, from := range tc.from {
				if _, kept := dial(t, addr, from); kept != tc.want[i] {
					t.Errorf("connection %d from %s kept: %v, want %v", i, from, kept, tc.want[i])
				}
			}
		})
	}
}

func TestReleaseOnClose(t *testing.T) {
	addr := serve(t, Config{MaxPerAddr: 1})
	c, kept := dial(t, addr, "127.0.0.1")
	if !kept {
		t.Fatal("first connection refused")
	}
	if _, kept := dial(t, addr, "127.0.0.1"); kept {
		t.Fatal("second connection kept over the limit")
	}
	c.Close()
	// The server notices the close asynchronously: poll with a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, kept := dial(t, addr, "127.0.0.1"); kept {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the address's slot was not given back after its connection closed")
		}
	}
}
