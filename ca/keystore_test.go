package ca

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/kms/apiv1"
	_ "go.step.sm/crypto/kms/pkcs11" // the PKCS#11 backend, as cmd/badge links it
	"go.step.sm/crypto/kms/softkms"
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
// PIN never in the message. The cloud key managers are not linked into
// this test binary (cmd/badge links them with -tags cloudkms): their
// well-formed URIs are refused naming the tag.
func TestCheckKeyManager(t *testing.T) {
	for _, tc := range []struct {
		uri, base string
		ok        bool
		msg       string // in the error
	}{
		{"pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge?pin-value=secret", "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge", true, ""},
		{"pkcs11:serial=1a2b?pin-source=/etc/badge/pin", "pkcs11:serial=1a2b", true, ""},
		{"pkcs11:slot-id=0", "pkcs11:slot-id=0", true, ""},
		{"pkcs11:module-path=/x.so?pin-value=secret", "", false, "token, serial or slot-id"},
		{"pkcs11:token=badge;object=root?pin-value=secret", "", false, "not a key"},
		{"awskms:region=us-east-1", "", false, "-tags cloudkms"},
		{"cloudkms:key-ring=projects/my-project/locations/global/keyRings/badge", "", false, "-tags cloudkms"},
		{"azurekms:vault=badge-keys", "", false, "-tags cloudkms"},
		{"awskms:key-id=abc", "", false, "needs region"},
		{"azurekms:vault=badge-keys;client-id=x;tenant-id=y;client-secret=secret", "", false, "environment"},
		{"softkms:path=/tmp?pin-value=secret", "", false, "unsupported type"},
		{"/var/lib/badge/keys", "", false, "not a key manager URI"},
		{"", "", false, "not a key manager URI"},
	} {
		base, err := CheckKeyManager(tc.uri)
		if (err == nil) != tc.ok || base != tc.base {
			t.Errorf("CheckKeyManager(%q) = %q, %v; want %q, ok %v", tc.uri, base, err, tc.base, tc.ok)
		}
		if err != nil && (strings.Contains(err.Error(), "=secret") || !errors.Is(err, ErrKeyManager) || !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("CheckKeyManager(%q): %v: want ErrKeyManager naming %q, without the PIN or secret", tc.uri, err, tc.msg)
		}
	}
}

