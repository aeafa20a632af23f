package notify

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
)

// Target is a webhook receiver. Secret signs every delivery and is never
// returned by the engine once written.
type Target struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	Secret string `json:"secret"`
	// Events and Tenants filter what the target receives; empty means all.
	Events  []string `json:"events"`
	Tenants []string `json:"tenants"`
	// PublicOnly is set by whoever looks the target up, never stored: the
	// dispatcher then sends over https only and refuses, at dial time,
	// every address that is not public (guard.go). Tenants' targets get it,
	// since a tenant admin could otherwise make Vault POST into the
	// network it runs in.
	PublicOnly bool `json:"-"`
}

// Wants reports whether the target subscribes to an event of this type
// about this tenant. An event with no tenant (a burst of unknown keys, say)
// reaches only targets without a tenant filter.
func (t *Target) Wants(eventType, tenant string) bool {
	if len(t.Events) > 0 && !slices.Contains(t.Events, eventType) {
		return false
	}
	if len(t.Tenants) > 0 && !slices.Contains(t.Tenants, tenant) {
		return false
	}
	return true
}

// ValidateURL accepts absolute http and https URLs with a host and no user
// info: credentials belong in the signing secret, not in a URL that ends up
// in logs and in the target's read output.
func ValidateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme must be http or https, got %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("missing host")
	}
	if u.User != nil {
		return errors.New("must not carry user info; the secret authenticates deliveries")
	}
	return nil
}
