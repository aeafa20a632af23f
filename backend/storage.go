package backend

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// The mount's storage: every entry the plugin writes, defined here once.
//
//	config                          mount config (seal-wrapped)
//	config/monitoring               usage, anomaly, scan and delivery settings
//	config/notifications/<name>     webhook targets with their signing
//	                                secrets (seal-wrapped)
//	config/tenant-notifications/<tenant>/<name>
//	                                a tenant's own webhook targets
//	                                (seal-wrapped)
//	pepper                          the HMAC secret of key records
//	                                (seal-wrapped, never returned)
//	tenants/<tenant>                tenant
//	roles/<tenant>/<role>           key role
//	static-keys/<tenant>/<name>     static key and its rotation state
//	                                (seal-wrapped: it holds the key)
//	hashes/<hmac-hex>               key record, found by verify from the key
//	keys/<tenant>/<key_id>          the tenant's index entry of a key,
//	                                pointing at its record
//	usage/tenants/<tenant>          usage totals of a tenant as last flushed
//	usage/keys/<tenant>/<key_id>    usage of a key; kept after revocation as
//	                                a tombstone
//	usage/history/tenants/<tenant>/<YYYY-MM-DD>,
//	usage/history/keys/<tenant>/<key_id>/<YYYY-MM-DD>
//	                                usage history: one entry per tenant or
//	                                key and UTC day, holding the day's total
//	                                and, for the last 48 h, its hours
//	usage/history/tidy              how far tidy has aged history out
//	quota/tenants/<tenant>          where a tenant's quota stands as last
//	                                flushed (quota.go)
//	quota/keys/<tenant>/<key_id>    where a key's own quota stands; deleted
//	                                with the key
//	edge/verifier                   the secret edges hash keys with
//	                                (seal-wrapped)
//	edge/head, edge/changes/<seq>   the edge sync change feed
//	notifications/outbox/<id>,      webhook deliveries pending and dead-
//	notifications/failed/<id>       lettered (notify.OutboxPrefix,
//	                                notify.FailedPrefix); <id> is
//	                                <event id>.<target>, and a tenant's
//	                                target is <tenant>.<name> there
//	wal/…                           rotation write-ahead log
//	                                (framework.WALPrefix, node-local)
//
// Tenants are kept apart by prefix: every per-tenant entry has the tenant
// name as its own path segment.
const (
	configPath         = "config"
	monitorConfigPath  = "config/monitoring"
	notifyTargetPrefix = "config/notifications/"
	// Not under config/notifications/, whose listing is the mount's target
	// names.
	tenantNotifyPrefix = "config/tenant-notifications/"
	pepperPath         = "pepper"
	tenantPrefix       = "tenants/"
	roleStoragePrefix  = "roles/"
	staticPrefix       = "static-keys/"
	hashPrefix         = "hashes/"
	keyStoragePrefix   = "keys/"
	usagePrefix        = "usage/"
	usageTenantPrefix  = usagePrefix + "tenants/"
	usageKeyPrefix     = usagePrefix + "keys/"
	quotaPrefix        = "quota/"
	quotaTenantPrefix  = quotaPrefix + "tenants/"
	quotaKeyPrefix     = quotaPrefix + "keys/"
	verifierPath       = "edge/verifier"
	feedHeadPath       = "edge/head"
	feedPrefix         = "edge/changes/"
)

// Usage history sits beside the totals, not under usage/keys/<tenant>/,
// whose listing the key scan reads as a list of key ids.
const (
	usageHistoryPrefix       = usagePrefix + "history/"
	usageHistoryTenantPrefix = usageHistoryPrefix + "tenants/"
	usageHistoryKeyPrefix    = usageHistoryPrefix + "keys/"
	usageHistoryTidyPath     = usageHistoryPrefix + "tidy"
)

func rolePrefix(tenant string) string      { return roleStoragePrefix + tenant + "/" }
func staticKeyPrefix(tenant string) string { return staticPrefix + tenant + "/" }
func keyIndexPrefix(tenant string) string  { return keyStoragePrefix + tenant + "/" }

func tenantTargetPrefix(tenant string) string { return tenantNotifyPrefix + tenant + "/" }

// tenantTargetRef is how the outbox, the dead letters and the metrics name
// a tenant's target: names hold no dots, so "<tenant>.<name>" can never be
// a mount target's name, and two tenants' targets of one name stay apart.
func tenantTargetRef(tenant, name string) string { return tenant + "." + name }

// splitTargetRef undoes tenantTargetRef; ok is false for a mount target.
func splitTargetRef(ref string) (tenant, name string, ok bool) {
	return strings.Cut(ref, ".")
}

func usageKeyPath(tenant, id string) string { return usageKeyPrefix + tenant + "/" + id }

// tenantHistoryPrefix and keyHistoryPrefix hold one entry per UTC day, named
// by historyDayFormat.
func tenantHistoryPrefix(tenant string) string { return usageHistoryTenantPrefix + tenant + "/" }
func keyHistoryPrefix(tenant, id string) string {
	return usageHistoryKeyPrefix + tenant + "/" + id + "/"
}
func quotaKeyPath(tenant, id string) string { return quotaKeyPrefix + tenant + "/" + id }

func feedEntryKey(seq uint64) string { return fmt.Sprintf("%s%020d", feedPrefix, seq) }

// getJSON reads and decodes one storage entry; a missing entry is nil, nil.
// what names the entry in errors ("role \"web\" of tenant \"acme\"").
func getJSON[T any](ctx context.Context, s logical.Storage, key, what string) (*T, error) {
	v := new(T)
	found, err := getJSONInto(ctx, s, key, what, v)
	if err != nil || !found {
		return nil, err
	}
	return v, nil
}

// getJSONInto decodes one storage entry over v, so fields the stored JSON
// lacks (written before they existed) keep the defaults v holds; found is
// false, and v untouched, when there is no entry.
func getJSONInto(ctx context.Context, s logical.Storage, key, what string, v interface{}) (found bool, err error) {
	entry, err := s.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", what, err)
	}
	if entry == nil {
		return false, nil
	}
	if err := entry.DecodeJSON(v); err != nil {
		return false, fmt.Errorf("decode %s: %w", what, err)
	}
	return true, nil
}

// putJSON encodes v and writes it at key; what names the entry in errors.
func putJSON(ctx context.Context, s logical.Storage, key, what string, v interface{}) error {
	entry, err := logical.StorageEntryJSON(key, v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", what, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	return nil
}

// tenantList is the handler of a tenant-scoped list path: the names stored
// under prefix(tenant).
func tenantList(prefix func(tenant string) string, what string) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		tenant := d.Get("tenant").(string)
		if err := validateName("tenant", tenant); err != nil {
			return fieldError("tenant", err), nil
		}
		names, err := req.Storage.List(ctx, prefix(tenant))
		if err != nil {
			return nil, fmt.Errorf("list %s of tenant %q: %w", what, tenant, err)
		}
		return logical.ListResponse(names), nil
	}
}
