package backend

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

type pepperEntry struct {
	Pepper []byte `json:"pepper"`
}

// hasherState caches the loaded pepper; b.hasher is nil until the first
// load. A state with a nil hasher means the mount had no pepper when it was
// read, so no key can exist and verify needs no read; Invalidate(pepper) or
// the first issue (getHasher with create) replaces it.
type hasherState struct {
	hasher *keyformat.Hasher
}

func (b *backend) resetHasher() {
	b.pepperMu.Lock()
	b.hasher.Store(nil)
	b.pepperMu.Unlock()
}

// getHasher returns the mount's hasher. With create it generates and stores
// the pepper on first use (issue); without it (verify) it never writes and
// returns nil when there is no pepper yet.
//
// The loaded state is read without a lock. Verify calls this between
// starting its slot's memory access and computing the HMAC, and on x86 a
// lock's atomic instruction waits for that access to finish: a read lock
// here cost ~100 ns of a verify among 1M keys (docs/performance.md).
func (b *backend) getHasher(ctx context.Context, s logical.Storage, create bool) (*keyformat.Hasher, error) {
	if st := b.hasher.Load(); st != nil && (st.hasher != nil || !create) {
		return st.hasher, nil
	}

	b.pepperMu.Lock()
	defer b.pepperMu.Unlock()
	if st := b.hasher.Load(); st != nil && (st.hasher != nil || !create) {
		return st.hasher, nil
	}
	pe, err := getJSON[pepperEntry](ctx, s, pepperPath, "pepper")
	if err != nil {
		return nil, err
	}
	var pepper []byte
	switch {
	case pe != nil:
		pepper = pe.Pepper
	case create:
		if pepper, err = keyformat.NewPepper(); err != nil {
			return nil, fmt.Errorf("generate pepper: %w", err)
		}
		if err := putJSON(ctx, s, pepperPath, "pepper", pepperEntry{Pepper: pepper}); err != nil {
			return nil, err
		}
	default:
		b.hasher.Store(&hasherState{})
		return nil, nil
	}
	h, err := keyformat.NewHasher(pepper)
	if err != nil {
		return nil, fmt.Errorf("load pepper: %w", err)
	}
	b.hasher.Store(&hasherState{hasher: h})
	return h, nil
}
