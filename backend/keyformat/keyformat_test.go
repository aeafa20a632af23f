package keyformat

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"math/big"
	"os"
	"regexp"
	"strings"
	"testing"
)

// refBase62 is deliberately independent of the package encoders so that a
// shared bug cannot make both sides agree.
func refBase62(n *big.Int, width int) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	var digits []byte
	x := new(big.Int).Set(n)
	base := big.NewInt(62)
	mod := new(big.Int)
	for x.Sign() > 0 {
		x.DivMod(x, base, mod)
		digits = append(digits, alphabet[mod.Int64()])
	}
	for len(digits) < width {
		digits = append(digits, '0')
	}
	for i, j := 0, len(digits)-1; i < j; i, j = i+1, j-1 {
		digits[i], digits[j] = digits[j], digits[i]
	}
	return string(digits)
}

func refChecksum(s string) string {
	return refBase62(new(big.Int).SetUint64(uint64(crc32.ChecksumIEEE([]byte(s)))), ChecksumLen)
}

// refKey builds a key with an arbitrary body so tests can craft inputs that
// Generate would never produce.
func refKey(prefix, env, body string) string {
	s := prefix + "_" + env + "_" + body
	return s + refChecksum(s)
}

// raceEnabled is set by race_enabled_test.go.
var raceEnabled bool

func mustGenerate(t testing.TB, prefix, env string) string {
	t.Helper()
	k, err := Generate(prefix, env)
	if err != nil {
		t.Fatalf("Generate(%q, %q): %v", prefix, env, err)
	}
	return k
}

func TestGeneratedKeysParse(t *testing.T) {
	tests := []struct {
		name, prefix, env string
	}{
		{"short prefix and env", "a", "b"},
		{"typical", "ak", "live"},
		{"digits after first letter", "k8s", "env2"},
		{"longest prefix and env", "abcdefghijklmnop", "abcdefghij"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 50 {
				key := mustGenerate(t, tt.prefix, tt.env)
				want := len(tt.prefix) + 1 + len(tt.env) + 1 + BodyLen + ChecksumLen
				if len(key) != want {
					t.Fatalf("len(%q) = %d, want %d", key, len(key), want)
				}
				if !strings.HasPrefix(key, tt.prefix+"_"+tt.env+"_") {
					t.Fatalf("key %q does not start with %s_%s_", key, tt.prefix, tt.env)
				}
				p, ok := Parse(key)
				if !ok {
					t.Fatalf("Parse(%q) rejected a generated key", key)
				}
				if p.Prefix != tt.prefix || p.Environment != tt.env {
					t.Fatalf("Parse(%q) = %+v, want prefix %q env %q", key, p, tt.prefix, tt.env)
				}
				tail := key[len(key)-BodyLen-ChecksumLen:]
				if tail[BodyLen:] != refChecksum(key[:len(key)-ChecksumLen]) {
					t.Fatalf("checksum of %q does not match reference", key)
				}
			}
		})
	}
}

func TestParsePartsAreSubstringsOfKey(t *testing.T) {
	key := mustGenerate(t, "ak", "live")
	p, ok := Parse(key)
	if !ok {
		t.Fatal("Parse rejected a generated key")
	}
	if p.Prefix != key[:2] || p.Environment != key[3:7] {
		t.Fatalf("parts %+v do not match key %q", p, key)
	}
}

func TestTwoGeneratedKeysDiffer(t *testing.T) {
	seen := make(map[string]bool)
	for range 100 {
		k := mustGenerate(t, "ak", "live")
		if seen[k] {
			t.Fatalf("duplicate key %q", k)
		}
		seen[k] = true
	}
}

