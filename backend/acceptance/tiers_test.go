package acceptance

// Helpers of the RBAC and audit tests: an installation set up by the very
// bootstrap scripts and policy files that bootstrap/apply.sh uses, on a
// test's own mount, with real userpass and JWT logins.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// The claims auth-jwt.sh's roles want.
const (
	jwtIssuer   = "apikeys-dev-idp"
	jwtAudience = "vault-apikeys"
)

// install is one installation of the engine on the shared server, as
// bootstrap/apply.sh would make it, with every server-wide name (policies,
// auth mounts, entities, groups) prefixed by the test's mount.
type install struct {
	t          *testing.T
	mount      string
	prefix     string
	jwtPath    string
	upPath     string
	adminGroup string
	idp        *rsa.PrivateKey
}

func newInstall(t *testing.T) *install {
	t.Helper()
	mount := newMount(t)
	in := &install{
		t:          t,
		mount:      mount,
		prefix:     mount + "-",
		jwtPath:    "jwt-" + mount,
		upPath:     "up-" + mount,
		adminGroup: mount + "-platform-admins",
		idp:        idpKey(t),
	}
	tuneLikeBootstrap(t, mount)
	c := srv.Client

	if err := c.Sys().EnableAuthWithOptions(in.upPath, &api.EnableAuthOptions{Type: "userpass"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Sys().DisableAuth(in.upPath) })

	pubFile := filepath.Join(t.TempDir(), "idp.pub.pem")
	der, err := x509.MarshalPKIXPublicKey(&in.idp.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Sys().DisableAuth(in.jwtPath) })
	runBootstrap(t, "auth-jwt.sh", "JWT_PATH="+in.jwtPath, "JWT_PUBKEY_FILE="+pubFile, "POLICY_PREFIX="+in.prefix)

	t.Cleanup(func() {
		for _, p := range in.policyNames() {
			_ = c.Sys().DeletePolicy(p)
		}
	})
	runBootstrap(t, "policies.sh", "APIKEYS_MOUNT="+mount, "JWT_PATH="+in.jwtPath, "POLICY_PREFIX="+in.prefix)

	// The rest of what apply.sh sets up: the platform admins' group (it
	// creates it before the auth mounts, which only name it) and the
	// guard's settings (enforcement stays off until a test turns it on).
	write(t, c, "identity/group/name/"+in.adminGroup, map[string]interface{}{
		"type": "internal", "policies": in.prefix + "apikeys-platform-admin",
	})
	t.Cleanup(func() { _, _ = c.Logical().Delete("identity/group/name/" + in.adminGroup) })
	write(t, c, mount+"/config", map[string]interface{}{"platform_admin_groups": in.adminGroup})
	return in
}

func (in *install) policyNames() []string {
	files, _ := filepath.Glob(filepath.Join(repoRoot(in.t), "bootstrap", "policies", "*.hcl"))
	var names []string
	for _, f := range files {
		names = append(names, in.prefix+strings.TrimSuffix(filepath.Base(f), ".hcl"))
	}
	return names
}

// policy is the installed name of one of bootstrap/policies/*.hcl.
func (in *install) policy(name string) string { return in.prefix + name }

// userSpec is one userpass login to make with bootstrap/users.sh: policy
// "-" means none; group, if set, is joined; metadata goes on the entity.
type userSpec struct {
	name, policy, group string
	metadata            []string
}

// user makes one userpass login and returns its token.
func (in *install) user(name, policy, group string, metadata ...string) string {
	in.t.Helper()
	return in.users(userSpec{name, policy, group, metadata})[0]
}

