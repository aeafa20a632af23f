package backend

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// An onboarding that fails part way removes the static keys it created,
// even when the request's context ends at that moment.
func TestOnboardingRollsBackAfterTheRequestEnds(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The second environment's name check is where the request "times out".
	// Like Vault's storage over gRPC, refuse calls on a done context.
	refuseDone := func(ctx context.Context, _ string) error { return ctx.Err() }
	cs := &hookStorage{Storage: s, beforeDelete: refuseDone, beforeGet: func(ctx context.Context, k string) error {
		if k == staticKeyPrefix("acme")+"web-test" {
			cancel()
		}
		return ctx.Err()
	}}
	_, err := b.HandleRequest(ctx, &logical.Request{
		Operation: logical.UpdateOperation, Path: "tenants/acme/onboard", Storage: cs,
		Data: map[string]interface{}{"role": "web", "environments": "live,test", "rotation_period": "1h"},
	})
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("onboarding with its request cancelled: %v", err)
	}
	names, err := s.List(context.Background(), staticKeyPrefix("acme"))
	if err != nil || len(names) != 0 {
		t.Fatalf("static keys left by a failed onboarding: %v %v", names, err)
	}
}
