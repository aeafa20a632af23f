package edge

import (
	"testing"
	"time"
)

func TestReloginDelayLeavesAThirdOfTheTokenForRetries(t *testing.T) {
	for _, tc := range []struct {
		ttl, want time.Duration
	}{
		{time.Hour, 40 * time.Minute},
		{30 * time.Second, 20 * time.Second},
		{3 * time.Second, 2 * time.Second},
		{time.Second, minRelogin},
	} {
		if got := reloginDelay(tc.ttl); got != tc.want {
			t.Errorf("ttl %s: log in again after %s, want %s", tc.ttl, got, tc.want)
		}
	}
}