// users makes userpass logins with bootstrap/users.sh and returns their
// tokens in order. The scripts run side by side (each is a handful of
// vault CLI starts), except for those joining a group: users.sh adds a
// member by read-modify-write of the group.
func (in *install) users(specs ...userSpec) []string {
	in.t.Helper()
	passwords := make([]string, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, u := range specs {
		passwords[i] = randomString(in.t)
		user := in.prefix + u.name
		in.t.Cleanup(func() { _, _ = srv.Client.Logical().Delete("identity/entity/name/" + user) })
		args := append([]string{user, passwords[i], u.policy}, u.metadata...)
		env := []string{"USERPASS_PATH=" + in.upPath}
		if u.group != "" {
			errs[i] = bootstrapCmd(in.t, "users.sh", append(env, "GROUP="+u.group), args...)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = bootstrapCmd(in.t, "users.sh", env, args...)
		}()
	}
	wg.Wait()
	tokens := make([]string, len(specs))
	for i, u := range specs {
		if errs[i] != nil {
			in.t.Fatal(errs[i])
		}
		s := write(in.t, srv.Client, "auth/"+in.upPath+"/login/"+in.prefix+u.name, map[string]interface{}{"password": passwords[i]})
		if s == nil || s.Auth == nil {
			in.t.Fatalf("userpass login %s gave no token", u.name)
		}
		tokens[i] = s.Auth.ClientToken
	}
	return tokens
}

// jwtLogin logs in with a token minted by the test's identity provider.
func (in *install) jwtLogin(role string, claims map[string]interface{}) (string, error) {
	in.t.Helper()
	return in.jwtLoginWith(in.idp, role, claims)
}

func (in *install) jwtLoginWith(key *rsa.PrivateKey, role string, claims map[string]interface{}) (string, error) {
	in.t.Helper()
	s, err := srv.Client.Logical().Write("auth/"+in.jwtPath+"/login", map[string]interface{}{
		"role": role, "jwt": mintJWT(in.t, key, claims),
	})
	if err != nil {
		return "", err
	}
	if s == nil || s.Auth == nil {
		return "", fmt.Errorf("jwt login %s gave no token", role)
	}
	return s.Auth.ClientToken, nil
}

// jwtClaims are the standard claims auth-jwt.sh's roles require, plus extra.
func jwtClaims(sub, tier string, extra ...string) map[string]interface{} {
	now := time.Now().Unix()
	c := map[string]interface{}{
		"iss": jwtIssuer, "aud": jwtAudience, "sub": sub, "apikeys_tier": tier,
		"iat": now, "nbf": now, "exp": now + 600,
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		c[k] = v
	}
	return c
}

// mintJWT signs claims with RS256, what bootstrap/mint-jwt.sh does with
// openssl.
func mintJWT(t *testing.T, key *rsa.PrivateKey, claims map[string]interface{}) string {
	t.Helper()
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signed := header + "." + enc.EncodeToString(payload)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + enc.EncodeToString(sig)
}

var (
	idpOnce sync.Once
	idpPriv *rsa.PrivateKey
	idpErr  error
)

// idpKey is the stand-in identity provider's key, made once per run: RSA
// key generation is the slow part of an identity provider.
func idpKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	idpOnce.Do(func() { idpPriv, idpErr = rsa.GenerateKey(rand.Reader, 2048) })
	if idpErr != nil {
		t.Fatal(idpErr)
	}
	return idpPriv
}

// tuneLikeBootstrap tunes a mount with bootstrap/mount-tune.json, as
// apply.sh does.
func tuneLikeBootstrap(t *testing.T, mount string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "bootstrap", "mount-tune.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tune map[string][]string
	if err := json.Unmarshal(raw, &tune); err != nil {
		t.Fatalf("bootstrap/mount-tune.json: %v", err)
	}
	data := map[string]interface{}{}
	for k, v := range tune {
		data[k] = v
	}
	write(t, srv.Client, "sys/mounts/"+mount+"/tune", data)
	return tune
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := testvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// runBootstrap runs one of bootstrap/*.sh against the shared server as root.
func runBootstrap(t *testing.T, script string, env ...string) {
	t.Helper()
	runBootstrapArgs(t, script, env)
}

func runBootstrapArgs(t *testing.T, script string, env []string, args ...string) {
	t.Helper()
	if err := bootstrapCmd(t, script, env, args...); err != nil {
		t.Fatal(err)
	}
}

// bootstrapCmd runs a bootstrap script; it may run off the test goroutine.
func bootstrapCmd(t *testing.T, script string, env []string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(repoRoot(t), "bootstrap", script)}, args...)...)
	cmd.Env = append(os.Environ(), "VAULT="+srv.VaultBin, "VAULT_ADDR="+srv.Addr, "VAULT_TOKEN="+srv.Token, "VAULT_FORMAT=", "NO_COLOR=1")
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bootstrap/%s %v: %w\n%s", script, args, err, out.String())
	}
	return nil
}

func randomString(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// answer is an HTTP answer of Vault, decoded.
type answer struct {
	status int
	data   map[string]interface{}
	errors []string
	raw    []byte
}

// unsupported says Vault's router or the plugin does not know the path or
// operation at all (as opposed to a 404 for a missing object).
func (a answer) unsupported() bool {
	return (a.status == http.StatusNotFound || a.status == http.StatusMethodNotAllowed) &&
		strings.Contains(strings.Join(a.errors, " "), "unsupported")
}

// call sends one request with token; method is GET, POST, DELETE or LIST.
func call(t *testing.T, token, method, path string, body map[string]interface{}, header map[string]string) answer {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, srv.Addr+"/v1/"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, raw: raw}
	var out struct {
		Data   map[string]interface{} `json:"data"`
		Errors []string               `json:"errors"`
	}
	// Not every answer is JSON (a plugin may answer Prometheus text): such a
	// body is kept in raw only.
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: HTTP %d, body is not JSON: %s", method, path, resp.StatusCode, raw)
		}
	}
	a.data, a.errors = out.Data, out.Errors
	return a
}

// ok reports whether Vault answered 200, 202 (tidy runs in the background)
// or 204.
func (a answer) ok() bool {
	return a.status == http.StatusOK || a.status == http.StatusAccepted || a.status == http.StatusNoContent
}

func (a answer) String() string {
	if len(a.errors) > 0 {
		return fmt.Sprintf("HTTP %d %v", a.status, a.errors)
	}
	return fmt.Sprintf("HTTP %d", a.status)
}
