package ratelimit

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBucket(2, 3, t0)
	for i := range 3 {
		if !b.Allow(t0) {
			t.Fatalf("token %d of a full bucket refused", i)
		}
	}
	if b.Allow(t0) {
		t.Fatal("empty bucket gave a token")
	}
	if !b.Allow(t0.Add(500 * time.Millisecond)) {
		t.Fatal("half a second at 2/s should give one token")
	}
	if b.Allow(t0.Add(400 * time.Millisecond)) {
		t.Fatal("a clock stepping back added tokens")
	}
	// Refill stops at the burst.
	later := t0.Add(time.Hour)
	for i := range 3 {
		if !b.Allow(later) {
			t.Fatalf("token %d after a long pause refused", i)
		}
	}
	if b.Allow(later) {
		t.Fatal("refill exceeded the burst")
	}
}
