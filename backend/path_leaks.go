package backend

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

// Leak actions: what leaks/report does to a key it matches (the mount
// config's leak_action).
const (
	leakRevoke  = "revoke"
	leakDisable = "disable"
	leakNotify  = "notify"
)

// Statuses of a leaks/report result.
const (
	leakMatched = "matched"
	leakUnknown = "unknown"
)

const (
	// maxLeakReports bounds one batch: a matched key costs a handful of
	// storage writes, so 1000 stay well inside a request's time. GitHub
	// may send several matches in one post; a relay splits bigger ones.
	maxLeakReports = 1000
	// The bounds of the fields other than the token, which are copied into
	// events: a URL of a file on GitHub is a few hundred bytes.
	maxLeakURLLen    = 2048
	maxLeakSourceLen = 128
)

func (b *backend) pathLeaks() []*framework.Path {
	return []*framework.Path{{
		Pattern:      "leaks/report$",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
		Fields: map[string]*framework.FieldSchema{
			"reports": {
				Type: framework.TypeSlice,
				Description: fmt.Sprintf(`Batch of 1-%d objects {"token", "type", "url", "source"}, as GitHub's secret scanning partner program posts them: token (required) is the string found, `+
					`type the scanner's name for the pattern, url where it was found, source what kind of place (content, commit, issue_comment, ...). Other fields are ignored.`, maxLeakReports),
				Required: true,
			},
		},
		// Update only: nothing is created here, so no policy needs create.
		ExistenceCheck: func(context.Context, *logical.Request, *framework.FieldData) (bool, error) { return true, nil },
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                  b.pathLeaksReport,
				Summary:                   "Report leaked keys found by a secret scanner: each matched key gets the mount's leak_action and a key-leaked event.",
				ForwardPerformanceStandby: true,
				DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "report", OperationSuffix: "leaks"},
			},
		},
		HelpSynopsis:    pathLeaksHelpSyn,
		HelpDescription: pathLeaksHelpDesc,
	}}
}

// leakReport is one validated entry of a leaks/report batch. token is the
// only secret in it: it is never logged, stored, echoed or put in an error.
type leakReport struct {
	token, typ, url, source string
}

// parseLeakReport checks one entry's shape. A refusal names the field
// (".token", or "" for the entry itself) and says what is wrong, never
// quoting a value: a scanner that mixes up its fields would send the token
// in any of them.
func parseLeakReport(item interface{}) (r leakReport, field, problem string) {
	m, ok := item.(map[string]interface{})
	if !ok {
		return r, "", "must be an object"
	}
	tok, ok := m["token"]
	if !ok || tok == nil {
		return r, ".token", "missing"
	}
	if r.token, ok = tok.(string); !ok {
		return r, ".token", "must be a string"
	}
	if r.token == "" {
		return r, ".token", "must not be empty"
	}
	for _, f := range []struct {
		name string
		dst  *string
		max  int
	}{
		{"type", &r.typ, maxLeakSourceLen},
		{"url", &r.url, maxLeakURLLen},
		{"source", &r.source, maxLeakSourceLen},
	} {
		v, ok := m[f.name]
		if !ok || v == nil {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return r, "." + f.name, "must be a string"
		}
		if len(s) > f.max {
			return r, "." + f.name, fmt.Sprintf("at most %d characters, got %d", f.max, len(s))
		}
		*f.dst = s
	}
	return r, "", ""
}

func (b *backend) pathLeaksReport(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	raw, ok, err := d.GetOkErr("reports")
	if err != nil {
		// The framework's message would quote the value, tokens included.
		return logical.ErrorResponse("invalid reports: must be a list of objects"), nil
	}
	if !ok {
		return logical.ErrorResponse("missing reports"), nil
	}
	list := raw.([]interface{})
	if len(list) == 0 {
		return logical.ErrorResponse("reports must hold at least one entry"), nil
	}
	if len(list) > maxLeakReports {
		return logical.ErrorResponse("reports must hold at most %d entries, got %d", maxLeakReports, len(list)), nil
	}
	reports := make([]leakReport, len(list))
	for i, item := range list {
		r, field, problem := parseLeakReport(item)
		if problem != "" {
			return logical.ErrorResponse("invalid reports[%d]%s: %s", i, field, problem), nil
		}
		reports[i] = r
	}
	// Validated as a whole before anything is acted on: a bad batch
	// changes nothing. The config is read at the first match, so a batch
	// of garbage costs no storage read at all.
	var cfg *mountConfig
	action := func() (string, error) {
		if cfg == nil {
			c, err := readConfig(ctx, req.Storage)
			if err != nil {
				return "", err
			}
			cfg = c
		}
		return cfg.LeakAction, nil
	}
	results := make([]interface{}, len(reports))
	for i, r := range reports {
		res, err := b.handleLeak(ctx, req.Storage, action, r)
		if err != nil {
			// Entries before this one are handled (and announced); a
			// retry of the batch finds them revoked (unknown) or in the
			// state the action left them.
			return nil, fmt.Errorf("reports[%d]: %w", i, err)
		}
		res["index"] = i
		results[i] = res
	}
	return &logical.Response{Data: map[string]interface{}{"results": results}}, nil
}

