package ca

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "go.step.sm/crypto/kms/pkcs11" // the PKCS#11 backend, as cmd/badge links it
)

const softHSM2Module = "/usr/lib/softhsm/libsofthsm2.so"

// softHSM2Token makes a fresh SoftHSM2 token in a temporary directory and
// returns the key manager URI of it. SoftHSM2 reads its configuration from
// SOFTHSM2_CONF, set for the whole test process.
func softHSM2Token(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(softHSM2Module); err != nil {
		t.Skipf("SoftHSM2 is not installed (%v): apt-get install softhsm2 (.ci/run does)", err)
	}
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		t.Skipf("softhsm2-util is not installed: apt-get install softhsm2 (.ci/run does)")
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
	out, err := exec.Command(util, "--init-token", "--free", "--label", "badge-test", "--pin", "4321", "--so-pin", "8765").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
	return "pkcs11:module-path=" + softHSM2Module + ";token=badge-test?pin-value=4321"
}

// keyFiles returns the files in the key directory.
func keyFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

// TestPKCS11KeyManager: with a SoftHSM2 token as key manager every key is
// made in the token and signs from it (SVIDs, JWT-SVIDs, the audit head);
// no private key file appears in the data dir and no record holds the PIN;
// rotation makes the new keys in the token and deletes the removed ones
// from it; a restart signs with the same token keys.
func TestPKCS11KeyManager(t *testing.T) {
	uri := softHSM2Token(t)
	ctx := context.Background()
	env := newEnv(t)
	mod := func(c *Config) {
		scheduleConfig(c)
		c.KeyManager = uri
	}
	a := env.open(t, mod)
	id := mustCreate(t, a, "spiffe://example.org/web", testSel)
	check := func(a *Authority) {
		t.Helper()
		s := a.Snapshot()
		sv, err := a.SignX509SVID(ctx, s, entryFor(t, s, id))
		if err != nil {
			t.Fatalf("SignX509SVID with token keys: %v", err)
		}
		if err := verifySVID(t, a, env, sv.CertChainDER); err != nil {
			t.Errorf("SVID signed with the token's intermediate: %v", err)
		}
		tok, err := a.SignJWTSVID(ctx, s, entryFor(t, s, id), []string{"api"})
		if err != nil {
			t.Fatalf("SignJWTSVID with a token key: %v", err)
		}
		if _, err := a.ValidateJWTSVID(a.Snapshot(), tok.Token, "api"); err != nil {
			t.Errorf("token signed with the token's JWT key: %v", err)
		}
		if err := a.CheckSigner(); err != nil {
			t.Errorf("CheckSigner: %v", err)
		}
		if files := keyFiles(t, env.keyDir); len(files) != 0 {
			t.Errorf("private key files in the data dir: %v", files)
		}
		for _, r := range keyRecords(t, env.store) {
			for _, rec := range r {
				if !strings.HasPrefix(rec.PrivateRef, "pkcs11:module-path="+softHSM2Module+";token=badge-test;id=") || strings.Contains(rec.PrivateRef, "4321") || strings.Contains(rec.PrivateRef, "?") {
					t.Errorf("key %s: private key reference %q, want the token's URI of the key without the PIN", rec.ID, rec.PrivateRef)
				}
			}
		}
	}
	check(a)
	if _, err := a.RotateKey(ctx, RotateRoot, 0); err != nil {
		t.Fatalf("RotateKey(root) in the token: %v", err)
	}
	res, err := a.RotateKey(ctx, RotateJWT, 0)
	if err != nil {
		t.Fatalf("RotateKey(jwt) in the token: %v", err)
	}
	check(a)
	if rep, err := a.VerifyAudit(ctx); err != nil || !rep.OK {
		t.Errorf("VerifyAudit with a head signed by a token key: %+v, %v", rep, err)
	}

	// The replaced JWT key leaves the token once its tokens have expired.
	old, _ := recordOf(t, env.store, res.Retired.ID)
	step(t, a, env, old.RemoveAt.Sub(env.clock.Now()))
	if _, ok := recordOf(t, env.store, old.ID); ok {
		t.Fatal("the replaced JWT key is still recorded after its RemoveAt")
	}
	if _, err := a.cfg.keys.open(keyRef{old.ID, old.PrivateRef}, nil); !errors.Is(err, ErrKeyManager) {
		t.Errorf("the removed JWT key still opens in the token: %v", err)
	}

	// A restart uses the same keys of the token.
	root, inter, jwt := a.keys.root.id, a.keys.inter.id, a.keys.jwt.active.id
	a.Close()
	env.clock.Advance(time.Second)
	a = env.open(t, mod)
	if a.keys.root.id != root || a.keys.inter.id != inter || a.keys.jwt.active.id != jwt {
		t.Errorf("after a restart the keys are %s, %s, %s; want %s, %s, %s", a.keys.root.id, a.keys.inter.id, a.keys.jwt.active.id, root, inter, jwt)
	}
	check(a)

	// The same data dir without the key manager does not find its keys.
	a.Close()
	if _, err := New(ctx, env.config(scheduleConfig)); err == nil {
		t.Error("New without the key manager opened keys held in the token")
	}
	if n := len(keyRecords(t, env.store)[kindRoot]); n == 0 {
		t.Error("the failed start lost the root records")
	}
}

// TestCheckKeyManager: URIs badge can use and those it refuses, with the
// PIN never in the message.
func TestCheckKeyManager(t *testing.T) {
	for _, tc := range []struct {
		uri, base string
		ok        bool
	}{
		{"pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge?pin-value=secret", "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge", true},
		{"pkcs11:serial=1a2b?pin-source=/etc/badge/pin", "pkcs11:serial=1a2b", true},
		{"pkcs11:slot-id=0", "pkcs11:slot-id=0", true},
		{"pkcs11:module-path=/x.so?pin-value=secret", "", false},
		{"pkcs11:token=badge;object=root?pin-value=secret", "", false},
		{"awskms:key-id=abc", "", false},
		{"softkms:path=/tmp?pin-value=secret", "", false},
		{"/var/lib/badge/keys", "", false},
		{"", "", false},
	} {
		base, err := CheckKeyManager(tc.uri)
		if (err == nil) != tc.ok || base != tc.base {
			t.Errorf("CheckKeyManager(%q) = %q, %v; want %q, ok %v", tc.uri, base, err, tc.base, tc.ok)
		}
		if err != nil && (strings.Contains(err.Error(), "secret") || !errors.Is(err, ErrKeyManager)) {
			t.Errorf("CheckKeyManager(%q): %v: want ErrKeyManager, without the PIN", tc.uri, err)
		}
	}
}
