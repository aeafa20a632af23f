package backend

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

func mustAddr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// regenerate makes a well-formed key with the same prefix and environment
// that was never issued.
func regenerate(t testing.TB, key string) string {
	t.Helper()
	parts := strings.SplitN(key, "_", 3)
	k, err := keyformat.Generate(parts[0], parts[1])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// badChecksum changes the last checksum character of a key.
func badChecksum(key string) string {
	last := key[len(key)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return key[:len(key)-1] + string(repl)
}

// coldCaches drops what verify has cached, as a restart would, without
// stopping the backend's background work the way Clean does.
func coldCaches(b *backend) {
	b.cache.reset()
	b.known.reset()
	b.resetHasher()
}
