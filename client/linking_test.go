package client

import (
	"testing"
	"time"
)

// The delays that keep the account apart from the anonymous connections
// stay within the bounds the user guide states (§11): quiet gaps of 2-4 s,
// a stagger of under 2 s in all however many mailboxes.
func TestLinkingDelayBounds(t *testing.T) {
	for range 1000 {
		if q := quietGap(); q < accountQuietMin || q >= 2*accountQuietMin {
			t.Fatalf("quiet gap %v outside [%v, %v)", q, accountQuietMin, 2*accountQuietMin)
		}
	}
	if g := staggerGap(1); g != 0 {
		t.Fatalf("one connection staggered by %v", g)
	}
	for _, n := range []int{2, 3, 10, 200} {
		var total, most time.Duration
		for range 200 {
			var sum time.Duration
			for range n - 1 {
				sum += staggerGap(n)
			}
			total += sum
			most = max(most, sum)
		}
		if most >= staggerTotal {
			t.Fatalf("%d connections spread over %v, more than %v", n, most, staggerTotal)
		}
		if mean := total / 200; mean < staggerTotal/4 {
			t.Fatalf("%d connections spread over %v on average: hardly staggered", n, mean)
		}
	}
}
