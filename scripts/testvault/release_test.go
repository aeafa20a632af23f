package testvault

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReleaseIsReproducible builds the release twice, for the host
// platform only (one platform takes ~3 s with a warm build cache, all three
// ~10 s; CI's `make release` builds all three), and wants identical
// SHA256SUMS. The second build runs with a caller environment that would
// change the binaries if the script let it through (GOFLAGS with a build
// tag, GOAMD64=v3, another time zone). Both builds share the Go build
// cache, so this checks the link and the script; a build with an empty
// cache gave the same checksums too (measured: 85 s for one platform on 2
// cores, too slow for make test).
func TestReleaseIsReproducible(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const version = "v9.8.7-repro.1"
	start := time.Now()
	a, err := BuildRelease(root, t.TempDir(), version, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first build: %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	b, err := BuildRelease(root, t.TempDir(), version, nil,
		"GOFLAGS=-tags=apikeys_repro_test", "GOAMD64=v3", "TZ=Pacific/Kiritimati")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second build: %s", time.Since(start).Round(time.Millisecond))

	sumsA, err := os.ReadFile(filepath.Join(a.Dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	sumsB, err := os.ReadFile(filepath.Join(b.Dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	if string(sumsA) != string(sumsB) {
		t.Fatalf("two builds of one tree differ:\n%s\n---\n%s", sumsA, sumsB)
	}
	t.Logf("SHA256SUMS (both builds):\n%s", sumsA)
	plugin, edge := a.File(PluginName, ""), a.File("apikeys-edge", "")
	if len(a.Sums) != 2 || a.Sums[plugin] == "" || a.Sums[edge] == "" {
		t.Fatalf("SHA256SUMS lists %v, want exactly %s and %s", a.Sums, plugin, edge)
	}
	for name, sum := range a.Sums {
		got, err := FileSHA256(filepath.Join(a.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got != sum {
			t.Fatalf("%s: SHA256SUMS says %s, the file hashes to %s", name, sum, got)
		}
	}

	// The edge says what it is. The plugin's version is what Vault's
	// catalog checks at registration (TestProductionInstall); here it is
	// only found in the binary. -trimpath leaves -ldflags out of the build
	// info (they may hold paths), so that shows the rest of the recipe.
	head, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(a.Dir, edge), "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("apikeys-edge -version: %v: %s", err, out)
	}
	if want := "apikeys-edge " + version + " (commit " + strings.TrimSpace(string(head)); !strings.HasPrefix(string(out), want) {
		t.Fatalf("apikeys-edge -version printed %q, want it to start with %q", out, want)
	}
	bin, err := os.ReadFile(filepath.Join(a.Dir, plugin))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(bin, []byte(version)) {
		t.Errorf("%s does not contain its version %s", plugin, version)
	}
	for _, name := range []string{plugin, edge} {
		info, err := exec.Command("go", "version", "-m", filepath.Join(a.Dir, name)).CombinedOutput()
		if err != nil {
			t.Fatalf("go version -m %s: %v: %s", name, err, info)
		}
		var build []string
		for _, l := range strings.Split(string(info), "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == "build" {
				build = append(build, strings.Join(f[1:], " "))
			}
		}
		got := strings.Join(build, "\n")
		for _, want := range []string{"-trimpath=true", "CGO_ENABLED=0"} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: build info lacks %q:\n%s", name, want, got)
			}
		}
		if strings.Contains(got, "vcs") {
			t.Errorf("%s: build info has the go command's VCS stamps besides ours (-buildvcs=false):\n%s", name, got)
		}
	}

	install, err := os.ReadFile(filepath.Join(a.Dir, "INSTALL.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "-sha256=" + a.Sums[plugin]; HostPlatform() == "linux/amd64" && !strings.Contains(string(install), want) {
		t.Fatalf("INSTALL.txt does not name the plugin's checksum (%s):\n%s", want, install)
	}
}
