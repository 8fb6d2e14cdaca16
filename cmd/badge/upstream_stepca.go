//go:build stepca

package main

// The step-ca upstream, in binaries built with -tags stepca.

import (
	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/upstream/stepca"
)

func init() { newStepCAUpstream = openStepCA }

func openStepCA(c stepCAConfig) (ca.Upstream, error) {
	return stepca.New(stepca.Config{URL: c.url, RootFile: c.rootFile, Provisioner: c.provisioner,
		PasswordFile: c.passwordFile, X5CCertFile: c.x5cCert, X5CKeyFile: c.x5cKey})
}
