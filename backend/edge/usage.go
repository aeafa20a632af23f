package edge

import (
	"context"
	"fmt"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// startUsageReports sends, every UsageInterval and once more at the end,
// what keys verified from memory were used, so the mount's usage (last
// used, requests) stays right although Vault never saw the checks.
func (e *Edge) startUsageReports(ctx context.Context) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(e.cfg.UsageInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				final, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				e.reportUsage(final)
				cancel()
				return
			case <-t.C:
				e.reportUsage(ctx)
			}
		}
	}()
	return func() { <-done }
}

func (e *Edge) collectUsage() []contract.UsageReport {
	s := e.store
	now := e.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []contract.UsageReport
	for _, k := range s.byHash {
		u := contract.UsageReport{Tenant: k.w.Tenant, KeyID: k.w.KeyID, Requests: k.used.Swap(0), LastUsedAt: k.lastUsed.Load()}
		// Every request this edge served was a VALID answer of its own.
		if u.Requests > 0 {
			u.VerifyByCode = map[string]uint64{contract.CodeValid: u.Requests}
		}
		u.VerifyByCode = k.takeRefusals(u.VerifyByCode)
		// Quota use not yet acknowledged goes again until it is: a
		// report lost on the way must not be lost from the quota.
		quotaReport(&u, k, s.tenantQuotas[k.w.Tenant], now)
		if u.Requests > 0 || len(u.VerifyByCode) > 0 || u.QuotaUsed > 0 || u.TenantQuotaUsed > 0 {
			out = append(out, u)
		}
	}
	return out
}

// giveBack returns counts that could not be sent, so the next report
// carries them.
func (e *Edge) giveBack(entries []contract.UsageReport) {
	s := e.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, u := range entries {
		if h, ok := s.byID[u.KeyID]; ok {
			s.byHash[h].used.Add(u.Requests)
			s.byHash[h].giveRefusals(u.VerifyByCode)
		}
	}
}

func (e *Edge) reportUsage(ctx context.Context) {
	entries := e.collectUsage()
	for len(entries) > 0 {
		n := min(len(entries), contract.MaxUsageReports)
		batch := entries[:n]
		entries = entries[n:]
		answer, err := e.sendUsage(ctx, batch)
		if err != nil {
			e.m.usageReported.WithLabelValues("error").Add(float64(len(batch)))
			e.log.Warn("usage report failed; kept for the next one", "entries", len(batch), "error", err)
			e.giveBack(batch)
			e.giveBack(entries)
			return
		}
		e.m.usageReported.WithLabelValues("ok").Add(float64(len(batch)))
		e.store.acknowledged(batch, answer.Quotas)
	}
}

// sendUsage reports batch and returns the quota standings Vault answered.
func (e *Edge) sendUsage(ctx context.Context, batch []contract.UsageReport) (contract.UsageReportAnswer, error) {
	var answer contract.UsageReportAnswer
	reports := make([]interface{}, len(batch))
	for i, u := range batch {
		reports[i] = u
	}
	sec, err := e.client.Logical().WriteWithContext(ctx, e.cfg.Mount+"/usage/report", map[string]interface{}{"reports": reports})
	if err != nil {
		return answer, fmt.Errorf("write usage/report: %w", err)
	}
	if sec != nil {
		if err := remarshal(sec.Data, &answer); err != nil {
			// Counted by Vault all the same; the edge learns the totals
			// from the feed instead.
			e.log.Warn("usage/report answer unreadable", "error", err)
		}
	}
	return answer, nil
}
