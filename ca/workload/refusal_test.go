package workload_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/badge-dev/badge/ca"
	badgeworkload "github.com/badge-dev/badge/ca/workload"
)

// lines returns the logged lines that contain s.
func (b *logBuffer) lines(s string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

func withLog(b *logBuffer) func(*badgeworkload.Config) {
	return func(c *badgeworkload.Config) { c.Logger = slog.New(slog.NewTextHandler(b, nil)) }
}

// fetchErr makes one FetchX509SVID call and returns the error that ends it.
func fetchErr(t *testing.T, f *fixture) error {
	t.Helper()
	s, err := f.api.FetchX509SVID(withHeader(timeout(t)), &workload.X509SVIDRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	return err
}

// TestRefusalSaysBlockedOrUnregistered: a caller refused because its ID is
// blocked is told so, and so is the operator, distinctly from a caller
// that has no entry; the operator's log has one line per uid per minute.
func TestRefusalSaysBlockedOrUnregistered(t *testing.T) {
	uid, gid, pid := os.Getuid(), os.Getgid(), os.Getpid()
	who := fmt.Sprintf("(pid %d, uid %d, gid %d)", pid, uid, gid)
	tests := []struct {
		name    string
		setup   func(t *testing.T, f *fixture)
		message string
		logged  string
	}{
		{
			name:  "not registered",
			setup: func(t *testing.T, f *fixture) { f.create(t, "spiffe://example.org/other", "unix:uid:4242") },
			message: "no identity issued: no registration entry matches the caller " + who +
				fmt.Sprintf("; an admin registers one with: badge entry create --id SPIFFE_ID --selector unix:uid:%d", uid),
			logged: `reason="not registered"`,
		},
		{
			name: "blocked",
			setup: func(t *testing.T, f *fixture) {
				f.create(t, "spiffe://example.org/web", mySelector())
				if _, err := f.auth.RevokeID(context.Background(), ca.RevokeRequest{SPIFFEID: "spiffe://example.org/web", Block: true}); err != nil {
					t.Fatal(err)
				}
			},
			message: "no identity issued: the caller " + who +
				" matches only blocked IDs: spiffe://example.org/web; an admin lifts a block with: badge unblock --id spiffe://example.org/web",
			logged: `reason=blocked spiffe_id=spiffe://example.org/web`,
		},
		{
			// The blocked entry needs a kind of selector (the executable's
			// path) that no unblocked entry uses: the refusal attests it.
			name: "blocked by path",
			setup: func(t *testing.T, f *fixture) {
				exe, err := os.Executable()
				if err != nil {
					t.Fatal(err)
				}
				f.create(t, "spiffe://example.org/other", "unix:uid:4242")
				f.create(t, "spiffe://example.org/tool", "unix:path:"+exe)
				if _, err := f.auth.RevokeID(context.Background(), ca.RevokeRequest{SPIFFEID: "spiffe://example.org/tool", Block: true}); err != nil {
					t.Fatal(err)
				}
			},
			message: "no identity issued: the caller " + who +
				" matches only blocked IDs: spiffe://example.org/tool; an admin lifts a block with: badge unblock --id spiffe://example.org/tool",
			logged: `reason=blocked spiffe_id=spiffe://example.org/tool`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logBuffer
			f := start(t, nil, withLog(&logs))
			tt.setup(t, f)
			for i := range 3 {
				err := fetchErr(t, f)
				if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != tt.message {
					t.Fatalf("call %d: FetchX509SVID = %v, want PermissionDenied %q", i, err, tt.message)
				}
			}
			got := logs.lines("Workload API caller refused")
			if len(got) != 1 {
				t.Fatalf("three refusals within a minute logged %d lines, want 1:\n%s", len(got), strings.Join(got, "\n"))
			}
			want := fmt.Sprintf("pid=%d uid=%d gid=%d %s suppressed=0", pid, uid, gid, tt.logged)
			if !strings.Contains(got[0], want) {
				t.Errorf("refusal logged as\n%s\nwant it to contain\n%s", got[0], want)
			}
		})
	}
}

// TestValidateJWTSVIDWithoutIdentity: as in SPIRE, an attested caller with
// no entry may validate tokens; one whose only entries are blocked may not.
func TestValidateJWTSVIDWithoutIdentity(t *testing.T) {
	f := start(t, nil)
	entry := f.create(t, "spiffe://example.org/web", mySelector())
	c := f.client(t)
	ctx := timeout(t)
	tok, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.auth.DeleteEntry(ctx, entry); err != nil {
		t.Fatal(err)
	}
	got, err := c.ValidateJWTSVID(ctx, tok.Marshal(), "orders")
	if err != nil {
		t.Fatalf("ValidateJWTSVID by a caller with no entry: %v, want the token accepted", err)
	}
	if got.ID != spiffeid.RequireFromString("spiffe://example.org/web") {
		t.Errorf("ValidateJWTSVID returned %s", got.ID)
	}

	// A caller matching only a blocked ID is refused, as for everything else.
	f.create(t, "spiffe://example.org/validator", mySelector())
	if _, err := f.auth.RevokeID(ctx, ca.RevokeRequest{SPIFFEID: "spiffe://example.org/validator", Block: true}); err != nil {
		t.Fatal(err)
	}
	_, err = f.api.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Svid: tok.Marshal(), Audience: "orders"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "matches only blocked IDs: spiffe://example.org/validator") {
		t.Fatalf("ValidateJWTSVID by a blocked caller = %v, want PermissionDenied naming the blocked ID", err)
	}
	// ... unless it also matches an entry that is not blocked.
	f.create(t, "spiffe://example.org/reader", mySelector())
	if _, err := f.api.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Svid: tok.Marshal(), Audience: "orders"}); err != nil {
		t.Fatalf("ValidateJWTSVID by a caller with a blocked and an unblocked entry: %v", err)
	}
}
