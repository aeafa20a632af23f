package keyformat

import (
	"hash/crc32"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	valid := refKey("ak", "live", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg")
	f.Add(valid)
	f.Add("")
	f.Add(valid[:len(valid)-1] + "0")
	f.Add("ak_live_" + valid[len("ak_live_"):len(valid)-1] + "_")
	f.Add("a_b_" + strings.Repeat("0", BodyLen+ChecksumLen))
	f.Add(refKey("abcdefghijklmnop", "abcdefghij", strings.Repeat("z", BodyLen)))
	f.Add(strings.Repeat("a_", 100))

	f.Fuzz(func(t *testing.T, key string) {
		p, ok := Parse(key)
		if !ok {
			if p != (Parts{}) {
				t.Fatalf("rejected key %q returned non-empty parts %+v", key, p)
			}
			return
		}
		if err := ValidatePrefix(p.Prefix); err != nil {
			t.Fatalf("accepted key %q has bad prefix: %v", key, err)
		}
		if err := ValidateEnvironment(p.Environment); err != nil {
			t.Fatalf("accepted key %q has bad environment: %v", key, err)
		}
		head := p.Prefix + "_" + p.Environment + "_"
		if !strings.HasPrefix(key, head) || len(key) != len(head)+BodyLen+ChecksumLen {
			t.Fatalf("accepted key %q does not have the shape %s<%d chars>", key, head, BodyLen+ChecksumLen)
		}
		n := len(key) - ChecksumLen
		want := refBase62Uint(crc32.ChecksumIEEE([]byte(key[:n])))
		if key[n:] != want {
			t.Fatalf("accepted key %q has checksum %q, recomputed %q", key, key[n:], want)
		}
	})
}

// refBase62Uint avoids math/big so the fuzz loop stays fast while still
// being independent of the package encoder.
func refBase62Uint(v uint32) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	out := []byte(strings.Repeat("0", ChecksumLen))
	x := uint64(v)
	for i := len(out) - 1; x > 0; i-- {
		out[i] = alphabet[x%62]
		x /= 62
	}
	return string(out)
}
