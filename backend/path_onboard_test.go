package backend

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// ctxStorage refuses calls on a done context, as Vault's storage over gRPC
// does, and cancels the request's context at the first read of onKey.
type ctxStorage struct {
	logical.Storage
	onKey  string
	cancel context.CancelFunc
}

func (s *ctxStorage) Get(ctx context.Context, k string) (*logical.StorageEntry, error) {
	if k == s.onKey {
		s.cancel()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.Storage.Get(ctx, k)
}

func (s *ctxStorage) Delete(ctx context.Context, k string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Storage.Delete(ctx, k)
}

// An onboarding that fails part way removes the static keys it created,
// even when the request's context ends at that moment.
func TestOnboardingRollsBackAfterTheRequestEnds(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The second environment's name check is where the request "times out".
	cs := &ctxStorage{Storage: s, onKey: staticKeyPrefix("acme") + "web-test", cancel: cancel}
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