func TestParseRejectsMalformedKeys(t *testing.T) {
	valid := mustGenerate(t, "ak", "live")
	tail := valid[len("ak_live_"):]
	body, sum := tail[:BodyLen], tail[BodyLen:]

	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	bodyStart := len("ak_live_")

	tests := []struct {
		name string
		key  string
	}{
		{"empty", ""},
		{"flipped first body char breaks checksum", flip(valid, bodyStart)},
		{"flipped last body char breaks checksum", flip(valid, bodyStart+BodyLen-1)},
		{"flipped checksum char", flip(valid, len(valid)-1)},
		{"flipped prefix char breaks checksum", "ap" + valid[2:]},
		{"no separators", "aklive" + tail},
		{"one separator", "ak_live" + tail},
		{"three separators", refKey("ak", "live", body[:BodyLen-1]) + "_"},
		{"separator inside body", "ak_live_" + body[:10] + "_" + body[11:] + sum},
		{"leading separator", "_ak_live" + tail},
		{"empty prefix", refKey("", "live", body)},
		{"empty environment", refKey("ak", "", body)},
		{"uppercase prefix", refKey("AK", "live", body)},
		{"uppercase environment", refKey("ak", "Live", body)},
		{"prefix starting with digit", refKey("1ak", "live", body)},
		{"environment starting with digit", refKey("ak", "1live", body)},
		{"prefix too long", refKey("abcdefghijklmnopq", "live", body)},
		{"environment too long", refKey("ak", "abcdefghijk", body)},
		{"body too short", refKey("ak", "live", body[:BodyLen-1])},
		{"body too long", refKey("ak", "live", body+"0")},
		{"checksum too short", valid[:len(valid)-1]},
		{"checksum too long", valid + "0"},
		{"non-base62 char in body", "ak_live_" + body[:5] + "-" + body[6:] + sum},
		{"non-base62 char in checksum", valid[:len(valid)-1] + "+"},
		{"non-ASCII char in body", "ak_live_" + body[:5] + "\xc3" + body[6:] + sum},
		{"body above 2^256-1 with valid checksum", refKey("ak", "live", strings.Repeat("z", BodyLen))},
		{"trailing space", valid + " "},
		{"leading space", " " + valid},
		{"too long", refKey("ak", "live", body) + strings.Repeat("a", 200)},
		{"just over the length limit", strings.Repeat("a", MaxLen+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, ok := Parse(tt.key); ok {
				t.Fatalf("Parse(%q) = %+v, true; want rejection", tt.key, p)
			}
		})
	}
}

func TestParseAcceptsMaximumBody(t *testing.T) {
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))
	for _, body := range []string{
		strings.Repeat("0", BodyLen),
		refBase62(max, BodyLen),
	} {
		key := refKey("ak", "live", body)
		if _, ok := Parse(key); !ok {
			t.Fatalf("Parse(%q) rejected a body in range", key)
		}
	}
}

func TestChecksumKnownAnswer(t *testing.T) {
	const body = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg"
	if len(body) != BodyLen {
		t.Fatalf("test body has length %d", len(body))
	}
	payload := "ak_live_" + body
	want := refChecksum(payload)

	var got [ChecksumLen]byte
	encodeChecksum(&got, crc(payload))
	if string(got[:]) != want {
		t.Fatalf("checksum of %q = %q, want %q", payload, got, want)
	}
	if _, ok := Parse(payload + want); !ok {
		t.Fatalf("Parse rejected %q with reference checksum", payload+want)
	}

	// A literal key pins the format: if this stops parsing, keys already
	// handed out would stop working too.
	const issued = "ak_live_7JkQ2mXw9pLr4TzN8bVc1HsF6gYd3KeA5uWq0iOyZtB35rEgO"
	if p, ok := Parse(issued); !ok || p.Prefix != "ak" || p.Environment != "live" {
		t.Fatalf("Parse(%q) = %+v, %v; want ak/live, true", issued, p, ok)
	}
}

