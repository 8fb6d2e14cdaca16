package nodeapi_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"

	"go.step.sm/crypto/minica"

	"github.com/badge-dev/badge/ca/nodeapi"
)

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func TestParseNodeCAs(t *testing.T) {
	m, err := minica.New()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, hostCA: m}
	leaf := f.hostCertAt(m, "host-1")
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	for _, tc := range []struct {
		name string
		in   []byte
		n    int
	}{
		{"root", pemOf(m.Root), 1},
		{"root and intermediate", pemOf(m.Root, m.Intermediate), 2},
		{"with comments around", append(append([]byte("# the hosts CA\n"), pemOf(m.Root)...), '\n'), 1},
		{"empty", nil, 0},
		{"a key", append(pemOf(m.Root), key...), 0},
		{"a leaf", pemOf(m.Root, leaf), 0},
		{"text after", append(pemOf(m.Root), "trailing"...), 0},
		{"not a certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}}), 0},
		{"too large", make([]byte, nodeapi.MaxNodeCAFile+1), 0},
	} {
		cas, err := nodeapi.ParseNodeCAs(tc.in)
		if len(cas) != tc.n || (tc.n == 0) != (err != nil) || (err != nil && !errors.Is(err, nodeapi.ErrNodeCA)) {
			t.Errorf("%s: ParseNodeCAs = %d CAs, %v; want %d", tc.name, len(cas), err, tc.n)
		}
	}
}

func FuzzParseNodeCAs(f *testing.F) {
	m, err := minica.New()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pemOf(m.Root))
	f.Add(pemOf(m.Root, m.Intermediate))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		cas, err := nodeapi.ParseNodeCAs(in)
		if err != nil {
			if !errors.Is(err, nodeapi.ErrNodeCA) || cas != nil {
				t.Fatalf("refusal %v (with %d CAs) does not match ErrNodeCA", err, len(cas))
			}
			return
		}
		if len(cas) == 0 {
			t.Fatal("no CA and no error")
		}
		for _, c := range cas {
			if !c.IsCA {
				t.Fatal("accepted a certificate that is not a CA")
			}
		}
	})
}
