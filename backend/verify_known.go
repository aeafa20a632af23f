package backend

import (
	"context"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// knownHashes holds every key hash that may exist on this mount, so verify
// answers an unknown key (a typo that passed the checksum, or a brute-force
// guess) from memory instead of a storage round trip to Vault, and a miss
// costs no more than a hit.
//
// It is a superset, never a subset, of the stored hashes: local writes add,
// local revokes remove, and an Invalidate (a change on another node, create
// or delete alike) adds; a hash that turns out absent in storage is removed
// by the verify that found out. A false "may exist" costs one storage read; a
// false "absent" never happens.
type knownHashes struct {
	mu    sync.RWMutex
	state int // knownUnloaded, knownLoading, knownLoaded
	set   map[[32]byte]struct{}
	// log keeps the changes made while the initial listing runs, applied on
	// top of it, so the listing cannot miss them.
	log []knownOp
}

const (
	knownUnloaded = iota
	knownLoading
	knownLoaded
)

type knownOp struct {
	h   [32]byte
	add bool
}

func (k *knownHashes) apply(h [32]byte, add bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch k.state {
	case knownLoaded:
		if add {
			k.set[h] = struct{}{}
		} else {
			delete(k.set, h)
		}
	case knownLoading:
		k.log = append(k.log, knownOp{h, add})
	}
}

func (k *knownHashes) add(h [32]byte)    { k.apply(h, true) }
func (k *knownHashes) remove(h [32]byte) { k.apply(h, false) }

// absent is true only when the hash is certainly not stored.
func (k *knownHashes) absent(h [32]byte) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.state != knownLoaded {
		return false
	}
	_, ok := k.set[h]
	return !ok
}

func (k *knownHashes) reset() {
	k.mu.Lock()
	k.state, k.set, k.log = knownUnloaded, nil, nil
	k.mu.Unlock()
}

// ensureKnownLoaded starts the one listing of the mount's hashes in the
// background; verify meanwhile reads storage as it would without the set.
func (b *backend) ensureKnownLoaded() {
	k := &b.known
	k.mu.Lock()
	if k.state != knownUnloaded || b.storage == nil {
		k.mu.Unlock()
		return
	}
	k.state = knownLoading
	k.mu.Unlock()
	go b.loadKnown(b.stopCtx, b.storage)
}

func (b *backend) loadKnown(ctx context.Context, s logical.Storage) {
	k := &b.known
	hexes, err := s.List(ctx, hashPrefix)
	if err != nil {
		b.Logger().Warn("listing key hashes failed; unknown keys cost a storage read until the next try", "error", err)
		k.reset()
		return
	}
	set := make(map[[32]byte]struct{}, len(hexes))
	for _, hx := range hexes {
		if h, ok := parseHash(hx); ok {
			set[h] = struct{}{}
		}
	}
	// Counted before finish publishes the map to concurrent writers.
	n := len(set)
	if k.finish(set) {
		b.Logger().Debug("key hashes loaded", "count", n)
	}
}

// finish installs a finished listing with the changes made meanwhile
// applied on top; false when the set was reset during the listing.
func (k *knownHashes) finish(set map[[32]byte]struct{}) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.state != knownLoading {
		return false
	}
	for _, op := range k.log {
		if op.add {
			set[op.h] = struct{}{}
		} else {
			delete(set, op.h)
		}
	}
	k.set, k.log, k.state = set, nil, knownLoaded
	return true
}
