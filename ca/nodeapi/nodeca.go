package nodeapi

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// MaxNodeCAFile bounds a --node-ca file.
const MaxNodeCAFile = 1 << 20

// ErrNodeCA is matched by every refusal of a node CA file.
var ErrNodeCA = errors.New("nodeapi: node CA file refused")

// ParseNodeCAs parses the CAs of host certificates (x509pop, --node-ca):
// PEM, one or more CERTIFICATE blocks, each a CA certificate (basic
// constraints with CA set). Anything else in the file (another block
// type, text that is not PEM, a certificate that is not a CA) is refused
// with an error naming the block, rather than ignored: a key or a leaf in
// this file is a mistake the operator must hear about.
func ParseNodeCAs(data []byte) ([]*x509.Certificate, error) {
	if len(data) > MaxNodeCAFile {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d a CA bundle needs", ErrNodeCA, len(data), MaxNodeCAFile)
	}
	var out []*x509.Certificate
	rest := data
	for i := 1; ; i++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM block %d is %q; want CERTIFICATE blocks only (no keys)", ErrNodeCA, i, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrNodeCA, i, err)
		}
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("%w: certificate %d (%q) is not a CA certificate", ErrNodeCA, i, c.Subject.String())
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: %d bytes after certificate %d are not PEM", ErrNodeCA, len(bytes.TrimSpace(rest)), len(out))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE block", ErrNodeCA)
	}
	return out, nil
}