// handleLeak looks one reported token up and applies action to the key it
// is. A token that is not a well-formed key is unknown without a storage
// read; so is a well-formed one on a mount that never issued a key.
func (b *backend) handleLeak(ctx context.Context, s logical.Storage, leakAction func() (string, error), r leakReport) (map[string]interface{}, error) {
	unknown := map[string]interface{}{"status": leakUnknown}
	if _, ok := keyformat.Parse(r.token); !ok {
		return unknown, nil
	}
	h, err := b.getHasher(ctx, s, false)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return unknown, nil
	}
	sum := h.Sum(r.token)
	hashHex := hex.EncodeToString(sum[:])
	e, err := readKeyRecord(ctx, s, hashHex)
	if err != nil {
		return nil, err
	}
	if e == nil {
		// Never issued here, or revoked already (a repeated report):
		// only the record could tell them apart, and it is gone.
		return unknown, nil
	}
	if e.Hint == "" {
		e.Hint = keyformat.Hint(r.token)
	}
	action, err := leakAction()
	if err != nil {
		return nil, err
	}
	var actErr error
	switch action {
	case leakDisable:
		actErr = b.disableLeakedKey(ctx, s, e)
	case leakNotify:
	default:
		actErr = b.revokeLeakedKey(ctx, s, e, r)
	}
	b.keyLeaked(ctx, s, e, r, action, actErr)
	if actErr != nil {
		return nil, fmt.Errorf("%s key %q of tenant %q: %w", action, e.KeyID, e.Tenant, actErr)
	}
	return map[string]interface{}{
		"status": leakMatched,
		"hint":   e.Hint,
		"tenant": e.Tenant,
		"key_id": e.KeyID,
		"kind":   e.Kind,
		"action": action,
	}, nil
}

// revokeLeakedKey revokes the key as DELETE tenants/<t>/keys/<key_id> does:
// a static key's current key is replaced at once, with no grace.
func (b *backend) revokeLeakedKey(ctx context.Context, s logical.Storage, e *keyEntry, r leakReport) error {
	ctx = withRevokeCause(ctx, revokeCause{Reason: "leaked", Data: map[string]interface{}{"url": r.url, "source": r.source}})
	if e.Kind == kindStatic {
		return b.revokeStaticKeyNow(ctx, s, e)
	}
	return b.revokeKeyByHash(ctx, s, e.Tenant, e.KeyID, e.Hash)
}

// disableLeakedKey parks the key as keys/<key_id> status=disabled does,
// key-updated event included when it changed anything.
func (b *backend) disableLeakedKey(ctx context.Context, s logical.Storage, e *keyEntry) error {
	now := time.Now().UTC()
	var (
		out     *keyEntry
		changed []string
		err     error
	)
	if e.Kind == kindStatic {
		out, changed, err = b.setStaticKeyDisabled(ctx, s, e, true, now)
	} else {
		out, err = b.editKeyRecord(ctx, s, e.Hash, func(k *keyEntry) error {
			var aerr error
			changed, aerr = keyUpdate{disabled: new(true)}.apply(k, now)
			return aerr
		})
	}
	if err != nil {
		return err
	}
	if out != nil && len(changed) > 0 {
		b.keyUpdated(ctx, s, out, changed)
	}
	return nil
}

// keyLeaked raises key-leaked for a matched key. Its id is stable per key,
// place and outcome, so a scanner's retry of the same finding is one event
// to receivers, a finding in a second place another, and a failed action's
// event is not mistaken for the later success's.
func (b *backend) keyLeaked(ctx context.Context, s logical.Storage, e *keyEntry, r leakReport, action string, actErr error) {
	taken := action
	data := map[string]interface{}{
		"key_id": e.KeyID,
		"hint":   e.Hint,
		"kind":   e.Kind,
		"role":   e.Role,
		"name":   e.Name,
		"url":    r.url,
		"source": r.source,
		"type":   r.typ,
	}
	if actErr != nil {
		taken = "failed"
		data["failed_action"] = action
		data["error"] = actErr.Error()
		b.Logger().Error("leaked key reported, but its leak_action failed", "tenant", e.Tenant, "key_id", e.KeyID, "action", action, "error", actErr)
	} else {
		b.Logger().Warn("leaked key reported", "tenant", e.Tenant, "key_id", e.KeyID, "hint", e.Hint, "action", action, "source", r.source)
	}
	data["action"] = taken
	b.emit(ctx, s, newEvent(notify.KeyLeaked, e.Tenant, data,
		notify.StableID(notify.KeyLeaked, e.Tenant, e.KeyID, taken, r.url, r.source), time.Now()))
}

const pathLeaksHelpSyn = `Report leaked keys found by a secret scanner.`

const pathLeaksHelpDesc = `
Takes reports, a list of up to 1000 objects {"token", "type", "url",
"source"}: the shape GitHub's secret scanning partner program posts (a relay
wraps GitHub's JSON array as {"reports": [...]}; see docs/security.md), and
any scanner can send. token is required; type, url and source are optional
strings that go into the event.

Each token is checked offline first (shape and checksum): one that fails is
unknown, with no storage read. A well-formed token is looked up by its HMAC;
a key it matches, of any tenant, gets the mount's leak_action (config):

  revoke   (default) as DELETE tenants/<t>/keys/<key_id>: the key fails the
           very next verify; a static key's current key is replaced at once,
           with no grace, and Vault Agent renders the new one
  disable  as keys/<key_id> status=disabled: DISABLED until enabled again
  notify   the event only

and raises a key-leaked event (webhooks, Vault events) with the hint, tenant,
key_id, url, source and the action taken.

The answer, results, has one object per report, in order: for a matched key
{index, status: "matched", hint, tenant, key_id, kind, action}, otherwise
{index, status: "unknown"}. A revoked key's record is gone, so reporting it
again answers unknown and raises nothing. The answer never holds a token; nor
do errors or logs. A malformed batch is a 400 naming the entry and field
(invalid reports[3].token: ...) and changes nothing.

The path spans tenants by design: the token is the proof, whoever holds it.
Give the scanner's token the apikeys-leak-reporter policy, this path only.
`
