package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	SignatureHeader = "X-Apikeys-Signature"
	EventHeader     = "X-Apikeys-Event"
	DeliveryHeader  = "X-Apikeys-Delivery"
	AttemptHeader   = "X-Apikeys-Attempt"
	// IdempotencyHeader carries the event id under the name generic
	// receivers (payment-style APIs, queues) already deduplicate on.
	IdempotencyHeader = "Idempotency-Key"
)

// DefaultTolerance is how far a receiver should accept a signature's
// timestamp from its own clock; it bounds how long a captured delivery can
// be replayed.
const DefaultTolerance = 5 * time.Minute

// Sign returns the X-Apikeys-Signature value for body sent at ts:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>". The
// timestamp is signed with the body so a replay cannot claim a new time.
func Sign(secret []byte, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	return "t=" + t + ",v1=" + hex.EncodeToString(mac(secret, t, body))
}

func mac(secret []byte, t string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(t))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of Verify.
var (
	ErrBadSignatureHeader = errors.New("malformed signature header")
	ErrSignatureMismatch  = errors.New("signature does not match")
	ErrStaleTimestamp     = errors.New("signature timestamp outside the tolerance")
)

// Verify is what a receiver runs (and what the docs show): it checks the
// header against body with the shared secret, in constant time, and that
// the signed timestamp is within tolerance of now.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var t string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrBadSignatureHeader
		}
		switch k {
		case "t":
			t = v
		case "v1":
			s, err := hex.DecodeString(v)
			if err != nil {
				return ErrBadSignatureHeader
			}
			sigs = append(sigs, s)
		}
	}
	if t == "" || len(sigs) == 0 {
		return ErrBadSignatureHeader
	}
	sec, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return ErrBadSignatureHeader
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s", ErrStaleTimestamp, d.Round(time.Second))
	}
	want := mac(secret, t, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrSignatureMismatch
}
