package backend

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

const (
	// maxFeedWait stays well below Vault's default 90 s request timeout.
	maxFeedWait          = 60 * time.Second
	maxFeedBatch         = 1000
	defaultSnapshotLimit = 500
	maxSnapshotLimit     = 5000
)

func (b *backend) pathSync() []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "sync/snapshot$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
			},
			Fields: map[string]*framework.FieldSchema{
				"after": {
					Type:        framework.TypeString,
					Description: "Cursor from the previous page's next; empty for the first page.",
				},
				"limit": {
					Type:        framework.TypeInt,
					Default:     defaultSnapshotLimit,
					Description: fmt.Sprintf("Keys per page, at most %d.", maxSnapshotLimit),
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathSyncSnapshot,
					Summary:      "Read one page of the keys an edge verifier needs.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "sync-snapshot"},
				},
			},
			HelpSynopsis:    pathSyncHelpSyn,
			HelpDescription: pathSyncHelpDesc,
		},
		{
			Pattern: "sync/changes$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
			},
			Fields: map[string]*framework.FieldSchema{
				"since": {
					Type:        framework.TypeInt,
					Description: "Sequence number already applied (the snapshot's seq, then each answer's seq).",
				},
				"wait": {
					Type:        framework.TypeDurationSecond,
					Description: fmt.Sprintf("Long-poll: wait up to this long (at most %s) for a change when there is none.", maxFeedWait),
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathSyncChanges,
					Summary:      "Read the changes after a sequence number.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "sync-changes"},
				},
			},
			HelpSynopsis:    pathSyncHelpSyn,
			HelpDescription: pathSyncHelpDesc,
		},
	}
}

func (b *backend) pathSyncSnapshot(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	after := d.Get("after").(string)
	limit := d.Get("limit").(int)
	if limit <= 0 || limit > maxSnapshotLimit {
		return logical.ErrorResponse("limit must be between 1 and %d", maxSnapshotLimit), nil
	}
	if after != "" {
		if _, ok := parseHash(after); !ok {
			return logical.ErrorResponse("after must be the next value of the previous page"), nil
		}
	}
	_, secret, err := b.edgeHasher(ctx, req.Storage, true)
	if err != nil {
		return nil, err
	}
	// The seq is read before the keys: whatever changes while the pages are
	// read is replayed from the feed, and replaying is idempotent.
	head, err := b.feed.readHead(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	hashes, err := req.Storage.List(ctx, hashPrefix)
	if err != nil {
		return nil, fmt.Errorf("list key records: %w", err)
	}
	sort.Strings(hashes)
	i := sort.SearchStrings(hashes, after)
	if i < len(hashes) && hashes[i] == after {
		i++
	}
	keys := make([]*contract.WireKey, 0, min(limit, len(hashes)-i))
	var quotas []*contract.QuotaStanding
	now := b.usage.now()
	next := ""
	for ; i < len(hashes); i++ {
		if len(keys) == limit {
			next = hashes[i-1]
			break
		}
		rec, err := readKeyRecord(ctx, req.Storage, hashes[i])
		if err != nil {
			return nil, err
		}
		if rec == nil || rec.EdgeHash == "" {
			continue
		}
		keys = append(keys, wireKeyOf(rec))
		st, err := b.keyStanding(ctx, req.Storage, rec, now)
		if err != nil {
			return nil, err
		}
		if st != nil && (st.Used > 0 || st.Credit > 0) {
			quotas = append(quotas, st)
		}
	}
	page := contract.SnapshotPage{
		Seq:         head.Seq,
		VerifierKey: base64.StdEncoding.EncodeToString(secret),
		Keys:        keys,
		Next:        next,
	}
	if after == "" {
		tenants, err := req.Storage.List(ctx, tenantPrefix)
		if err != nil {
			return nil, fmt.Errorf("list tenants: %w", err)
		}
		status := make(map[string]string, len(tenants))
		tenantQuotas := map[string]contract.QuotaRule{}
		for _, name := range tenants {
			if strings.HasSuffix(name, "/") {
				continue
			}
			t, err := readTenant(ctx, req.Storage, name)
			if err != nil {
				return nil, err
			}
			if t == nil {
				continue
			}
			status[name] = t.Status
			if r := t.quotaRule(); r != nil {
				tenantQuotas[name] = *r
				st, err := b.tenantStanding(ctx, req.Storage, t, now)
				if err != nil {
					return nil, err
				}
				quotas = append(quotas, st)
			}
		}
		page.Tenants = status
		page.TenantQuotas = tenantQuotas
	}
	page.Quotas = quotas
	return &logical.Response{Data: page.Data()}, nil
}

func (b *backend) pathSyncChanges(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	sinceRaw := d.Get("since").(int)
	if sinceRaw < 0 {
		return logical.ErrorResponse("since must not be negative"), nil
	}
	since := uint64(sinceRaw)
	wait := time.Duration(d.Get("wait").(int)) * time.Second
	if wait < 0 || wait > maxFeedWait {
		return logical.ErrorResponse("wait must be between 0 and %d seconds", int(maxFeedWait.Seconds())), nil
	}
	deadline := time.Now().Add(wait)
	for {
		// Taken before reading, so an append in between still wakes us.
		ch := b.feed.waitChan()
		changes, head, ok, err := b.feed.changesSince(ctx, req.Storage, since, maxFeedBatch)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, logical.CodedError(http.StatusGone, fmt.Sprintf(
				"resync required: changes after %d are no longer kept (oldest kept: %d, latest: %d); load sync/snapshot again",
				since, head.First, head.Seq))
		}
		left := time.Until(deadline)
		if len(changes) > 0 || left <= 0 {
			seq := since
			if len(changes) > 0 {
				seq = changes[len(changes)-1].Seq
			}
			if changes == nil {
				changes = []*contract.Change{}
			}
			page := contract.ChangesPage{Changes: changes, Seq: seq, Head: head.Seq}
			return &logical.Response{Data: page.Data()}, nil
		}
		if err := b.feed.wait(ctx, ch, left); err != nil {
			return nil, fmt.Errorf("wait for edge changes: %w", err)
		}
	}
}

const pathSyncHelpSyn = `Feed edge verifiers (cmd/apikeys-edge): a snapshot of keys and a change feed.`

const pathSyncHelpDesc = `
An edge verifier next to an API gateway verifies keys from memory. It loads
sync/snapshot page by page (after=<next of the previous page>, limit) and then
follows sync/changes?since=<seq>&wait=<seconds>.

Each key comes with edge_hash, an HMAC-SHA256 of the key under the mount's
verifier secret (returned as verifier_key so the edge can hash presented
keys). The verifier secret is not the storage pepper: its holder can confirm
a presented key but cannot find storage records, recover a key, or mint one.
Give these paths to edge verifiers only (bootstrap policy
apikeys-gateway-global).

Changes are recorded on writes only (issue, renew, rotation, key update,
revoke, expiry by tidy, tenant status), never on verify. At least the newest ` + "10000" + ` are kept
(compaction runs about once a minute); an edge further behind gets HTTP 410
and must load the snapshot again.
`
