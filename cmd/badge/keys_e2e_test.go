package main

import (
	"crypto/x509"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/badge-dev/badge/ca"
)

// softHSM2 makes a fresh SoftHSM2 token in a temporary directory, sets
// SOFTHSM2_CONF for this process and the daemons it starts, and returns
// the --key-manager URI of the token (the PIN in a file).
func softHSM2(t *testing.T) string {
	t.Helper()
	const module = "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(module); err != nil {
		t.Skipf("SoftHSM2 is not installed (%v): apt-get install softhsm2 (.ci/run does)", err)
	}
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		t.Skip("softhsm2-util is not installed: apt-get install softhsm2 (.ci/run does)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.Mkdir(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	if out, err := exec.Command(util, "--init-token", "--free", "--label", "badge-e2e", "--pin", "2468", "--so-pin", "1357").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
	pin := filepath.Join(dir, "pin")
	if err := os.WriteFile(pin, []byte("2468"), 0o600); err != nil {
		t.Fatal(err)
	}
	return "pkcs11:module-path=" + module + ";token=badge-e2e?pin-source=" + pin
}

// TestE2EKeyManagerPKCS11: badge server --key-manager with a SoftHSM2
// token makes every key in the token and signs from it: a workload's SVID
// verifies against the bundle, `badge keys list` names token keys, no
// private key file is in the data dir, and after a restart the daemon
// signs with the same token keys (the same root, and a rotation there).
func TestE2EKeyManagerPKCS11(t *testing.T) {
	requireRoot(t)
	uri := softHSM2(t)
	d := startDaemon(t, "--key-manager", uri)
	d.createEntry("spiffe://example.org/orders", "unix:uid:1001")
	fetch := func() { verifyFetch(t, d) }
	keys := func() []ca.KeyStatus {
		t.Helper()
		var ks []ca.KeyStatus
		if err := json.Unmarshal([]byte(d.mustBadge("keys", "list", "--json")), &ks); err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			if !strings.HasPrefix(k.PrivateKey, "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge-e2e;id=") || strings.Contains(k.PrivateKey, "pin") {
				t.Errorf("key %s %s: private key %q, want a key of the token, without the PIN", k.Kind, k.ID, k.PrivateKey)
			}
		}
		files, err := filepath.Glob(filepath.Join(d.dataDir, "keys", "*"))
		if err != nil || len(files) != 0 {
			t.Errorf("files in the key directory: %v (%v); want none", files, err)
		}
		return ks
	}
	fetch()
	before := keys()
	if strings.Contains(d.logs(), "2468") {
		t.Error("the daemon logged the PIN")
	}

	d.restart()
	fetch()
	after := keys()
	if len(after) != len(before) || after[0].ID != before[0].ID || after[0].Fingerprint != before[0].Fingerprint {
		t.Errorf("keys after the restart %+v, want the same as before %+v", after, before)
	}
	// A rotation makes the next key in the token.
	d.mustBadge("keys", "rotate", "--kind", "intermediate")
	fetch()
	if got := keys(); len(got) != len(before)+1 {
		t.Errorf("%d keys after a rotation, want %d", len(got), len(before)+1)
	}
}

// verifyFetch has uid 1001 fetch its X.509-SVID and verifies it against
// the bundle the Workload API gave with it.
func verifyFetch(t *testing.T, d *daemon) {
	t.Helper()
	r := d.runWorkload(1001, 1001, "fetch")
	if r.Error != "" || len(r.SVIDs) != 1 {
		t.Fatalf("fetch: %s %s, %d SVIDs", r.Code, r.Error, len(r.SVIDs))
	}
	var chain []*x509.Certificate
	for _, der := range r.SVIDs[0].Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	var roots []*x509.Certificate
	for _, der := range r.Bundle {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, c)
	}
	if _, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots)); err != nil {
		t.Errorf("the SVID signed with the key manager's intermediate does not verify: %v", err)
	}
}
