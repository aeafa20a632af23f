package backend

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func (b *backend) pathTidy() []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "tidy/status$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathTidyStatusRead,
					Summary:      "Report the last tidy run.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "tidy-status"},
				},
			},
			HelpSynopsis:    pathTidyStatusHelpSyn,
			HelpDescription: pathTidyStatusHelpDesc,
		},
		{
			Pattern:      "tidy$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields: map[string]*framework.FieldSchema{
				"safety_buffer": {
					Type:        framework.TypeDurationSecond,
					Description: "Keep expired keys this long past their expiry (they verify as EXPIRED meanwhile) before removing them.",
					Default:     defaultTidySafetyBuffer,
				},
				"batch_size": {
					Type:        framework.TypeInt,
					Description: "Keys examined per batch; the tidy yields between batches so it never holds locks or storage long.",
					Default:     defaultTidyBatch,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathTidyWrite,
					Summary:                   "Remove expired keys and orphaned records, in the background.",
					DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "tidy"},
					ForwardPerformanceStandby: true,
				},
			},
			HelpSynopsis:    pathTidyHelpSyn,
			HelpDescription: pathTidyHelpDesc,
		},
	}
}

func (b *backend) pathTidyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	for _, f := range []string{"safety_buffer", "batch_size"} {
		if _, _, err := d.GetOkErr(f); err != nil {
			return fieldError(f, err), nil
		}
	}
	buf := d.Get("safety_buffer").(int)
	batch := d.Get("batch_size").(int)
	if batch < 1 || batch > 100_000 {
		return logical.ErrorResponse("batch_size must be between 1 and 100000"), nil
	}
	if buf < 0 {
		return logical.ErrorResponse("safety_buffer must not be negative"), nil
	}
	if !b.startTidy(req.Storage, "manual", time.Duration(buf)*time.Second, batch) {
		return logical.ErrorResponse("a tidy is already running; see tidy/status"), nil
	}
	resp := &logical.Response{}
	resp.AddWarning("Tidy started in the background; read tidy/status for its progress.")
	return logical.RespondWithStatusCode(resp, req, 202)
}

func (b *backend) pathTidyStatusRead(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	b.tidy.mu.Lock()
	st := b.tidy.status
	b.tidy.mu.Unlock()
	if st.State == "" {
		return &logical.Response{Data: map[string]interface{}{"state": "never_run"}}, nil
	}
	var finished interface{}
	if !st.FinishedAt.IsZero() {
		finished = st.FinishedAt.Format(time.RFC3339)
	}
	return &logical.Response{Data: map[string]interface{}{
		"state":             st.State,
		"trigger":           st.Trigger,
		"started_at":        st.StartedAt.Format(time.RFC3339),
		"finished_at":       finished,
		"keys_checked":      st.KeysChecked,
		"expired_removed":   st.ExpiredRemoved,
		"orphans_removed":   st.OrphansRemoved,
		"history_compacted": st.HistoryCompacted,
		"history_removed":   st.HistoryRemoved,
		"error":             st.Error,
	}}, nil
}

const pathTidyHelpSyn = `Remove expired keys and orphaned records.`

const pathTidyHelpDesc = `
Starts a tidy in the background (HTTP 202) and returns at once; read
tidy/status for its progress and result. The tidy walks every tenant's keys
and removes:

  - keys expired longer than safety_buffer ago: leased keys whose lease
    revocation never ran, and non-leased keys (roles with leased=false),
    which rely on tidy to be removed once expired;
  - index entries whose key record is gone, and key records no index entry
    points at: leftovers of a write interrupted by a crash;
  - usage history that aged out: hourly buckets older than 48 hours, daily
    ones older than config/monitoring usage_retention (at most 20000
    history writes per run; the next run goes on).

It works in batches of batch_size with a pause between, and never touches
the current key of a static key. The active node also runs it every hour.
Any node may receive the request: performance standbys forward it.
`

const pathTidyStatusHelpSyn = `Report the last tidy run.`

const pathTidyStatusHelpDesc = `
state (running, finished, error or never_run), what started it (manual or
periodic), when it started and finished, how many keys it checked, how
many expired keys and orphaned records it removed, how many days of usage
history it compacted (hours dropped) and removed, and the error if any.
`