// TestKeyManagerNaming: how badge names a new key in each key manager (the
// Name of its CreateKeyRequest, as go.step.sm/crypto v0.91.1 reads it:
// a PKCS#11 id and label, an AWS alias, a Google key under the key ring,
// an Azure key in the vault), the reference it records from the library's
// answer (the key's URI, without PIN or credentials: what a restart
// opens), and which references are the manager's. Google and Azure have
// no emulator to run against: this is what is tested of them.
func TestKeyManagerNaming(t *testing.T) {
	id := []byte{0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	name := kmsKeyName("x509-root", id)
	if name != "badge-x509-root-deadbeef00010203" {
		t.Fatalf("kmsKeyName = %q", name)
	}
	for _, tc := range []struct {
		uri      string
		display  string
		request  string
		resp     string // the Name the library answers CreateKey with
		ref      string
		notOwned []string
	}{
		{
			uri:      "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge?pin-value=1234",
			display:  "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge",
			request:  "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge;id=deadbeef000102030405060708090a0b;object=" + name,
			resp:     "pkcs11:id=deadbeef000102030405060708090a0b;object=" + name,
			ref:      "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=badge;id=deadbeef000102030405060708090a0b;object=" + name,
			notOwned: []string{"pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=other;id=01", "root.key"},
		},
		{
			uri:      "awskms:region=eu-west-2;profile=badge",
			display:  "awskms:region=eu-west-2;profile=badge",
			request:  name,
			resp:     "awskms:key-id=0b9c7a8e-1f2d-4e5f-8a9b-0c1d2e3f4a5b",
			ref:      "awskms:region=eu-west-2;key-id=0b9c7a8e-1f2d-4e5f-8a9b-0c1d2e3f4a5b",
			notOwned: []string{"awskms:region=us-east-1;key-id=0b9c7a8e-1f2d-4e5f-8a9b-0c1d2e3f4a5b", "awskms:region=eu-west-2;key-id=", "root.key"},
		},
		{
			uri:      "cloudkms:key-ring=projects/my-project/locations/europe-west1/keyRings/badge;credentials-file=/etc/badge/gcp.json",
			display:  "cloudkms:key-ring=projects/my-project/locations/europe-west1/keyRings/badge;credentials-file=/etc/badge/gcp.json",
			request:  "projects/my-project/locations/europe-west1/keyRings/badge/cryptoKeys/" + name,
			resp:     "cloudkms:projects/my-project/locations/europe-west1/keyRings/badge/cryptoKeys/" + name + "/cryptoKeyVersions/1",
			ref:      "cloudkms:projects/my-project/locations/europe-west1/keyRings/badge/cryptoKeys/" + name + "/cryptoKeyVersions/1",
			notOwned: []string{"cloudkms:projects/my-project/locations/europe-west1/keyRings/other/cryptoKeys/k/cryptoKeyVersions/1"},
		},
		{
			uri:      "azurekms:vault=badge-keys;environment=public?hsm=true",
			display:  "azurekms:vault=badge-keys;environment=public",
			request:  "azurekms:vault=badge-keys;name=" + name + "?hsm=true",
			resp:     "azurekms:name=" + name + ";vault=badge-keys?version=5f2b4c1e9d8a4b7c",
			ref:      "azurekms:vault=badge-keys;name=" + name + "?version=5f2b4c1e9d8a4b7c",
			notOwned: []string{"azurekms:vault=other;name=" + name},
		},
		{
			uri:     "azurekms:vault=badge-keys",
			display: "azurekms:vault=badge-keys",
			request: "azurekms:vault=badge-keys;name=" + name,
			resp:    "azurekms:name=" + name + ";vault=badge-keys",
			ref:     "azurekms:vault=badge-keys;name=" + name,
		},
	} {
		b, err := parseKeyManager(tc.uri)
		if err != nil {
			t.Errorf("parseKeyManager(%q): %v", tc.uri, err)
			continue
		}
		if b.display != tc.display {
			t.Errorf("%s: display %q, want %q", tc.uri, b.display, tc.display)
		}
		req := b.request(name, id)
		if req != tc.request {
			t.Errorf("%s: CreateKey name %q, want %q", tc.uri, req, tc.request)
		}
		ref, err := b.ref(req, &apiv1.CreateKeyResponse{Name: tc.resp})
		if err != nil || ref != tc.ref {
			t.Errorf("%s: reference %q, %v; want %q", tc.uri, ref, err, tc.ref)
		}
		s := &kmsStore{b: b}
		if !s.owns(ref) {
			t.Errorf("%s: its own key %q is not its own", tc.uri, ref)
		}
		for _, other := range tc.notOwned {
			if s.owns(other) {
				t.Errorf("%s: owns %q", tc.uri, other)
			}
		}
	}

	// Answers a reference cannot be made from.
	for _, tc := range []struct{ uri, resp string }{
		{"awskms:region=eu-west-2", "awskms:name=" + name},
		{"cloudkms:key-ring=projects/my-project/locations/global/keyRings/badge", "cloudkms:projects/my-project/locations/global/keyRings/badge/cryptoKeys/other/cryptoKeyVersions/1"},
	} {
		b, err := parseKeyManager(tc.uri)
		if err != nil {
			t.Fatal(err)
		}
		if ref, err := b.ref(b.request(name, id), &apiv1.CreateKeyResponse{Name: tc.resp}); err == nil {
			t.Errorf("%s: answer %q gave reference %q, want an error", tc.uri, tc.resp, ref)
		}
	}
}

// TestParseKeyManagerRefuses: cloud URIs that name a key, lack where the
// keys go, or carry a credential.
func TestParseKeyManagerRefuses(t *testing.T) {
	for _, tc := range []struct{ uri, msg string }{
		{"awskms:", "needs region"},
		{"awskms:region=us-east-1;key-id=0b9c7a8e", "not a key"},
		{"awskms:region=us-east-1;name=root", "not a key"},
		{"awskms:region=../../x", "needs region"},
		{"awskms:region=us-east-1?secret-access-key=abc", "environment"},
		{"cloudkms:projects/p/locations/global/keyRings/r", "needs key-ring"},
		{"cloudkms:key-ring=projects/my-project/locations/global", "needs key-ring"},
		{"cloudkms:key-ring=projects/my-project/locations/global/keyRings/r/cryptoKeys/k", "needs key-ring"},
		{"cloudkms:key-ring=projects/my-project/locations/global/keyRings/r;resource=projects/x", "not a key"},
		{"azurekms:", "needs vault"},
		{"azurekms:vault=a", "needs vault"},
		{"azurekms:vault=badge-keys;name=root", "not a key"},
		{"azurekms:vault=badge-keys?client-secret=abc", "environment"},
		{"AWSKMS:region=us-east-1;key-id=x", "not a key"},
	} {
		_, err := parseKeyManager(tc.uri)
		if err == nil || !errors.Is(err, ErrKeyManager) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("parseKeyManager(%q) = %v, want ErrKeyManager naming %q", tc.uri, err, tc.msg)
		}
		if err != nil && strings.Contains(err.Error(), "abc") {
			t.Errorf("parseKeyManager(%q): the credential is in the error: %v", tc.uri, err)
		}
	}
}

