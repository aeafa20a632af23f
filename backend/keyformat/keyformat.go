// Package keyformat defines the wire format of the API keys issued by the
// secrets engine and the keyed hash under which they are stored.
//
// A key looks like
//
//	<prefix>_<env>_<body><checksum>
//
// The prefix and environment make a leaked key recognisable to people and to
// secret scanners, and tell an operator where it came from without a lookup.
// The body carries 256 bits from crypto/rand, so guessing is hopeless. The
// trailing CRC32 lets Parse turn away typos and random strings before any
// storage is touched, which keeps junk traffic cheap; it is not a security
// property, the HMAC in Hasher is.
//
// Body and checksum use base62 so that a key is a single "word": it survives
// double-click selection, URLs, shells and headers without quoting.
package keyformat

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync"
	"unsafe"
)

// BodyLen is fixed rather than minimal so that every key of one prefix and
// environment has the same length; 43 is the smallest width that holds any
// 256-bit value in base62 (62^43 > 2^256).
const BodyLen = 43

// MaxLen is the longest string Parse looks at; longer ones are malformed
// without being read. It bounds the work done on attacker-supplied input,
// well above the longest legal key (16+1+10+1+49 = 77) so that a future
// widening of the limits does not silently break parsing.
const MaxLen = 128

// ChecksumLen is fixed for the same reason as BodyLen; 6 base62 digits are
// the smallest width that holds any 32-bit CRC (62^6 > 2^32).
const ChecksumLen = 6

const (
	maxPrefixLen = 16
	maxEnvLen    = 10

	// bodyBytes is the entropy of a key; 256 bits leaves no room for
	// brute force even against the checksum-filtered key space.
	bodyBytes = 32

	minPepperLen = 32

	// hashChunk is the size of the buffer used to feed a string to the
	// HMAC without converting it to a fresh []byte.
	hashChunk = 64
)

// The alphabet is in ASCII order, so comparing two equal-length base62
// strings byte by byte compares the numbers they encode.
const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// maxBody is 2^256-1 in base62. A body above it cannot come from Generate,
// so Parse rejects it to keep exactly one spelling per key.
var maxBody = func() string {
	var all [bodyBytes]byte
	for i := range all {
		all[i] = 0xff
	}
	var out [BodyLen]byte
	encodeBody(&out, all)
	return string(out[:])
}()

// randReader is a variable so that tests can exercise the error path.
var randReader io.Reader = rand.Reader

// ValidatePrefix is exported so that configuration can be rejected when it
// is written, not later when the first key is issued.
func ValidatePrefix(p string) error {
	if !validTag(p, maxPrefixLen) {
		return fmt.Errorf("invalid prefix %q: must be 1-16 lower-case letters or digits, starting with a letter", p)
	}
	return nil
}

// ValidateEnvironment is exported for the same reason as ValidatePrefix.
func ValidateEnvironment(e string) error {
	if !validTag(e, maxEnvLen) {
		return fmt.Errorf("invalid environment %q: must be 1-10 lower-case letters or digits, starting with a letter", e)
	}
	return nil
}

// validTag is hand-written instead of a regexp so that Parse stays
// allocation-free and linear in the input.
func validTag(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	if c := s[0]; c < 'a' || c > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Generate validates its arguments itself so that a misconfigured mount can
// never mint a key that Parse would later refuse.
func Generate(prefix, env string) (string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	if err := ValidateEnvironment(env); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	// raw escapes to the heap through the io.Reader interface, so it is
	// wiped once encoded rather than left for the garbage collector.
	var raw [bodyBytes]byte
	defer clear(raw[:])
	if _, err := io.ReadFull(randReader, raw[:]); err != nil {
		return "", fmt.Errorf("generate key: read random bytes: %w", err)
	}

	// Assemble on the stack so that, apart from raw, the only heap copy of
	// the secret is the returned string.
	var buf [MaxLen]byte
	n := copy(buf[:], prefix)
	buf[n] = '_'
	n++
	n += copy(buf[n:], env)
	buf[n] = '_'
	n++
	body := (*[BodyLen]byte)(buf[n : n+BodyLen])
	encodeBody(body, raw)
	n += BodyLen
	encodeChecksum((*[ChecksumLen]byte)(buf[n:n+ChecksumLen]), crc(buf[:n]))
	n += ChecksumLen
	key := string(buf[:n])
	clear(buf[:n])
	return key, nil
}

// encodeBody converts by schoolbook long division on a copy of the bytes
// rather than math/big, so no key material is left in heap words that
// cannot be cleared. Writing all BodyLen digits gives the '0' padding.
func encodeBody(out *[BodyLen]byte, n [bodyBytes]byte) {
	for i := BodyLen - 1; i >= 0; i-- {
		var rem uint
		for j := range n {
			cur := rem<<8 | uint(n[j])
			n[j] = byte(cur / 62)
			rem = cur % 62
		}
		out[i] = base62[rem]
	}
	clear(n[:])
}

func encodeChecksum(out *[ChecksumLen]byte, v uint32) {
	x := uint64(v)
	for i := ChecksumLen - 1; i >= 0; i-- {
		out[i] = base62[x%62]
		x /= 62
	}
}

// crc uses hash/crc32's hardware-accelerated IEEE path. The input is viewed
// as bytes without a copy: hash/crc32 passes it through a function variable,
// so a []byte conversion would escape and make Parse allocate; the view is
// only ever read.
func crc[T string | []byte](s T) uint32 {
	if len(s) == 0 {
		return crc32.ChecksumIEEE(nil)
	}
	return crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(string(s)), len(s)))
}

// base62Value uses -1 for bytes outside the alphabet so Parse can check
// membership and decode in one lookup.
var base62Value = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = int8(i)
	}
	return t
}()

