package backend

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// rateLimiter holds one token bucket per key on this node. Limits are per
// node by design: verify runs on standbys without talking to the active node.
type rateLimiter struct {
	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newRateLimiter() *rateLimiter {
	return &rateLimiter{buckets: make(map[string]*rate.Limiter)}
}

// allow spends one token of the key's bucket: limit tokens per period, with
// a burst of the whole limit so a fresh key may use its allowance at once.
func (r *rateLimiter) allow(keyID string, limit int, period time.Duration, now time.Time) bool {
	r.mu.Lock()
	l, ok := r.buckets[keyID]
	if !ok {
		l = rate.NewLimiter(rate.Limit(float64(limit)/period.Seconds()), limit)
		r.buckets[keyID] = l
	}
	r.mu.Unlock()
	return l.AllowN(now, 1)
}

func (r *rateLimiter) forget(keyID string) {
	r.mu.Lock()
	delete(r.buckets, keyID)
	r.mu.Unlock()
}

func (r *rateLimiter) reset() {
	r.mu.Lock()
	r.buckets = make(map[string]*rate.Limiter)
	r.mu.Unlock()
}
