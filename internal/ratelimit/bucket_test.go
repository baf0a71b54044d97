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

func TestBucketAllowN(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBucket(10, 20, t0)
	if !b.AllowN(t0, 15) {
		t.Fatal("15 of a full bucket of 20 refused")
	}
	if b.AllowN(t0, 6) {
		t.Fatal("6 taken from 5")
	}
	if !b.AllowN(t0, 5) {
		t.Fatal("a refused AllowN took tokens")
	}
	b.Return(30)
	if !b.AllowN(t0, 20) || b.Allow(t0) {
		t.Fatal("Return does not refill up to the burst and no further")
	}
}
