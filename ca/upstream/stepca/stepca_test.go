package stepca

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/badge-dev/badge/internal/testpki"
)

// TestNewChecksConfig: New refuses, naming what is wrong, a configuration
// it cannot use, and reaches no step-ca.
func TestNewChecksConfig(t *testing.T) {
	dir := t.TempDir()
	root := testpki.WriteCerts(t, filepath.Join(dir, "root.crt"), testpki.NewCA(t, "root", nil, testpki.Options{}).Cert)
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open-pw")
	if err := os.WriteFile(open, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty-pw")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Nothing listens here: New must not try.
	const url = "https://127.0.0.1:1"
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"jwk", Config{URL: url, RootFile: root, Provisioner: "p", PasswordFile: pw}, ""},
		{"no URL", Config{RootFile: root, Provisioner: "p", PasswordFile: pw}, "URL is required"},
		{"http URL", Config{URL: "http://ca:9000", RootFile: root, Provisioner: "p", PasswordFile: pw}, "not an https URL"},
		{"no root", Config{URL: url, Provisioner: "p", PasswordFile: pw}, "root certificate file is required"},
		{"no provisioner", Config{URL: url, RootFile: root, PasswordFile: pw}, "provisioner name is required"},
		{"no credential", Config{URL: url, RootFile: root, Provisioner: "p"}, "needs its password file"},
		{"half x5c", Config{URL: url, RootFile: root, Provisioner: "p", X5CCertFile: root}, "needs both"},
		{"password readable by others", Config{URL: url, RootFile: root, Provisioner: "p", PasswordFile: open}, "chmod 600"},
		{"empty password", Config{URL: url, RootFile: root, Provisioner: "p", PasswordFile: empty}, "is empty"},
		{"root not PEM", Config{URL: url, RootFile: pw, Provisioner: "p", PasswordFile: pw}, pw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if tc.want == "" {
				if err != nil || s.opts.CertificateIssuer.Password != "secret" {
					t.Fatalf("New: %v (password %q)", err, s.opts.CertificateIssuer.Password)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
