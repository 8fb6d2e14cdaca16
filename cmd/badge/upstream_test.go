package main

import (
	"strings"
	"testing"
)

// TestUpstreamFlagsCheck: every missing, misplaced or relative upstream
// flag is a problem naming the flag.
func TestUpstreamFlagsCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		u    upstreamFlags
		want []string // "key: message fragment", in order
	}{
		{"none", upstreamFlags{}, nil},
		{"disk", upstreamFlags{kind: "disk", certFile: "/c", keyFile: "/k"}, nil},
		{"disk missing key", upstreamFlags{kind: "disk", certFile: "/c"}, []string{"upstream-key: is required with --upstream disk"}},
		{"disk relative", upstreamFlags{kind: "disk", certFile: "c", keyFile: "/k"}, []string{"upstream-cert: must be an absolute path"}},
		{"disk with a step-ca flag", upstreamFlags{kind: "disk", certFile: "/c", keyFile: "/k", url: "https://ca"}, []string{"upstream-url: applies only to --upstream stepca"}},
		{"flags without upstream", upstreamFlags{keyFile: "/k"}, []string{"upstream-key: applies only to --upstream disk"}},
		{"stepca jwk", upstreamFlags{kind: "stepca", url: "https://ca", rootFile: "/r", provisioner: "p", passwordFile: "/pw"}, nil},
		{"stepca x5c", upstreamFlags{kind: "stepca", url: "https://ca", rootFile: "/r", provisioner: "p", x5cCert: "/c", x5cKey: "/k"}, nil},
		{"stepca no credential", upstreamFlags{kind: "stepca", url: "https://ca", rootFile: "/r", provisioner: "p"}, []string{"upstream-password-file: is required"}},
		{"stepca half x5c", upstreamFlags{kind: "stepca", url: "https://ca", rootFile: "/r", provisioner: "p", x5cCert: "/c"}, []string{"upstream-x5c-cert: an X5C provisioner needs both"}},
		{"stepca missing", upstreamFlags{kind: "stepca", passwordFile: "/pw"}, []string{"upstream-url: is required", "upstream-root: is required", "upstream-provisioner: is required"}},
		{"stepca provisioner is a name", upstreamFlags{kind: "stepca", url: "https://ca", rootFile: "/r", provisioner: "badge", passwordFile: "pw"}, []string{"upstream-password-file: must be an absolute path"}},
		{"unknown", upstreamFlags{kind: "vault"}, []string{"upstream: want disk or stepca"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range tc.u.check() {
				got = append(got, p.key+": "+p.msg)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d like %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("problem %d: %q, want %q…", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestUpstreamStepCAWithoutTag: a binary built without -tags stepca
// refuses --upstream stepca, naming the tag.
func TestUpstreamStepCAWithoutTag(t *testing.T) {
	saved := newStepCAUpstream
	newStepCAUpstream = nil
	defer func() { newStepCAUpstream = saved }()
	u := upstreamFlags{kind: "stepca", url: "https://ca", rootFile: "/r", provisioner: "p", passwordFile: "/pw"}
	ps := u.check()
	if len(ps) != 1 || ps[0].key != "upstream" || !strings.Contains(ps[0].msg, "-tags stepca") {
		t.Fatalf("problems %+v, want one on upstream naming -tags stepca", ps)
	}
	if _, err := u.open(); err == nil || !strings.Contains(err.Error(), "-tags stepca") {
		t.Fatalf("open: %v, want an error naming -tags stepca", err)
	}
}
