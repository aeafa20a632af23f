package acceptance

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

func TestPluginCatalogShowsVersion(t *testing.T) {
	out, err := srv.CLI(context.Background(), nil, "plugin", "list", "-detailed", "-format=json", "secret")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Details []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"details"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("decode plugin list: %v\n%s", err, out)
	}
	found := false
	for _, p := range list.Details {
		found = found || (p.Name == testvault.PluginName && p.Version == srv.PluginVersion)
	}
	if !found {
		t.Fatalf("%s %s not in the catalog:\n%s", testvault.PluginName, srv.PluginVersion, out)
	}
	// Registered by checksum: the catalog holds the SHA-256 of the binary built.
	out, err = srv.CLI(context.Background(), nil, "plugin", "info", "-format=json", "-version="+srv.PluginVersion, "secret", testvault.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("decode plugin info: %v\n%s", err, out)
	}
	if info.SHA256 != srv.PluginSHA256 {
		t.Fatalf("catalog sha256 %q, built %q", info.SHA256, srv.PluginSHA256)
	}
}

func TestInfoReportsRunningVersion(t *testing.T) {
	mount := newMount(t)
	s := read(t, srv.Client, mount+"/info")
	if got := str(t, s, "version"); got != srv.PluginVersion {
		t.Fatalf("info version %q, want %q", got, srv.PluginVersion)
	}
	if !strings.HasPrefix(str(t, s, "go_version"), "go") {
		t.Fatalf("go_version: %v", s.Data)
	}
	mounts, err := srv.Client.Sys().ListMounts()
	if err != nil {
		t.Fatal(err)
	}
	if got := mounts[mount+"/"].RunningVersion; got != srv.PluginVersion {
		t.Fatalf("mount running version %q, want %q", got, srv.PluginVersion)
	}
}

func TestConfigDefaultsAndUpdate(t *testing.T) {
	mount := newMount(t)
	c := srv.Client
	s := read(t, c, mount+"/config")
	if str(t, s, "key_prefix") != "ak" {
		t.Fatalf("default key_prefix: %v", s.Data)
	}
	write(t, c, mount+"/config", map[string]interface{}{"key_prefix": "acme", "default_ttl": "1h", "max_ttl": "24h"})
	s = read(t, c, mount+"/config")
	if str(t, s, "key_prefix") != "acme" || s.Data["default_ttl"].(json.Number).String() != "3600" || s.Data["max_ttl"].(json.Number).String() != "86400" {
		t.Fatalf("config after write: %v", s.Data)
	}
	// A partial update keeps the other fields.
	write(t, c, mount+"/config", map[string]interface{}{"default_ttl": "2h"})
	s = read(t, c, mount+"/config")
	if str(t, s, "key_prefix") != "acme" || s.Data["default_ttl"].(json.Number).String() != "7200" {
		t.Fatalf("config after partial write: %v", s.Data)
	}
	for field := range s.Data {
		if strings.Contains(field, "pepper") || strings.Contains(field, "secret") {
			t.Fatalf("config read exposes %q", field)
		}
	}
}

func TestConfigRejectsBadValuesNamingTheField(t *testing.T) {
	mount := newMount(t)
	for _, tc := range []struct {
		name  string
		data  map[string]interface{}
		field string
	}{
		{"prefix with underscore", map[string]interface{}{"key_prefix": "a_b"}, "key_prefix"},
		{"prefix too long", map[string]interface{}{"key_prefix": strings.Repeat("a", 17)}, "key_prefix"},
		{"prefix starting with digit", map[string]interface{}{"key_prefix": "1ab"}, "key_prefix"},
		{"ttl not a duration", map[string]interface{}{"default_ttl": "soon"}, "default_ttl"},
		{"negative max_ttl", map[string]interface{}{"max_ttl": -5}, "max_ttl"},
		{"default above max", map[string]interface{}{"default_ttl": "2h", "max_ttl": "1h"}, "default_ttl"},
		{"bad expiry_warning", map[string]interface{}{"expiry_warning": "x"}, "expiry_warning"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := srv.Client.Logical().Write(mount+"/config", tc.data)
			wantStatus(t, err, http.StatusBadRequest, tc.field)
		})
	}
	// Nothing of the bad writes stuck.
	s := read(t, srv.Client, mount+"/config")
	if str(t, s, "key_prefix") != "ak" {
		t.Fatalf("config changed by rejected writes: %v", s.Data)
	}
}

func TestPathHelpDescribesConfig(t *testing.T) {
	mount := newMount(t)
	out, err := srv.CLI(context.Background(), nil, "path-help", mount+"/config")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Configure the API keys secrets engine", "key_prefix", "default_ttl", "max_ttl", "never returns secret"} {
		if !strings.Contains(out, want) {
			t.Errorf("path-help lacks %q:\n%s", want, out)
		}
	}
}
