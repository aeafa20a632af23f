package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

// monitorConfig holds the settings of usage, anomaly detection, the key
// scan and notification delivery (config/monitoring).
type monitorConfig struct {
	AnomalyWindow          time.Duration `json:"anomaly_window"`
	TenantFailureThreshold int           `json:"tenant_failure_threshold"`
	IPFailureThreshold     int           `json:"ip_failure_threshold"`
	KeySpikeFactor         int           `json:"key_spike_factor"`
	KeySpikeMinimum        int           `json:"key_spike_minimum"`
	StaleAfter             time.Duration `json:"stale_after"`
	UsageRetention         time.Duration `json:"usage_retention"`
	ScanInterval           time.Duration `json:"scan_interval"`
	ScanBatch              int           `json:"scan_batch"`
	FlushMaxWrites         int           `json:"flush_max_writes"`
	DeliveryMaxAttempts    int           `json:"delivery_max_attempts"`
	DeliveryRetryBase      time.Duration `json:"delivery_retry_base"`
	DeliveryRetryMax       time.Duration `json:"delivery_retry_max"`
	DeliveryTimeout        time.Duration `json:"delivery_timeout"`
}

func defaultMonitorConfig() *monitorConfig {
	p := notify.DefaultPolicy()
	return &monitorConfig{
		AnomalyWindow:          time.Minute,
		TenantFailureThreshold: 100,
		IPFailureThreshold:     20,
		KeySpikeFactor:         10,
		KeySpikeMinimum:        100,
		StaleAfter:             30 * 24 * time.Hour,
		// Daily usage history for a quarter; and longer than Vault's
		// default max lease TTL (32 days), so a lease that outlives its
		// deleted key still finds the key's tombstone.
		UsageRetention:      90 * 24 * time.Hour,
		ScanInterval:        time.Minute,
		ScanBatch:           1000,
		FlushMaxWrites:      500,
		DeliveryMaxAttempts: p.MaxAttempts,
		DeliveryRetryBase:   p.BaseDelay,
		DeliveryRetryMax:    p.MaxDelay,
		DeliveryTimeout:     p.Timeout,
	}
}

func (c *monitorConfig) policy() notify.Policy {
	return notify.Policy{MaxAttempts: c.DeliveryMaxAttempts, BaseDelay: c.DeliveryRetryBase, MaxDelay: c.DeliveryRetryMax, Timeout: c.DeliveryTimeout}
}

func readMonitorConfig(ctx context.Context, s logical.Storage) (*monitorConfig, error) {
	cfg := defaultMonitorConfig()
	if _, err := getJSONInto(ctx, s, monitorConfigPath, "monitoring config", cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// applyMonitorConfig makes cfg the one verify and the dispatcher use.
func (b *backend) applyMonitorConfig(cfg *monitorConfig) {
	b.usage.cfg.Store(cfg)
	b.dispatcher.SetPolicy(cfg.policy())
}

func (b *backend) loadMonitorConfig(ctx context.Context, s logical.Storage) error {
	cfg, err := readMonitorConfig(ctx, s)
	if err != nil {
		return err
	}
	b.applyMonitorConfig(cfg)
	return nil
}

// forgetMonitorConfig serves Invalidate of config/monitoring. The reload
// reads storage, which Invalidate must not wait on, so it runs apart.
func (b *backend) forgetMonitorConfig() {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.loadMonitorConfig(ctx, b.storage); err != nil {
			b.Logger().Warn("changed monitoring settings unreadable", "error", err)
		}
	}()
}

func (b *backend) pathConfigMonitoring() []*framework.Path {
	return []*framework.Path{
		{
			Pattern:        "config/monitoring$",
			DisplayAttrs:   &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields:         monitorConfigFields(),
			ExistenceCheck: b.monitorConfigExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathMonitorConfigRead,
					Summary:      "Read the usage, anomaly, scan and delivery settings.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "monitoring-configuration"},
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                  b.pathMonitorConfigWrite,
					Summary:                   "Configure usage, anomaly detection, the key scan and notification delivery.",
					DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "configure", OperationSuffix: "monitoring"},
					ForwardPerformanceStandby: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathMonitorConfigWrite,
					Summary:                   "Configure usage, anomaly detection, the key scan and notification delivery.",
					DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "configure", OperationSuffix: "monitoring"},
					ForwardPerformanceStandby: true,
				},
			},
			HelpSynopsis:    pathMonitorConfigHelpSyn,
			HelpDescription: pathMonitorConfigHelpDesc,
		},
	}
}

// monitorDurations and monitorInts name each setting once, for the schema,
// read and write.
func monitorDurations(c *monitorConfig) []struct {
	name, desc string
	dst        *time.Duration
	min        time.Duration
} {
	return []struct {
		name, desc string
		dst        *time.Duration
		min        time.Duration
	}{
		{"anomaly_window", "Length of the windows in which failures and per-key traffic are counted.", &c.AnomalyWindow, time.Second},
		{"stale_after", "A key unused this long is reported stale in usage.", &c.StaleAfter, time.Second},
		{"usage_retention", "How long daily usage history is kept (at least 3 days), and a revoked key's usage (its tombstone and history) after its revocation; keep it above the mount's max lease TTL.", &c.UsageRetention, time.Minute},
		{"scan_interval", "How often the active node scans a batch of keys for key-expiring and revoke_unused_after.", &c.ScanInterval, 100 * time.Millisecond},
		{"delivery_retry_base", "Wait after a delivery's first failure; doubles per failure, with jitter.", &c.DeliveryRetryBase, 10 * time.Millisecond},
		{"delivery_retry_max", "Longest wait between two delivery attempts.", &c.DeliveryRetryMax, 10 * time.Millisecond},
		{"delivery_timeout", "Time a receiver gets to answer one delivery.", &c.DeliveryTimeout, 100 * time.Millisecond},
	}
}