func TestBodyEncodingKnownAnswer(t *testing.T) {
	var max [bodyBytes]byte
	for i := range max {
		max[i] = 0xff
	}
	var seq [bodyBytes]byte
	for i := range seq {
		seq[i] = byte(i*37 + 11)
	}
	tests := []struct {
		name string
		in   [bodyBytes]byte
	}{
		{"zero", [bodyBytes]byte{}},
		{"one", [bodyBytes]byte{bodyBytes - 1: 1}},
		{"all ones", max},
		{"pattern", seq},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got [BodyLen]byte
			encodeBody(&got, tt.in)
			want := refBase62(new(big.Int).SetBytes(tt.in[:]), BodyLen)
			if string(got[:]) != want {
				t.Fatalf("encodeBody = %q, want %q", got, want)
			}
		})
	}
	if maxBody != refBase62(new(big.Int).SetBytes(max[:]), BodyLen) {
		t.Fatalf("maxBody = %q is not 2^256-1", maxBody)
	}
}

func TestValidatePrefix(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"single letter", "a", true},
		{"letters and digits", "ak1", true},
		{"sixteen chars", "abcdefghijklmnop", true},
		{"empty", "", false},
		{"seventeen chars", "abcdefghijklmnopq", false},
		{"uppercase", "Ak", false},
		{"leading digit", "1a", false},
		{"underscore", "a_b", false},
		{"hyphen", "a-b", false},
		{"non-ASCII", "aé", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidatePrefix(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidatePrefix(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "1-16 lower-case letters or digits, starting with a letter") {
				t.Fatalf("error %q does not name the rule", err)
			}
		})
	}
}

func TestValidateEnvironment(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"single letter", "p", true},
		{"ten chars", "abcdefghij", true},
		{"letters and digits", "stage2", true},
		{"empty", "", false},
		{"eleven chars", "abcdefghijk", false},
		{"uppercase", "Prod", false},
		{"leading digit", "2prod", false},
		{"underscore", "pr_od", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateEnvironment(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateEnvironment(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "1-10 lower-case letters or digits, starting with a letter") {
				t.Fatalf("error %q does not name the rule", err)
			}
		})
	}
}

