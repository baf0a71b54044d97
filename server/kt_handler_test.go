package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/quicprochat/qpc/server/config"
)

// TestKeyedBucketsBounded: the publish budgets of many accounts take at
// most max entries (the rest share the overflow bucket), and refilled
// ones are dropped.
func TestKeyedBucketsBounded(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	k := newKeyedBuckets(config.DefaultKTPublishRate/3600, config.DefaultKTPublishBurst, 100, t0)
	for i := range 1000 {
		if ok, _ := k.take(fmt.Sprintf("user%d", i), t0); !ok && i < 100 {
			t.Fatalf("account %d refused its first publish", i)
		}
	}
	if n := k.len(); n != 100 {
		t.Fatalf("%d accounts tracked, want the bound 100", n)
	}
	// One account's burst, then refusal; a token given back is usable.
	var give func()
	for i := range config.DefaultKTPublishBurst - 1 {
		var ok bool
		if ok, give = k.take("user0", t0); !ok {
			t.Fatalf("publish %d of the burst refused", i+2)
		}
	}
	if ok, _ := k.take("user0", t0); ok {
		t.Fatal("a publish past the burst was allowed")
	}
	give()
	if ok, _ := k.take("user0", t0); !ok {
		t.Fatal("a returned token was not usable")
	}
	// After burst/rate (two hours) every bucket is full again and dropped.
	later := t0.Add(2*time.Hour + time.Second)
	k.take("someone", later)
	if n := k.len(); n != 1 {
		t.Fatalf("%d accounts tracked after all refilled, want 1", n)
	}
}
