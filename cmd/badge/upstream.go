package main

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/upstream"
)

// upstreamFlags are the flags of an upstream authority (ca.Config.Upstream).
type upstreamFlags struct {
	kind         string // "", "disk" or "stepca"
	certFile     string
	keyFile      string
	url          string
	rootFile     string
	provisioner  string
	passwordFile string
	x5cCert      string
	x5cKey       string
}

// stepCAConfig is what --upstream stepca needs.
type stepCAConfig struct {
	url, rootFile, provisioner, passwordFile, x5cCert, x5cKey string
}

// newStepCAUpstream makes the step-ca upstream; nil in a binary built
// without the stepca tag (see upstream_stepca.go), which keeps
// smallstep/certificates and its dependencies (about 17 MB) out of the
// default build.
var newStepCAUpstream func(stepCAConfig) (ca.Upstream, error)

func (u *upstreamFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&u.kind, "upstream", "", "upstream `authority` that signs the intermediates instead of a root of badge's own: "+
		"disk (--upstream-cert, --upstream-key) or stepca (--upstream-url, --upstream-root, --upstream-provisioner); the bundle is then the upstream's root")
	fs.StringVar(&u.certFile, "upstream-cert", "", "with --upstream disk: PEM `file` of the CA certificate that signs, then its chain up to and including the root")
	fs.StringVar(&u.keyFile, "upstream-key", "", "with --upstream disk: PEM `file` of its private key (owned by the server's uid, mode 0600)")
	fs.StringVar(&u.url, "upstream-url", "", "with --upstream stepca: the step-ca's https `URL`")
	fs.StringVar(&u.rootFile, "upstream-root", "", "with --upstream stepca: PEM `file` of the step-ca's root certificate (authenticates the step-ca; the trust bundle)")
	fs.StringVar(&u.provisioner, "upstream-provisioner", "", "with --upstream stepca: `name` of the JWK or X5C provisioner; its template must allow a CA certificate")
	fs.StringVar(&u.passwordFile, "upstream-password-file", "", "with --upstream stepca: `file` holding the JWK provisioner's password (or the X5C key's); owned by the server's uid, mode 0600")
	fs.StringVar(&u.x5cCert, "upstream-x5c-cert", "", "with --upstream stepca: PEM `file` of an X5C provisioner certificate (instead of a JWK provisioner)")
	fs.StringVar(&u.x5cKey, "upstream-x5c-key", "", "with --upstream stepca: PEM `file` of the X5C provisioner certificate's key (mode 0600)")
}

// check returns a problem for every flag missing, misplaced or not an
// absolute path.
func (u *upstreamFlags) check() []problem {
	var out []problem
	bad := func(key, value, format string, args ...any) {
		out = append(out, problem{key: key, value: value, msg: fmt.Sprintf(format, args...)})
	}
	disk := []struct{ key, v string }{{"upstream-cert", u.certFile}, {"upstream-key", u.keyFile}}
	step := []struct{ key, v string }{{"upstream-url", u.url}, {"upstream-root", u.rootFile}, {"upstream-provisioner", u.provisioner},
		{"upstream-password-file", u.passwordFile}, {"upstream-x5c-cert", u.x5cCert}, {"upstream-x5c-key", u.x5cKey}}
	unused := func(flags []struct{ key, v string }) {
		for _, f := range flags {
			if f.v != "" {
				bad(f.key, f.v, "applies only to --upstream %s", map[bool]string{true: "disk", false: "stepca"}[f.key == "upstream-cert" || f.key == "upstream-key"])
			}
		}
	}
	need := func(flags ...struct{ key, v string }) {
		for _, f := range flags {
			if f.v == "" {
				bad(f.key, "", "is required with --upstream %s", u.kind)
			}
		}
	}
	switch u.kind {
	case "":
		unused(disk)
		unused(step)
	case "disk":
		unused(step)
		need(disk...)
	case "stepca":
		unused(disk)
		need(step[:3]...)
		switch {
		case (u.x5cCert == "") != (u.x5cKey == ""):
			bad("upstream-x5c-cert", u.x5cCert, "an X5C provisioner needs both --upstream-x5c-cert and --upstream-x5c-key")
		case u.x5cCert == "" && u.passwordFile == "":
			bad("upstream-password-file", "", "is required with --upstream stepca and a JWK provisioner (or give --upstream-x5c-cert and --upstream-x5c-key)")
		}
		if newStepCAUpstream == nil {
			bad("upstream", u.kind, "this badge was built without step-ca support (it adds about 17 MB): build it with 'go build -tags stepca'")
		}
	default:
		bad("upstream", u.kind, "want disk or stepca")
	}
	for _, f := range []struct{ key, v string }{disk[0], disk[1], step[1], step[3], step[4], step[5]} {
		if f.v != "" && !filepath.IsAbs(f.v) {
			bad(f.key, f.v, "must be an absolute path")
		}
	}
	return out
}

// open returns the upstream authority, or nil with none.
func (u *upstreamFlags) open() (ca.Upstream, error) {
	switch u.kind {
	case "disk":
		d, err := upstream.LoadDisk(u.certFile, u.keyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream: %w", err)
		}
		return d, nil
	case "stepca":
		if newStepCAUpstream == nil {
			return nil, errors.New("upstream: this badge was built without step-ca support: build it with 'go build -tags stepca'")
		}
		return newStepCAUpstream(stepCAConfig{u.url, u.rootFile, u.provisioner, u.passwordFile, u.x5cCert, u.x5cKey})
	}
	return nil, nil
}