func TestGenerateRejectsBadPrefixOrEnvironment(t *testing.T) {
	tests := []struct {
		name, prefix, env string
	}{
		{"empty prefix", "", "live"},
		{"uppercase prefix", "AK", "live"},
		{"prefix with underscore", "a_k", "live"},
		{"prefix too long", "abcdefghijklmnopq", "live"},
		{"empty environment", "ak", ""},
		{"environment with underscore", "ak", "li_ve"},
		{"environment too long", "ak", "abcdefghijk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Generate(tt.prefix, tt.env)
			if err == nil {
				t.Fatalf("Generate(%q, %q) = %q, want error", tt.prefix, tt.env, k)
			}
			if k != "" {
				t.Fatalf("Generate returned key %q with error", k)
			}
		})
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestRandomnessFailureIsWrapped(t *testing.T) {
	boom := errors.New("entropy exhausted")
	old := randReader
	randReader = failingReader{boom}
	t.Cleanup(func() { randReader = old })

	if _, err := Generate("ak", "live"); !errors.Is(err, boom) {
		t.Fatalf("Generate error = %v, want it to wrap %v", err, boom)
	}
	if _, err := NewPepper(); !errors.Is(err, boom) {
		t.Fatalf("NewPepper error = %v, want it to wrap %v", err, boom)
	}
}

func testPepper(b byte) []byte {
	return bytes.Repeat([]byte{b}, 32)
}

func mustHasher(t testing.TB, pepper []byte) *Hasher {
	t.Helper()
	h, err := NewHasher(pepper)
	if err != nil {
		t.Fatalf("NewHasher: %v", err)
	}
	return h
}

func TestHasher(t *testing.T) {
	key := mustGenerate(t, "ak", "live")
	h1 := mustHasher(t, testPepper(1))
	h2 := mustHasher(t, testPepper(2))

	t.Run("same key same sum", func(t *testing.T) {
		a, b := h1.Sum(key), h1.Sum(key)
		if !Equal(a, b) {
			t.Fatal("two sums of the same key differ")
		}
	})
	t.Run("different key different sum", func(t *testing.T) {
		if Equal(h1.Sum(key), h1.Sum(mustGenerate(t, "ak", "live"))) {
			t.Fatal("two different keys hash the same")
		}
	})
	t.Run("different pepper different sum", func(t *testing.T) {
		if Equal(h1.Sum(key), h2.Sum(key)) {
			t.Fatal("different peppers gave the same sum")
		}
	})
	t.Run("matches crypto/hmac", func(t *testing.T) {
		pepper := testPepper(1)
		for _, in := range []string{
			"",
			key,
			strings.Repeat("x", hashChunk),
			strings.Repeat("y", hashChunk+1),
			strings.Repeat("z", 1000),
		} {
			m := hmac.New(sha256.New, pepper)
			m.Write([]byte(in))
			var want [32]byte
			copy(want[:], m.Sum(nil))
			if got := h1.Sum(in); got != want {
				t.Fatalf("Sum(len %d) = %x, want %x", len(in), got, want)
			}
		}
	})
	t.Run("pepper is copied", func(t *testing.T) {
		pepper := testPepper(3)
		h := mustHasher(t, pepper)
		// The pool is still empty, so the first Sum builds its HMAC
		// after the caller has scribbled over the slice.
		clear(pepper)
		m := hmac.New(sha256.New, testPepper(3))
		m.Write([]byte(key))
		var want [32]byte
		copy(want[:], m.Sum(nil))
		if got := h.Sum(key); got != want {
			t.Fatal("hasher follows changes to the caller's pepper slice")
		}
	})
}

func TestNewHasherRejectsShortPepper(t *testing.T) {
	for _, n := range []int{0, 1, 16, 31} {
		if _, err := NewHasher(make([]byte, n)); err == nil {
			t.Fatalf("NewHasher accepted a %d-byte pepper", n)
		}
	}
	if _, err := NewHasher(make([]byte, 64)); err != nil {
		t.Fatalf("NewHasher rejected a 64-byte pepper: %v", err)
	}
}

func TestNewPepper(t *testing.T) {
	a, err := NewPepper()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewPepper()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 32 || len(b) != 32 {
		t.Fatalf("pepper lengths %d, %d; want 32", len(a), len(b))
	}
	if bytes.Equal(a, b) {
		t.Fatal("two peppers are equal")
	}
	if _, err := NewHasher(a); err != nil {
		t.Fatalf("NewHasher rejected NewPepper output: %v", err)
	}
}

func TestEqual(t *testing.T) {
	var a, b [32]byte
	if !Equal(a, b) {
		t.Fatal("zero arrays not equal")
	}
	b[31] = 1
	if Equal(a, b) {
		t.Fatal("arrays differing in last byte reported equal")
	}
}

func TestHint(t *testing.T) {
	body := "Xn8I" + strings.Repeat("0", BodyLen-8) + "cQKo"
	key := refKey("acme", "live", body)
	if got, want := Hint(key), "acme_live_Xn8I…cQKo"; got != want {
		t.Fatalf("Hint = %q, want %q", got, want)
	}
	for _, k := range []string{mustGenerate(t, "ak", "live"), mustGenerate(t, "abcdefghijklmnop", "production")} {
		h := Hint(k)
		parts, _ := Parse(k)
		body := k[len(k)-BodyLen-ChecksumLen : len(k)-ChecksumLen]
		if want := parts.Prefix + "_" + parts.Environment + "_" + body[:HintEnds] + "…" + body[BodyLen-HintEnds:]; h != want {
			t.Fatalf("Hint(%q) = %q, want %q", k, h, want)
		}
		// The body's ends only: no checksum, nothing of the middle.
		if n := len(parts.Prefix) + len(parts.Environment) + 2 + 2*HintEnds + len("…"); len(h) != n {
			t.Fatalf("hint %q is %d bytes, want %d", h, len(h), n)
		}
	}
	for _, bad := range []string{"", "garbage", key[:len(key)-1] + "!", key + "0"} {
		if h := Hint(bad); h != "" {
			t.Fatalf("Hint(%q) = %q for a string that is not a key", bad, h)
		}
	}
}

func TestZeroAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop entries at random")
	}
	valid := mustGenerate(t, "ak", "live")
	h := mustHasher(t, testPepper(1))
	h.Sum(valid) // fill the pool

	// Inputs are built outside the measured functions so that only the
	// calls under test are counted.
	badSum := valid[:len(valid)-1] + "!"
	tooLong := valid + valid
	longInput := valid + valid + valid

	tests := []struct {
		name string
		fn   func()
	}{
		{"Parse valid key", func() { sinkParts, sinkOK = Parse(valid) }},
		{"Parse bad checksum", func() { sinkParts, sinkOK = Parse(badSum) }},
		{"Parse too long", func() { sinkParts, sinkOK = Parse(tooLong) }},
		{"Sum", func() { sinkSum = h.Sum(valid) }},
		{"Sum input longer than chunk", func() { sinkSum = h.Sum(longInput) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tt.fn); n != 0 {
				t.Fatalf("%v allocations per run, want 0", n)
			}
		})
	}
}

