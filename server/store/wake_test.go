package store

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// TestWakeTagVector pins the wake key derivation and the tag (ADR 0038,
// "Keyed tags"): nodes of different versions must compute the same tags.
// The expected values were computed with an independent HKDF (RFC 5869
// section 2: extract with a zero salt of 32 bytes, expand one block) and
// HMAC (Python's hmac and hashlib).
func TestWakeTagVector(t *testing.T) {
	key, err := DeriveWakeKey(bytes.Repeat([]byte{0x5a}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(key); got != "6598f5826ed659f99c199dcb72aadb79705e35760673cfbd0ca1fbe9d8ead1a7" {
		t.Fatalf("wake key %s", got)
	}
	var rid [MailboxIDSize]byte
	for i := range rid {
		rid[i] = byte(i)
	}
	tag := WakeTagOf(key, rid)
	if got := hex.EncodeToString(tag[:]); got != "1b6874e6f7cda8b780b5bc9a71955107" {
		t.Fatalf("wake tag %s", got)
	}
	if _, err := DeriveWakeKey(make([]byte, 16)); err == nil {
		t.Fatal("a wake key derived from a 16-byte secret")
	}
}
