package main

// The cloud key managers, end to end: badge built with -tags cloudkms (the
// blank imports of keymanager_cloudkms.go, which this untagged test binary
// does not link) against a real AWS KMS emulator, local-kms, installed
// from the module proxy at test time and never a dependency of badge.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"go.step.sm/crypto/kms/apiv1"

	"github.com/badge-dev/badge/ca"
)

// localKMSModule is the AWS KMS emulator the test installs.
const localKMSModule = "github.com/nsmithuk/local-kms@v0.0.0-20260228092603-2a5e92d09ab6"

// goTool returns the go command, skipping the test without one.
func goTool(t *testing.T) string {
	t.Helper()
	g, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build with: %v", err)
	}
	return g
}

var taggedBuilds sync.Map // tags -> *taggedBuild

type taggedBuild struct {
	once sync.Once
	bin  string
	err  error
}

// buildBadge builds badge (this package) with -tags tags, once per test
// binary, into the directory of the test binary's copy, which every uid
// may read. It may run on any goroutine.
func buildBadge(tags string) (string, error) {
	v, _ := taggedBuilds.LoadOrStore(tags, &taggedBuild{})
	b := v.(*taggedBuild)
	b.once.Do(func() {
		g, err := exec.LookPath("go")
		if err != nil {
			b.err = fmt.Errorf("no go command to build with: %w", err)
			return
		}
		b.bin = filepath.Join(filepath.Dir(testBinary), "badge-"+strings.ReplaceAll(tags, ",", "-"))
		if out, err := exec.Command(g, "build", "-tags", tags, "-o", b.bin, ".").CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build -tags %s ./cmd/badge: %w: %s", tags, err, out)
		}
	})
	return b.bin, b.err
}

// localKMS is a running local-kms.
type localKMS struct {
	t        *testing.T
	endpoint string
}

var localKMSPort = regexp.MustCompile(`Local KMS started on 0\.0\.0\.0:([0-9]+)`)