func monitorInts(c *monitorConfig) []struct {
	name, desc string
	dst        *int
	min        int
} {
	return []struct {
		name, desc string
		dst        *int
		min        int
	}{
		{"tenant_failure_threshold", "Failed verifications of one tenant per window that raise a verify-anomaly.", &c.TenantFailureThreshold, 1},
		{"ip_failure_threshold", "Failed verifications from one client_ip per window that raise a verify-anomaly.", &c.IPFailureThreshold, 1},
		{"key_spike_factor", "A key's verifications in a window at this multiple of its own baseline raise a verify-anomaly.", &c.KeySpikeFactor, 2},
		{"key_spike_minimum", "Fewest verifications in a window that can count as a key's spike.", &c.KeySpikeMinimum, 1},
		{"scan_batch", "Keys the scan looks at per scan_interval.", &c.ScanBatch, 1},
		{"flush_max_writes", "Most storage writes one usage flush makes (a tenant or key that counted verifies or traffic takes two: its history and its totals); the rest waits for the next.", &c.FlushMaxWrites, 2},
		{"delivery_max_attempts", "Delivery attempts before a notification is dead-lettered.", &c.DeliveryMaxAttempts, 1},
	}
}

func monitorConfigFields() map[string]*framework.FieldSchema {
	def := defaultMonitorConfig()
	f := map[string]*framework.FieldSchema{}
	for _, d := range monitorDurations(def) {
		f[d.name] = &framework.FieldSchema{Type: framework.TypeDurationSecond, Description: d.desc, Default: int(d.dst.Seconds())}
	}
	for _, i := range monitorInts(def) {
		f[i.name] = &framework.FieldSchema{Type: framework.TypeInt, Description: i.desc, Default: *i.dst}
	}
	return f
}

func (b *backend) monitorConfigExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	entry, err := req.Storage.Get(ctx, monitorConfigPath)
	if err != nil {
		return false, fmt.Errorf("read monitoring config: %w", err)
	}
	return entry != nil, nil
}

func (b *backend) pathMonitorConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := readMonitorConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	data := map[string]interface{}{}
	for _, d := range monitorDurations(cfg) {
		// Sub-second settings (tests, mostly) read back as fractions.
		if *d.dst%time.Second == 0 {
			data[d.name] = int64(d.dst.Seconds())
		} else {
			data[d.name] = d.dst.Seconds()
		}
	}
	for _, i := range monitorInts(cfg) {
		data[i.name] = *i.dst
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathMonitorConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfg, err := readMonitorConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	for _, f := range monitorDurations(cfg) {
		v, ok, err := durationField(d, f.name)
		if err != nil {
			return fieldError(f.name, err), nil
		}
		if !ok {
			continue
		}
		if v < f.min {
			return logical.ErrorResponse("%s must be at least %s", f.name, f.min), nil
		}
		*f.dst = v
	}
	for _, f := range monitorInts(cfg) {
		v, ok, err := d.GetOkErr(f.name)
		if err != nil {
			return fieldError(f.name, err), nil
		}
		if !ok {
			continue
		}
		if v.(int) < f.min {
			return logical.ErrorResponse("%s must be at least %d", f.name, f.min), nil
		}
		*f.dst = v.(int)
	}
	if cfg.DeliveryRetryMax < cfg.DeliveryRetryBase {
		return logical.ErrorResponse("delivery_retry_max (%s) must not be below delivery_retry_base (%s)", cfg.DeliveryRetryMax, cfg.DeliveryRetryBase), nil
	}
	if err := putJSON(ctx, req.Storage, monitorConfigPath, "monitoring config", cfg); err != nil {
		return nil, err
	}
	b.applyMonitorConfig(cfg)
	return nil, nil
}

// durationField reads a TypeDurationSecond field without rounding a Go
// duration string ("250ms") down to whole seconds, which delivery timings
// in tests need; every other form ("90", 90, "30d") is the framework's.
func durationField(d *framework.FieldData, name string) (time.Duration, bool, error) {
	if s, ok := d.Raw[name].(string); ok {
		if v, err := time.ParseDuration(s); err == nil {
			return v, true, nil
		}
	}
	v, ok, err := d.GetOkErr(name)
	if err != nil || !ok {
		return 0, ok, err
	}
	return time.Duration(v.(int)) * time.Second, true, nil
}

const pathMonitorConfigHelpSyn = `Configure usage, anomaly detection, the key scan and notification delivery.`

const pathMonitorConfigHelpDesc = `
  anomaly_window            window of the failure and spike counters (60s)
  tenant_failure_threshold  failed verifications of a tenant per window (100)
  ip_failure_threshold      failed verifications from a client_ip per window (20)
  key_spike_factor          a key's verifications per window against its own
                            average of earlier windows (10x) ...
  key_spike_minimum         ... and at least this many (100)
  stale_after               unused keys reported stale (30 days)
  usage_retention           daily usage history kept, and revoked keys'
                            usage after revocation (90 days)
  scan_interval, scan_batch how the active node walks keys for key-expiring
                            and revoke_unused_after (1000 keys per minute)
  flush_max_writes          storage writes per usage flush (500; a tenant or
                            key takes two when its history changed)
  delivery_max_attempts, delivery_retry_base, delivery_retry_max,
  delivery_timeout          webhook retries (12 attempts, 2s doubling to 10m,
                            10s per attempt)

Each threshold raises one verify-anomaly per window and subject, not one per
request. Durations take Go syntax ("250ms", "1h") or seconds.
`
