package agent

import (
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/badge-dev/badge/internal/nodeproto"
)

// FuzzNewState: no Sync update, however malformed, panics the agent; one
// that is accepted has a trust domain, a bundle, and entries that each
// have a selector.
func FuzzNewState(f *testing.F) {
	for _, u := range []*nodeproto.SyncUpdate{
		{TrustDomain: "example.org"},
		{TrustDomain: "example.org", Bundle: [][]byte{{0x30, 0x03, 0x02, 0x01, 0x01}}},
		{TrustDomain: "example.org", Entries: []*nodeproto.Entry{{Id: "e", SpiffeId: "spiffe://example.org/w", Selectors: []string{"unix:uid:1"}}}},
		{TrustDomain: "example.org", Crl: []byte{0x30, 0x00}},
	} {
		b, _ := proto.Marshal(u)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var u nodeproto.SyncUpdate
		if proto.Unmarshal(data, &u) != nil {
			return
		}
		s, err := newState(&u, slog.New(slog.DiscardHandler))
		if err != nil {
			return
		}
		if s.td.IsZero() || len(s.roots) == 0 {
			t.Fatalf("accepted an update without trust domain or bundle: %v", &u)
		}
		for _, e := range s.entries {
			if len(e.selectors) == 0 || e.spiffeID.TrustDomain() != s.td {
				t.Fatalf("accepted entry %+v", e)
			}
		}
	})
}

// FuzzParseIdentity: a corrupt identity file is an error, never a panic.
func FuzzParseIdentity(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"node":"a","attested_by":"join_token","key":"","svid":[],"bundle":[]}`))
	f.Add([]byte(`{"node":"a","attested_by":"x509pop","key":"MAA=","svid":["MAA="],"bundle":["MAA="]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := parseIdentity(data)
		if err == nil && (id.key == nil || len(id.chain) == 0 || id.node == "") {
			t.Fatalf("accepted %q", data)
		}
	})
}