// startLocalKMS installs local-kms with go install (from the module
// proxy) and runs it on a free port for region. It skips the test when
// the emulator cannot be built, unless under CI, where it must run.
func startLocalKMS(t *testing.T, region string) *localKMS {
	t.Helper()
	dir := t.TempDir()
	install := exec.Command(goTool(t), "install", localKMSModule)
	install.Dir = dir
	install.Env = append(os.Environ(), "GOBIN="+filepath.Join(dir, "bin"), "GOFLAGS=-mod=mod")
	if out, err := install.CombinedOutput(); err != nil {
		msg := "the AWS KMS emulator cannot be built (is the Go module proxy reachable?): go install " + localKMSModule + ": " + err.Error() + "\n" + string(out)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	cmd := exec.Command(filepath.Join(dir, "bin", "local-kms"))
	cmd.Env = append(os.Environ(), "PORT=0", "KMS_REGION="+region, "KMS_ACCOUNT_ID=111122223333",
		"KMS_DATA_PATH="+filepath.Join(dir, "data"), "KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	port := make(chan string, 1)
	var logs bytes.Buffer
	var mu sync.Mutex
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := localKMSPort.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case port <- m[1]:
				default:
				}
			}
		}
		cmd.Wait()
	}()
	select {
	case p := <-port:
		return &localKMS{t: t, endpoint: "http://127.0.0.1:" + p}
	case <-exited:
	case <-time.After(15 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	t.Fatalf("local-kms did not say it listens:\n%s", logs.String())
	return nil
}

// call calls the KMS API action with body and decodes the answer into out.
func (k *localKMS) call(action string, body, out any) {
	k.t.Helper()
	in, err := json.Marshal(body)
	if err != nil {
		k.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, k.endpoint+"/", bytes.NewReader(in))
	if err != nil {
		k.t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", "TrentService."+action)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		k.t.Fatalf("local-kms %s: %v", action, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		k.t.Fatalf("local-kms %s: %s", action, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		k.t.Fatalf("local-kms %s: %v", action, err)
	}
}

// aliases returns the key id of each alias in the KMS, by alias name.
func (k *localKMS) aliases() map[string]string {
	k.t.Helper()
	var r struct {
		Aliases []struct{ AliasName, TargetKeyId string }
	}
	k.call("ListAliases", map[string]any{"Limit": 100}, &r)
	out := map[string]string{}
	for _, a := range r.Aliases {
		out[a.AliasName] = a.TargetKeyId
	}
	return out
}

// TestE2EKeyManagerAWSKMS: badge built with -tags cloudkms and
// --key-manager awskms:region=... makes every key in AWS KMS (the
// emulator), under an alias naming it, and signs from there: SVIDs verify
// against the bundle, JWT-SVIDs against the JWT bundle; no private key is
// in the data dir, the records name each key by region and key id, and
// the secret access key appears in no log. A restart opens the same KMS
// keys; a rotation makes a new one there.
func TestE2EKeyManagerAWSKMS(t *testing.T) {
	requireRoot(t)
	const region, secret = "eu-west-2", "badge-e2e-aws-s3cret"
	// The daemon builds while the emulator installs.
	var bin string
	var buildErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		bin, buildErr = buildBadge("cloudkms")
	}()
	defer wg.Wait() // should the emulator skip the test
	kms := startLocalKMS(t, region)
	wg.Wait()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	d := startDaemonWith(t, nil, func(d *daemon) {
		d.bin = bin
		d.env = []string{"AWS_ENDPOINT_URL_KMS=" + kms.endpoint, "AWS_ACCESS_KEY_ID=AKIABADGEE2ETEST", "AWS_SECRET_ACCESS_KEY=" + secret,
			"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=" + filepath.Join(d.dir, "no-aws-config"),
			"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(d.dir, "no-aws-credentials")}
	}, "--key-manager", "awskms:region="+region)
	d.createEntry("spiffe://example.org/orders", "unix:uid:1001")

	prefix := "awskms:region=" + region + ";key-id="
	keys := func() []ca.KeyStatus {
		t.Helper()
		var ks []ca.KeyStatus
		if err := json.Unmarshal([]byte(d.mustBadge("keys", "list", "--json")), &ks); err != nil {
			t.Fatal(err)
		}
		aliases := kms.aliases()
		for _, k := range ks {
			id, ok := strings.CutPrefix(k.PrivateKey, prefix)
			if !ok || id == "" {
				t.Errorf("key %s %s: private key %q, want %s and the KMS key id", k.Kind, k.ID, k.PrivateKey, prefix)
				continue
			}
			kind := "x509-" + k.Kind
			if k.Kind == ca.RotateJWT {
				kind = "jwt"
			}
			named := false
			for alias, target := range aliases {
				named = named || target == id && strings.HasPrefix(alias, "alias/badge-"+kind+"-")
			}
			if !named {
				t.Errorf("key %s %s: KMS key %s has no alias naming it among %v", k.Kind, k.ID, id, aliases)
			}
		}
		err := filepath.WalkDir(d.dataDir, func(path string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			if err == nil && bytes.Contains(data, []byte("PRIVATE KEY")) {
				t.Errorf("a private key in the data dir: %s", path)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return ks
	}
	fetch := func() {
		t.Helper()
		verifyFetch(t, d)
		r := d.fetchJWT(1001, "spiffe://example.org/api")
		b, err := jwtbundle.Parse(td, r.Bundles[td.IDString()])
		if err != nil {
			t.Fatalf("JWT bundle: %v", err)
		}
		if _, err := jwtsvid.ParseAndValidate(r.Token, b, []string{"spiffe://example.org/api"}); err != nil {
			t.Errorf("the JWT-SVID signed by the KMS key does not verify: %v", err)
		}
	}

	fetch()
	before := keys()
	if len(before) < 3 {
		t.Fatalf("%d keys, want at least a root, an intermediate and a JWT key: %+v", len(before), before)
	}
	d.restart()
	fetch()
	after := keys()
	if len(after) != len(before) {
		t.Fatalf("%d keys after a restart, want the %d from before", len(after), len(before))
	}
	for i := range before {
		if after[i].ID != before[i].ID || after[i].Fingerprint != before[i].Fingerprint || after[i].PrivateKey != before[i].PrivateKey {
			t.Errorf("key %d after the restart %+v, want the same as before %+v", i, after[i], before[i])
		}
	}

	// A rotation makes the next key in the KMS.
	n := len(kms.aliases())
	d.mustBadge("keys", "rotate", "--kind", "intermediate")
	fetch()
	rotated := keys()
	if len(rotated) != len(before)+1 {
		t.Errorf("%d keys after a rotation, want %d", len(rotated), len(before)+1)
	}
	if got := len(kms.aliases()); got != n+1 {
		t.Errorf("%d aliases in the KMS after a rotation, want %d", got, n+1)
	}
	if strings.Contains(d.logs(), secret) {
		t.Error("the daemon logged the secret access key")
	}
}

// TestKeyManagerCloudWithoutTag: a badge built without -tags cloudkms
// refuses the cloud key managers' URIs, naming the tag to build with.
func TestKeyManagerCloudWithoutTag(t *testing.T) {
	if _, ok := apiv1.LoadKeyManagerNewFunc(apiv1.AmazonKMS); ok {
		t.Skip("this test binary links the cloud key managers (built with -tags cloudkms)")
	}
	dir := t.TempDir()
	paths := []string{"--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "w.sock"), "--admin-socket", filepath.Join(dir, "a.sock")}
	for _, uri := range []string{"awskms:region=us-east-1", "cloudkms:key-ring=projects/my-project/locations/global/keyRings/badge", "azurekms:vault=badge-keys"} {
		_, errOut, code := checkConfig(t, nil, append(paths, "--key-manager", uri)...)
		if code != exitUsage || !strings.Contains(errOut, "key-manager") || !strings.Contains(errOut, "-tags cloudkms") {
			t.Errorf("--key-manager %s: exit %d, stderr %q; want exit 2 naming -tags cloudkms", uri, code, errOut)
		}
	}
}
