package client

import (
	"fmt"
	"slices"
	"testing"
)

// TestPlanLookups: no batch holds two labels of one set, batches hold at
// most max labels, every label is asked once, and labels of different
// sets share batches.
func TestPlanLookups(t *testing.T) {
	set := func(p string, n int) []string {
		var s []string
		for i := range n {
			s = append(s, fmt.Sprintf("%s%d", p, i))
		}
		return s
	}
	for _, c := range []struct {
		sets    [][]string
		batches int
	}{
		{[][]string{set("g", 7)}, 7},
		{[][]string{set("g", 5), set("h", 3), set("k", 5)}, 5},
		{[][]string{set("a", 2), set("b", 2), set("c", 2), set("d", 2), set("e", 2)}, 4},
		{[][]string{append(set("g", 3), "g1", "g0")}, 3},
	} {
		got := planLookups(c.sets, 4)
		if len(got) != c.batches {
			t.Errorf("%v: %d batches, want %d", c.sets, len(got), c.batches)
		}
		seen := map[string]int{}
		for _, b := range got {
			if len(b) == 0 || len(b) > 4 {
				t.Fatalf("%v: a batch of %d labels", c.sets, len(b))
			}
			for _, l := range b {
				seen[l]++
			}
			for _, s := range c.sets {
				n := 0
				for _, l := range b {
					if slices.Contains(s, l) {
						n++
					}
				}
				if n > 1 {
					t.Fatalf("%v: batch %v holds %d labels of the set %v", c.sets, b, n, s)
				}
			}
		}
		for _, s := range c.sets {
			for _, l := range s {
				if seen[l] != 1 {
					t.Fatalf("%v: %s asked %d times", c.sets, l, seen[l])
				}
			}
		}
	}
}
