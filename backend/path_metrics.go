package backend

import (
	"bytes"
	"context"
	"fmt"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/prometheus/common/expfmt"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

func (b *backend) pathMetrics() []*framework.Path {
	return []*framework.Path{{
		Pattern: "metrics$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathMetricsRead,
				Summary:      "Prometheus metrics of this mount on this node, in the text exposition format.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "metrics"},
			},
		},
		HelpSynopsis:    pathMetricsHelpSyn,
		HelpDescription: pathMetricsHelpDesc,
	}}
}

func (b *backend) pathMetricsRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	if err := b.refreshStorageGauges(ctx, req.Storage); err != nil {
		return nil, err
	}
	families, err := b.metrics.reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, format)
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return nil, fmt.Errorf("encode metric %s: %w", f.GetName(), err)
		}
	}
	return &logical.Response{Data: map[string]interface{}{
		logical.HTTPContentType: string(format),
		logical.HTTPRawBody:     buf.Bytes(),
		logical.HTTPStatusCode:  http.StatusOK,
	}}, nil
}

// refreshStorageGauges sets the gauges that storage, not memory, knows:
// keys per tenant and dead letters. One List per tenant per scrape.
func (b *backend) refreshStorageGauges(ctx context.Context, s logical.Storage) error {
	tenants, err := s.List(ctx, tenantPrefix)
	if err != nil {
		return fmt.Errorf("list tenants: %w", err)
	}
	b.metrics.activeKeys.Reset()
	for _, t := range tenants {
		ids, err := s.List(ctx, keyIndexPrefix(t))
		if err != nil {
			return fmt.Errorf("list keys of tenant %q: %w", t, err)
		}
		b.metrics.activeKeys.WithLabelValues(t).Set(float64(len(ids)))
	}
	failed, err := s.List(ctx, notify.FailedPrefix)
	if err != nil {
		return fmt.Errorf("list dead letters: %w", err)
	}
	b.metrics.deadLetters.Set(float64(len(failed)))
	return nil
}

const pathMetricsHelpSyn = `Prometheus metrics of this mount.`

const pathMetricsHelpDesc = `
Answers in the Prometheus text exposition format (not JSON), for a scrape
job with a Vault token that may read this path:

  apikeys_verify_total{tenant,code}          verify answers
  apikeys_verify_duration_seconds            verify decision latency (histogram)
  apikeys_keys_active{tenant}                keys held now
  apikeys_keys_issued_total{tenant}, apikeys_keys_revoked_total{tenant}
  apikeys_rotations_total{tenant}, apikeys_rotation_failures_total{tenant}
  apikeys_notification_queue_depth           deliveries waiting (active node)
  apikeys_notification_deliveries_total{target,result}
  apikeys_notification_dead_lettered_total{target}, apikeys_notification_dead_letters
  apikeys_verify_anomalies_total{tenant,kind}

Counters are this node's since the plugin started. Failures that name no
tenant and carry a shared key prefix count under tenant="_unknown". See
docs/monitoring.md for a scrape configuration.
`