// Parts points into the key passed to Parse, so parsing costs no copies;
// callers that keep a Parts keep the whole key alive.
type Parts struct {
	Prefix      string
	Environment string
}

// Parse reports ok=false rather than an error because its callers only need
// to know whether to bother looking the key up, and building error values
// for garbage input would cost allocations on the hot path. It does not
// allocate and does at most a constant amount of work per call.
func Parse(key string) (Parts, bool) {
	if len(key) > MaxLen {
		return Parts{}, false
	}

	first, second := -1, -1
	for i := 0; i < len(key); i++ {
		if key[i] != '_' {
			continue
		}
		switch {
		case first < 0:
			first = i
		case second < 0:
			second = i
		default:
			return Parts{}, false
		}
	}
	if second < 0 {
		return Parts{}, false
	}

	prefix, env, tail := key[:first], key[first+1:second], key[second+1:]
	if !validTag(prefix, maxPrefixLen) || !validTag(env, maxEnvLen) {
		return Parts{}, false
	}
	if len(tail) != BodyLen+ChecksumLen {
		return Parts{}, false
	}

	var sum uint64
	for i := 0; i < len(tail); i++ {
		v := base62Value[tail[i]]
		if v < 0 {
			return Parts{}, false
		}
		if i >= BodyLen {
			sum = sum*62 + uint64(v)
		}
	}
	if tail[:BodyLen] > maxBody {
		return Parts{}, false
	}
	// Decoding and comparing numbers accepts exactly the canonical
	// padded encoding, since 6 digits never wrap a uint64.
	if sum != uint64(crc(key[:len(key)-ChecksumLen])) {
		return Parts{}, false
	}
	return Parts{Prefix: prefix, Environment: env}, true
}

// ScannerPattern is the regular expression a secret scanner needs to find
// this package's keys in text (GitHub's partner program asks for one): the
// shape Parse accepts, built from the same limits, between word boundaries
// so that it does not match inside a longer word. It cannot check the
// checksum, so it finds candidates; Parse (and so leaks/report) turns away
// the ones whose checksum fails. "_" is a word character, so a key glued to
// a preceding word ("x_ak_live_...") is not matched: keys appear after
// quotes, "=", ":" or spaces.
var ScannerPattern = fmt.Sprintf(`\b[a-z][a-z0-9]{0,%d}_[a-z][a-z0-9]{0,%d}_[0-9A-Za-z]{%d}\b`,
	maxPrefixLen-1, maxEnvLen-1, BodyLen+ChecksumLen)

// HintEnds is how many characters of the body a hint shows at each end.
const HintEnds = 4

// Hint is what people may see of a key to recognise it: prefix and
// environment, then the first and last HintEnds characters of the body
// around an ellipsis, e.g. "acme_live_Xn8I…cQKo". The checksum is left out:
// the body is the random part, and 8 of its 43 base62 characters leave
// about 208 of its 256 bits unknown. A string that is not a well-formed key
// has no hint ("").
func Hint(key string) string {
	if _, ok := Parse(key); !ok {
		return ""
	}
	tail := key[len(key)-BodyLen-ChecksumLen:]
	return key[:len(key)-len(tail)] + tail[:HintEnds] + "…" + tail[BodyLen-HintEnds:BodyLen]
}

// Hasher keys the stored hash with a secret pepper so that a leaked storage
// dump cannot be used to confirm guessed keys offline.
type Hasher struct {
	pool sync.Pool
}

// hmacState bundles the HMAC with a scratch buffer and output slice so that
// both live as long as the pooled object and Sum needs no fresh memory.
type hmacState struct {
	mac   hash.Hash
	chunk [hashChunk]byte
	out   []byte
}

// NewHasher insists on a 32-byte pepper because a shorter one would be
// weaker than the SHA-256 it keys. The pepper is copied so a caller that
// reuses or clears its slice cannot change existing hashes.
func NewHasher(pepper []byte) (*Hasher, error) {
	if len(pepper) < minPepperLen {
		return nil, fmt.Errorf("pepper must be at least %d bytes, got %d", minPepperLen, len(pepper))
	}
	p := make([]byte, len(pepper))
	copy(p, pepper)
	h := &Hasher{}
	h.pool.New = func() any {
		return &hmacState{
			mac: hmac.New(sha256.New, p),
			out: make([]byte, 0, sha256.Size),
		}
	}
	return h, nil
}

// Sum is on the verification path of every request, so it reuses HMAC
// states from a pool and feeds the key through a fixed buffer: the string
// is never converted to a new []byte and steady-state calls do not
// allocate.
func (h *Hasher) Sum(key string) [32]byte {
	st := h.pool.Get().(*hmacState)
	st.mac.Reset()
	for len(key) > 0 {
		n := copy(st.chunk[:], key)
		st.mac.Write(st.chunk[:n])
		key = key[n:]
	}
	st.out = st.mac.Sum(st.out[:0])
	var res [32]byte
	copy(res[:], st.out)
	// Do not leave key bytes or digests in pooled memory longer than needed.
	clear(st.chunk[:])
	clear(st.out[:cap(st.out)])
	h.pool.Put(st)
	return res
}

// Equal compares in constant time so that verifying a presented key does
// not leak, through timing, how much of its hash matched a stored one.
func Equal(a, b [32]byte) bool {
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// NewPepper exists so the engine can create its pepper on first mount
// without the operator having to supply one.
func NewPepper() ([]byte, error) {
	p := make([]byte, minPepperLen)
	if _, err := io.ReadFull(randReader, p); err != nil {
		return nil, fmt.Errorf("generate pepper: %w", err)
	}
	return p, nil
}
