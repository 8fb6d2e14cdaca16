package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestLimitFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the usage error; "" for valid
	}{
		{nil, ""},
		{[]string{"--uid-max-conns", "0", "--uid-sign-rate", "0", "--listen-max-conns-per-addr", "0", "--min-free-mib", "0"}, ""},
		{[]string{"--uid-max-conns", "-1"}, "--uid-max-conns -1"},
		{[]string{"--uid-sign-rate", "-5"}, "--uid-sign-rate -5"},
		{[]string{"--uid-sign-burst", "0"}, "--uid-sign-burst 0"},
		{[]string{"--listen-max-conns-per-addr", "-1"}, "--listen-max-conns-per-addr -1"},
		{[]string{"--handshake-timeout", "1ms"}, "--handshake-timeout 1ms"},
		{[]string{"--handshake-timeout", "1h"}, "--handshake-timeout 1h0m0s"},
		{[]string{"--min-free-mib", "99999999999"}, "--min-free-mib 99999999999"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("server", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var l limitFlags
			l.register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := l.validate()
			var ue usageError
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid flags refused: %v", err)
			case tc.want != "" && (!errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want a usage error naming %q", err, tc.want)
			}
		})
	}
}

func TestLimitFlagsMapping(t *testing.T) {
	l := limitFlags{uidMaxConns: 0, uidSignRate: 0, uidSignBurst: 1, minFreeMiB: 8}
	lim := l.workload(100, nil)
	if lim.ConnsPerUID >= 0 || lim.SignRate >= 0 {
		t.Errorf("0 (no limit) on the command line became ConnsPerUID %d, SignRate %g; want negative (no limit)", lim.ConnsPerUID, lim.SignRate)
	}
	if lim.MinFreeSpace != 8<<20 || lim.MaxConns != 100 {
		t.Errorf("MinFreeSpace %d, MaxConns %d", lim.MinFreeSpace, lim.MaxConns)
	}
	if got := l.publicPerAddr(); got >= 0 {
		t.Errorf("--listen-max-conns-per-addr 0 became %d, want negative (no limit)", got)
	}
	if got := ballastSize(128 << 20); got != 16<<20 {
		t.Errorf("ballast for 128 MiB: %d", got)
	}
	if got := ballastSize(4 << 20); got != 1<<20 {
		t.Errorf("ballast for 4 MiB: %d", got)
	}
}
