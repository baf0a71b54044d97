package mls

import (
	"errors"
	"fmt"
	"math/bits"
)

// Array-based left-balanced binary trees (RFC 9420 §4.2, Appendix C).
//
// Nodes are numbered in-order: leaves at even indices (leaf i is node 2i),
// parents at odd ones. RFC 9420 trees always have a power-of-two number of
// leaves (the tree doubles when it grows, §7.7), so every node below the
// root has both children and the arithmetic needs no truncation.

// ErrNodeIndex is returned (wrapped) when a tree-math operation is asked
// for a relative that does not exist: the child of a leaf, the parent of
// the root, or a node outside the tree.
var ErrNodeIndex = errors.New("mls: node index out of range")

// nodeLevel is the level of a node: 0 for leaves, k for a parent whose
// subtree has 2^k leaves. In the in-order numbering that is the number of
// trailing one bits.
func nodeLevel(x uint32) uint32 {
	return uint32(bits.TrailingZeros32(^x))
}

// nodeWidth is the number of nodes in a tree with n leaves. Node indices
// are uint32, so n is limited to 2^31 leaves (width 2^32-1); callers that
// take n from the wire check that bound (NewSecretTree does).
func nodeWidth(n uint32) uint32 {
	if n == 0 {
		return 0
	}
	return 2*(n-1) + 1
}

// treeRoot is the index of the root of a tree with n leaves: the largest
// power of two not above the width, minus one.
func treeRoot(n uint32) uint32 {
	w := nodeWidth(n)
	if w == 0 {
		return 0
	}
	return 1<<(31-bits.LeadingZeros32(w)) - 1
}

// nodeLeft is the left child of an intermediate node.
func nodeLeft(x uint32) (uint32, error) {
	k := nodeLevel(x)
	if k == 0 {
		return 0, fmt.Errorf("left child of leaf %d: %w", x, ErrNodeIndex)
	}
	return x ^ 1<<(k-1), nil
}

// nodeRight is the right child of an intermediate node.
func nodeRight(x uint32) (uint32, error) {
	k := nodeLevel(x)
	if k == 0 {
		return 0, fmt.Errorf("right child of leaf %d: %w", x, ErrNodeIndex)
	}
	return x ^ 3<<(k-1), nil
}

// parentStep is the parent of x in the infinite tree.
func parentStep(x uint32) uint32 {
	k := nodeLevel(x)
	b := (x >> (k + 1)) & 1
	return (x | 1<<k) ^ b<<(k+1)
}

// checkNode rejects indices outside a tree of n leaves.
func checkNode(x, n uint32) error {
	if x >= nodeWidth(n) {
		return fmt.Errorf("node %d in a tree of %d leaves: %w", x, n, ErrNodeIndex)
	}
	return nil
}

// nodeParent is the parent of x in a tree with n leaves. In a tree whose
// leaf count is not a power of two the infinite-tree parent can lie beyond
// the width; stepping further up reaches the real ancestor (Appendix C).
func nodeParent(x, n uint32) (uint32, error) {
	if err := checkNode(x, n); err != nil {
		return 0, err
	}
	if x == treeRoot(n) {
		return 0, fmt.Errorf("parent of root %d: %w", x, ErrNodeIndex)
	}
	p := parentStep(x)
	for p >= nodeWidth(n) {
		p = parentStep(p)
	}
	return p, nil
}

// nodeSibling is the other child of x's parent.
func nodeSibling(x, n uint32) (uint32, error) {
	p, err := nodeParent(x, n)
	if err != nil {
		return 0, err
	}
	if x < p {
		return nodeRight(p)
	}
	return nodeLeft(p)
}

// directPath lists the ancestors of x from its parent up to the root
// (RFC 9420 §4.1); the root's direct path is empty.
func directPath(x, n uint32) ([]uint32, error) {
	if err := checkNode(x, n); err != nil {
		return nil, err
	}
	r := treeRoot(n)
	var d []uint32
	for x != r {
		p, err := nodeParent(x, n)
		if err != nil {
			return nil, err
		}
		d = append(d, p)
		x = p
	}
	return d, nil
}

// copath lists the siblings of x and of each node of its direct path
// except the root, i.e. the roots of the subtrees x's path does not cover.
func copath(x, n uint32) ([]uint32, error) {
	d, err := directPath(x, n)
	if err != nil {
		return nil, err
	}
	if len(d) == 0 {
		return nil, nil
	}
	path := append([]uint32{x}, d[:len(d)-1]...)
	out := make([]uint32, len(path))
	for i, y := range path {
		if out[i], err = nodeSibling(y, n); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// commonAncestor is the lowest node whose subtree contains both x and y
// (Appendix C, common_ancestor_direct): shift off the differing low bits.
func commonAncestor(x, y uint32) uint32 {
	lx, ly := nodeLevel(x)+1, nodeLevel(y)+1
	if lx <= ly && x>>ly == y>>ly {
		return y
	}
	if ly <= lx && x>>lx == y>>lx {
		return x
	}
	k := uint32(0)
	for x != y {
		x, y = x>>1, y>>1
		k++
	}
	return x<<k + 1<<(k-1) - 1
}
