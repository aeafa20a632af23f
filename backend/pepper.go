package backend

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// pepperPath holds the per-mount HMAC secret under which key hashes are
// stored. It is seal-wrapped (PathsSpecial) and never returned by any path.
const pepperPath = "pepper"

type pepperEntry struct {
	Pepper []byte `json:"pepper"`
}

// hasherState caches the loaded pepper. loaded with a nil hasher means the
// mount has no pepper yet, so no key can exist and verify needs no read.
type hasherState struct {
	hasher *keyformat.Hasher
}

func (b *backend) resetHasher() {
	b.pepperMu.Lock()
	b.hasher = nil
	b.pepperMu.Unlock()
}

// getHasher returns the mount's hasher. With create it generates and stores
// the pepper on first use (issue); without it (verify) it never writes and
// returns nil when there is no pepper yet.
func (b *backend) getHasher(ctx context.Context, s logical.Storage, create bool) (*keyformat.Hasher, error) {
	b.pepperMu.RLock()
	st := b.hasher
	b.pepperMu.RUnlock()
	if st != nil && (st.hasher != nil || !create) {
		return st.hasher, nil
	}

	b.pepperMu.Lock()
	defer b.pepperMu.Unlock()
	if b.hasher != nil && (b.hasher.hasher != nil || !create) {
		return b.hasher.hasher, nil
	}
	entry, err := s.Get(ctx, pepperPath)
	if err != nil {
		return nil, fmt.Errorf("read pepper: %w", err)
	}
	var pepper []byte
	switch {
	case entry != nil:
		var pe pepperEntry
		if err := entry.DecodeJSON(&pe); err != nil {
			return nil, fmt.Errorf("decode pepper: %w", err)
		}
		pepper = pe.Pepper
	case create:
		if pepper, err = keyformat.NewPepper(); err != nil {
			return nil, fmt.Errorf("generate pepper: %w", err)
		}
		entry, err := logical.StorageEntryJSON(pepperPath, pepperEntry{Pepper: pepper})
		if err != nil {
			return nil, fmt.Errorf("encode pepper: %w", err)
		}
		if err := s.Put(ctx, entry); err != nil {
			return nil, fmt.Errorf("write pepper: %w", err)
		}
	default:
		b.hasher = &hasherState{}
		return nil, nil
	}
	h, err := keyformat.NewHasher(pepper)
	if err != nil {
		return nil, fmt.Errorf("load pepper: %w", err)
	}
	b.hasher = &hasherState{hasher: h}
	return h, nil
}
