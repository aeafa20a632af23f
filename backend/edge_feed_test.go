package backend

import (
	"context"
	"testing"
)

// A head write on another node wakes long polls and leaves the verifier
// hasher alone; only a write of the verifier secret drops it.
func TestInvalidateOfTheFeedDropsOnlyWhatChanged(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	ctx := context.Background()
	h1, _, err := b.edgeHasher(ctx, s, false)
	if err != nil || h1 == nil {
		t.Fatalf("verifier after issue: %v %v", h1, err)
	}
	wake := b.feed.waitChan()
	b.invalidate(ctx, feedHeadPath)
	select {
	case <-wake:
	default:
		t.Fatal("a head invalidation did not wake long polls")
	}
	if b.feed.head != nil {
		t.Fatal("the cached head survived its invalidation")
	}
	if b.feed.verifier != h1 {
		t.Fatal("a head invalidation dropped the verifier hasher")
	}
	b.invalidate(ctx, verifierPath)
	if b.feed.verifier != nil {
		t.Fatal("a verifier invalidation kept the verifier hasher")
	}
}
