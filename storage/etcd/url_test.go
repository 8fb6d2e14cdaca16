package etcd

import (
	"slices"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string // a part of the error; "" for success
	}{
		{in: "etcd://127.0.0.1:2379", want: []string{"127.0.0.1:2379"}},
		{in: "etcd://a.example:2379,b.example:2380,[::1]:2379", want: []string{"a.example:2379", "b.example:2380", "[::1]:2379"}},
		{in: "etcd://", wantErr: "no endpoint"},
		{in: "bbolt", wantErr: "want etcd://"},
		{in: "https://h:2379", wantErr: "want etcd://"},
		{in: "etcd://h", wantErr: `endpoint "h": want HOST:PORT`},
		{in: "etcd://h:2379,", wantErr: `endpoint "": want HOST:PORT`},
		{in: "etcd://:2379", wantErr: "has no host"},
		{in: "etcd://h:http", wantErr: `port "http" is not a number`},
		{in: "etcd://h:0", wantErr: `port "0" is not a number from 1 to 65535`},
		{in: "etcd://h:65536", wantErr: "is not a number from 1 to 65535"},
		{in: "etcd://h:2379/badge", wantErr: `unexpected '/'`},
		{in: "etcd://user@h:2379", wantErr: `unexpected '@'`},
		{in: "etcd://h:2379?x=1", wantErr: `unexpected '?'`},
	} {
		got, err := ParseURL(tc.in)
		switch {
		case tc.wantErr == "" && (err != nil || !slices.Equal(got, tc.want)):
			t.Errorf("ParseURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.in)):
			t.Errorf("ParseURL(%q) = %q, %v; want an error naming the URL and containing %q", tc.in, got, err, tc.wantErr)
		}
	}
}

// FuzzParseURL: any input gives endpoints or an error naming it, never a
// panic, and every endpoint it accepts parses again alone.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"etcd://127.0.0.1:2379", "etcd://a:1,b:2", "etcd://[::1]:2379", "etcd://h", "etcd://", "etcd://h:2379/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		eps, err := ParseURL(in)
		if err != nil {
			if len(eps) != 0 {
				t.Fatalf("ParseURL(%q) returned endpoints with an error", in)
			}
			return
		}
		if len(eps) == 0 {
			t.Fatalf("ParseURL(%q) = no endpoints, no error", in)
		}
		for _, ep := range eps {
			again, err := ParseURL("etcd://" + ep)
			if err != nil || len(again) != 1 || again[0] != ep {
				t.Fatalf("endpoint %q of %q does not parse alone: %v, %v", ep, in, again, err)
			}
		}
	})
}