// FuzzParseKeyManager: any string is refused or gives a backend whose
// display holds no query, and whose new keys it owns.
func FuzzParseKeyManager(f *testing.F) {
	for _, s := range []string{
		"pkcs11:token=badge?pin-value=1", "awskms:region=us-east-1", "cloudkms:key-ring=projects/my-project/locations/global/keyRings/r",
		"azurekms:vault=badge-keys?hsm=true", "azurekms:vault=v;client-secret=x", "awskms:region=us-east-1;key-id=k", "::", "pkcs11:%zz",
	} {
		f.Add(s)
	}
	id := make([]byte, 16)
	f.Fuzz(func(t *testing.T, raw string) {
		b, err := parseKeyManager(raw)
		if err != nil {
			if !errors.Is(err, ErrKeyManager) {
				t.Fatalf("%q: %v, not ErrKeyManager", raw, err)
			}
			return
		}
		if strings.Contains(b.display, "?") {
			t.Fatalf("%q: display %q has a query", raw, b.display)
		}
		if b.scheme == "pkcs11" {
			ref, err := b.ref(b.request("badge-k-0", id), &apiv1.CreateKeyResponse{})
			if err != nil || !(&kmsStore{b: b}).owns(ref) {
				t.Fatalf("%q: reference %q, %v: not owned", raw, ref, err)
			}
		}
	})
}

// TestKeyManagerRemoveWithoutDelete: a key manager the library cannot
// delete keys from (the cloud ones; here the library's software one)
// leaves a removed key in place and says so, naming it, without failing
// the removal.
func TestKeyManagerRemoveWithoutDelete(t *testing.T) {
	b, err := parseKeyManager("awskms:region=eu-west-2")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s := &kmsStore{km: &softkms.SoftKMS{}, b: b, log: slog.New(slog.NewTextHandler(&logs, nil))}
	ref := "awskms:region=eu-west-2;key-id=0b9c7a8e-1f2d-4e5f-8a9b-0c1d2e3f4a5b"
	if err := s.remove(keyRef{"jwt-1", ref}); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "cannot delete") || !strings.Contains(out, "jwt-1") || !strings.Contains(out, ref) {
		t.Errorf("no warning naming the key left in the key manager: %q", out)
	}
	logs.Reset()
	if err := s.remove(keyRef{"x509-root-1", "root.key"}); err != nil || logs.Len() != 0 {
		t.Errorf("remove of a key file through the key manager: %v, %q; want nothing done", err, logs.String())
	}
}
