package edge

import (
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// Quotas on the edge. Vault's active node counts a quota for the whole
// cluster; an edge serves from memory, so it keeps per quota
// (contract.QuotaState) what it learned of the cluster's total (Known,
// Credit: from the snapshot, the feed's OpQuota changes and the answer to
// each usage report) and what it served itself since its last
// acknowledged report (Spent). It may serve up to
//
//	limit + credit - known - spent
//
// so it never serves more than the quota on its own, and the cluster
// overshoots only by what the others served that it has not yet learned
// (docs/monitoring.md has the bound).

// tenantQuota is a tenant's quota and what this edge knows of it.
type tenantQuota struct {
	rule  contract.QuotaRule
	state contract.QuotaState
}

// setTenantQuotaLocked applies a tenant's quota from the feed: nil for
// none. A changed limit keeps what was counted; a changed period starts
// over, as on Vault.
func (s *store) setTenantQuotaLocked(name string, r *contract.QuotaRule) {
	if r == nil || !r.Applies() {
		delete(s.tenantQuotas, name)
		return
	}
	n := &tenantQuota{rule: *r}
	// Verifies read a tenantQuota without the lock, so a new rule is a
	// new one, with the counts of the old when the period stays.
	if old := s.tenantQuotas[name]; old != nil && old.rule.Period == r.Period {
		carryState(&n.state, &old.state)
	}
	s.tenantQuotas[name] = n
}

// learnLocked raises what the edge knows to the standings Vault sent.
func (s *store) learnLocked(quotas []*contract.QuotaStanding) {
	for _, q := range quotas {
		if q.KeyID == "" {
			if tq := s.tenantQuotas[q.Tenant]; tq != nil {
				tq.state.Learn(tq.rule, q)
			}
			continue
		}
		if h, ok := s.byID[q.KeyID]; ok {
			if k := s.byHash[h]; k.quota != nil && k.w.Tenant == q.Tenant {
				k.qs.Learn(*k.quota, q)
			}
		}
	}
}

// carry raises dst to what src holds, meter by meter: a key renewed or a
// snapshot reloaded must not forget what this edge served or learned.
func carry(dst, src *contract.Meter) {
	if idx, n, ok := src.Word(); ok {
		dst.Raise(idx, n)
	}
}

func carryState(dst, src *contract.QuotaState) {
	carry(&dst.Spent, &src.Spent)
	carry(&dst.Known, &src.Known)
	carry(&dst.Credit, &src.Credit)
}

func carryKeyQuota(k, prev *key) {
	if k.quota != nil && prev.quota != nil && *k.quota == *prev.quota {
		carryState(&k.qs, &prev.qs)
	}
	carry(&k.tenantSpent, &prev.tenantSpent)
}

// carryCounts carries the usage and quota counts of old into n, a snapshot about to
// replace it. Caller holds old.mu.
func carryCounts(old, n *store) {
	for h, k := range n.byHash {
		if prev := old.byHash[h]; prev != nil {
			k.carryUsage(prev)
			carryKeyQuota(k, prev)
		}
	}
	for name, tq := range n.tenantQuotas {
		if prev := old.tenantQuotas[name]; prev != nil && prev.rule.Period == tq.rule.Period {
			carryState(&tq.state, &prev.state)
		}
	}
}

// spendQuota is edgeStore.Spend's quota part.
func spendQuota(k *key, tq *tenantQuota, now time.Time) (string, contract.Quota) {
	var kr, tr contract.QuotaRule
	var ks, ts *contract.QuotaState
	if k.quota != nil {
		kr, ks = *k.quota, &k.qs
	}
	if tq != nil {
		tr, ts = tq.rule, &tq.state
	}
	if ks == nil && ts == nil {
		return "", contract.Quota{}
	}
	code, q := contract.TakeQuota(now, kr, ks, tr, ts)
	if code == "" && ts != nil {
		k.tenantSpent.Add(tr.Period.Index(now), 1)
	}
	return code, q
}

// quotaReport adds to u what key k served of its quotas and has not had
// acknowledged. Caller holds the store's read lock.
func quotaReport(u *contract.UsageReport, k *key, tq *tenantQuota, now time.Time) {
	if k.quota != nil {
		idx := k.quota.Period.Index(now)
		u.QuotaPeriodStart, u.QuotaUsed = k.quota.Period.StartSec(idx), k.qs.Spent.Load(idx)
	}
	if tq != nil {
		idx := tq.rule.Period.Index(now)
		u.TenantQuotaPeriodStart, u.TenantQuotaUsed = tq.rule.Period.StartSec(idx), k.tenantSpent.Load(idx)
	}
}

// acknowledged takes what Vault counted (batch, now answered with where
// the quotas stand) off what this edge still counts as its own: Vault's
// totals hold it now. The standings are learned first, so for a moment a
// request counts twice, never not at all.
func (s *store) acknowledged(batch []contract.UsageReport, standings []*contract.QuotaStanding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.learnLocked(standings)
	for _, u := range batch {
		h, ok := s.byID[u.KeyID]
		if !ok {
			continue
		}
		k := s.byHash[h]
		if u.QuotaUsed > 0 && k.quota != nil {
			k.qs.Spent.Add(k.quota.Period.Index(time.Unix(u.QuotaPeriodStart, 0)), -u.QuotaUsed)
		}
		if tq := s.tenantQuotas[k.w.Tenant]; u.TenantQuotaUsed > 0 && tq != nil {
			idx := tq.rule.Period.Index(time.Unix(u.TenantQuotaPeriodStart, 0))
			k.tenantSpent.Add(idx, -u.TenantQuotaUsed)
			tq.state.Spent.Add(idx, -u.TenantQuotaUsed)
		}
	}
}
