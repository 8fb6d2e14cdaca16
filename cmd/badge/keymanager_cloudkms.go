//go:build cloudkms

package main

// The cloud key managers, in binaries built with -tags cloudkms: they add
// about 15 MB to the binary, so the default build leaves them out and
// refuses their URIs in --key-manager, naming the tag.

import (
	_ "go.step.sm/crypto/kms/awskms"   // --key-manager awskms:region=...
	_ "go.step.sm/crypto/kms/azurekms" // --key-manager azurekms:vault=...
	_ "go.step.sm/crypto/kms/cloudkms" // --key-manager cloudkms:key-ring=projects/.../keyRings/...
)
