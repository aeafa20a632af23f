package testvault

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// HostPlatform is the GOOS/GOARCH release binaries run on here.
func HostPlatform() string { return runtime.GOOS + "/" + runtime.GOARCH }

// Release is a directory that scripts/release.sh (what `make release`
// runs) built: binaries, SHA256SUMS and INSTALL.txt.
type Release struct {
	Dir     string
	Version string
	// Sums maps each file name to its hex SHA-256, as SHA256SUMS lists it.
	Sums map[string]string
}

// BuildRelease runs scripts/release.sh for version into dir, for the given
// GOOS/GOARCH platforms (none: the host's), with ALLOW_DIRTY=1 so it also
// builds a working tree with uncommitted changes (stamped <sha>-dirty).
// extraEnv is added to the script's environment.
func BuildRelease(root, dir, version string, platforms []string, extraEnv ...string) (*Release, error) {
	if len(platforms) == 0 {
		platforms = []string{HostPlatform()}
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "release.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VERSION="+version, "DIST="+dir,
		"RELEASE_PLATFORMS="+strings.Join(platforms, " "), "ALLOW_DIRTY=1")
	cmd.Env = append(cmd.Env, extraEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("scripts/release.sh %s: %w: %s", version, err, out)
	}
	sums, err := ReadSHA256SUMS(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		return nil, err
	}
	return &Release{Dir: dir, Version: version, Sums: sums}, nil
}

// File is the release's file of binary name (PluginName, "apikeys-edge")
// for a GOOS/GOARCH platform ("" for the host's).
func (r *Release) File(name, platform string) string {
	if platform == "" {
		platform = HostPlatform()
	}
	goos, goarch, _ := strings.Cut(platform, "/")
	return name + "_" + r.Version + "_" + goos + "_" + goarch
}

// ReadSHA256SUMS parses a file in sha256sum's format ("<hex>  <name>").
func ReadSHA256SUMS(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 || name == "" {
			return nil, fmt.Errorf("%s: not a sha256sum line: %q", path, sc.Text())
		}
		sums[name] = sum
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return sums, nil
}
