package mls

import (
	"errors"
	"slices"
	"testing"
)

type treeMathCase struct {
	NLeaves uint32    `json:"n_leaves"`
	NNodes  uint32    `json:"n_nodes"`
	Root    uint32    `json:"root"`
	Left    []*uint32 `json:"left"`
	Right   []*uint32 `json:"right"`
	Parent  []*uint32 `json:"parent"`
	Sibling []*uint32 `json:"sibling"`
}

// optEqual compares a tree-math result with an optional<uint32> vector
// entry: a null entry expects the operation to fail with ErrNodeIndex.
func optEqual(got uint32, err error, want *uint32) bool {
	if want == nil {
		return errors.Is(err, ErrNodeIndex)
	}
	return err == nil && got == *want
}

func TestVectorTreeMath(t *testing.T) {
	var cases []treeMathCase
	loadVectors(t, "tree-math.json", &cases)
	c := newTally("tree-math.json")
	for _, tc := range cases {
		n := tc.NLeaves
		ok := nodeWidth(n) == tc.NNodes && treeRoot(n) == tc.Root &&
			len(tc.Left) == int(tc.NNodes) && len(tc.Right) == int(tc.NNodes) &&
			len(tc.Parent) == int(tc.NNodes) && len(tc.Sibling) == int(tc.NNodes)
		for x := uint32(0); ok && x < tc.NNodes; x++ {
			l, errL := nodeLeft(x)
			r, errR := nodeRight(x)
			p, errP := nodeParent(x, n)
			s, errS := nodeSibling(x, n)
			if !optEqual(l, errL, tc.Left[x]) || !optEqual(r, errR, tc.Right[x]) ||
				!optEqual(p, errP, tc.Parent[x]) || !optEqual(s, errS, tc.Sibling[x]) {
				t.Logf("n_leaves %d node %d: left %d/%v right %d/%v parent %d/%v sibling %d/%v",
					n, x, l, errL, r, errR, p, errP, s, errS)
				ok = false
			}
		}
		if !ok {
			c.fail(t, "tree-math n_leaves=%d", n)
			continue
		}
		c.pass()
	}
	c.report(t)
}

// TestDirectPathCopath checks direct paths, copaths and common ancestors
// against a naive walk over parent pointers, for every node of every tree
// up to 64 leaves.
func TestDirectPathCopath(t *testing.T) {
	for n := uint32(1); n <= 64; n *= 2 {
		root := treeRoot(n)
		for x := uint32(0); x < nodeWidth(n); x++ {
			var want []uint32
			for y := x; y != root; {
				p, err := nodeParent(y, n)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, p)
				y = p
			}
			dp, err := directPath(x, n)
			if err != nil || !slices.Equal(dp, want) {
				t.Fatalf("direct path of %d in %d leaves: %v %v, want %v", x, n, dp, err, want)
			}
			cp, err := copath(x, n)
			if err != nil || len(cp) != len(dp) {
				t.Fatalf("copath of %d in %d leaves: %v %v", x, n, cp, err)
			}
			// Each copath node is the child of a direct-path node that is
			// not on the path from x.
			prev := x
			for i, p := range dp {
				l, _ := nodeLeft(p)
				r, _ := nodeRight(p)
				other := l
				if prev == l {
					other = r
				}
				if cp[i] != other {
					t.Fatalf("copath of %d in %d leaves: %v", x, n, cp)
				}
				prev = p
			}
			for y := uint32(0); y < nodeWidth(n); y++ {
				got := commonAncestor(x, y)
				// Naive: the lowest node in both {x} ∪ dp(x) and {y} ∪ dp(y).
				dy, _ := directPath(y, n)
				ay := append([]uint32{y}, dy...)
				var want uint32
				for _, a := range append([]uint32{x}, dp...) {
					if slices.Contains(ay, a) {
						want = a
						break
					}
				}
				if got != want {
					t.Fatalf("common ancestor of %d and %d in %d leaves: %d, want %d", x, y, n, got, want)
				}
			}
		}
		if _, err := directPath(nodeWidth(n), n); !errors.Is(err, ErrNodeIndex) {
			t.Errorf("node outside tree of %d leaves: %v", n, err)
		}
		if cp, err := copath(root, n); err != nil || len(cp) != 0 {
			t.Errorf("copath of root: %v %v", cp, err)
		}
	}
}

// TestNodeLevel checks levels against the definition: the height of the
// subtree below a node.
func TestNodeLevel(t *testing.T) {
	for x, want := range []uint32{0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0} {
		if got := nodeLevel(uint32(x)); got != want {
			t.Errorf("level(%d) = %d, want %d", x, got, want)
		}
	}
}