var (
	sinkParts Parts
	sinkOK    bool
	sinkSum   [32]byte
	sinkKey   string
)

func BenchmarkParse(b *testing.B) {
	key := mustGenerate(b, "ak", "live")
	b.ReportAllocs()
	for b.Loop() {
		sinkParts, sinkOK = Parse(key)
	}
}

func BenchmarkSum(b *testing.B) {
	key := mustGenerate(b, "ak", "live")
	h := mustHasher(b, testPepper(1))
	b.ReportAllocs()
	for b.Loop() {
		sinkSum = h.Sum(key)
	}
}

func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sinkKey, _ = Generate("ak", "live")
	}
}

func TestScannerPatternFindsKeysAndNothingElse(t *testing.T) {
	re := regexp.MustCompile(ScannerPattern)
	var keys []string
	for _, pe := range [][2]string{{"ak", "live"}, {"a", "t"}, {"acme2", "test"}, {"abcdefghijklmnop", "production"}} {
		for range 50 {
			keys = append(keys, mustGenerate(t, pe[0], pe[1]))
		}
	}
	for _, k := range keys {
		// Where keys turn up: alone, quoted, in an assignment, a header,
		// a URL query, a YAML value, at the end of a line.
		for _, text := range []string{k, `"` + k + `"`, "API_KEY=" + k + "\n", "X-Api-Key: " + k, "https://x.example/?key=" + k + "&a=1", "key: '" + k + "'"} {
			if got := re.FindAllString(text, -1); len(got) != 1 || got[0] != k {
				t.Fatalf("in %q the pattern finds %q, want the key", text, got)
			}
		}
	}
	k := keys[0]
	tail := k[len("ak_live_"):]
	for name, miss := range map[string]string{
		"body one short":           k[:len(k)-1],
		"body one long":            k + "0",
		"upper-case prefix":        "AK_live_" + tail,
		"prefix starts with digit": "1ak_live_" + tail,
		"prefix of 17":             strings.Repeat("a", 17) + "_live_" + tail,
		"environment of 11":        "ak_" + strings.Repeat("e", 11) + "_" + tail,
		"no environment":           "ak_" + tail,
		"dash in body":             "ak_live_" + tail[:10] + "-" + tail[11:],
		"glued to a word":          "x_" + k,
		"glued to base62":          k + "Z",
		"uuid":                     "0b5a2f1e-8c3d-4b6a-9e7f-1a2b3c4d5e6f",
	} {
		if got := re.FindAllString(miss, -1); len(got) != 0 {
			t.Errorf("%s: the pattern finds %q in %q", name, got, miss)
		}
	}
	// The pattern cannot check the checksum: Parse does.
	bad := k[:len(k)-1] + map[bool]string{true: "1", false: "0"}[k[len(k)-1] == '0']
	if !re.MatchString(bad) {
		t.Fatal("a key with a bad checksum no longer matches: the pattern checks more than its doc says")
	}
	if _, ok := Parse(bad); ok {
		t.Fatal("Parse accepted a bad checksum")
	}
}

// The pattern the docs give scanners is this one.
func TestScannerPatternIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "`"+ScannerPattern+"`") {
		t.Fatalf("docs/security.md does not give the scanner pattern `%s`", ScannerPattern)
	}
}
