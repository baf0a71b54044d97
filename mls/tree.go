package mls

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// The ratchet tree (RFC 9420 §7): a left-balanced binary tree whose leaves
// hold members' LeafNodes and whose interior holds ParentNodes with the
// HPKE keys TreeKEM encrypts to. Blank nodes are nil.
//
// The tree is copy-on-write: a *Node, once stored, is never modified; every
// change stores a fresh node. Cloning a tree is therefore a copy of the
// pointer slice, which lets a Group try a commit on a copy and keep or drop
// it whole (§12.4.2: a commit is applied fully or not at all).

// Errors of tree validation, wrapped once with the node concerned.
var (
	// ErrInvalidTree: the tree is structurally wrong (node types in the
	// wrong places, bad unmerged leaves, duplicate keys, size limits).
	ErrInvalidTree = errors.New("mls: invalid ratchet tree")
	// ErrParentHash: a parent hash does not verify (§7.9.2).
	ErrParentHash = errors.New("mls: parent hash does not verify")
	// ErrTreeHash: the tree does not hash to the group context's tree_hash.
	ErrTreeHash = errors.New("mls: tree hash mismatch")
	// ErrInvalidLeafNode: a LeafNode fails validation (§7.3).
	ErrInvalidLeafNode = errors.New("mls: invalid leaf node")
	// ErrBlankLeaf: an operation names a leaf that holds no member.
	ErrBlankLeaf = errors.New("mls: leaf is blank")
)

// maxLeaves bounds the tree so that node indices stay in uint32 (§4.2
// tree math is limited to 2^31 leaves) and a hostile tree cannot make us
// allocate without limit; 2^20 members is far beyond any messenger group.
const maxLeaves = 1 << 20

// ratchetTree is the full array form of the tree: nodeWidth(n) entries for
// a power-of-two leaf count n (§7.7: the tree grows by doubling).
type ratchetTree struct {
	nodes []*Node
}

func (t *ratchetTree) clone() *ratchetTree {
	return &ratchetTree{nodes: slices.Clone(t.nodes)}
}

// numLeaves is the leaf count of the full tree, blanks included.
func (t *ratchetTree) numLeaves() uint32 { return uint32(len(t.nodes)+1) / 2 }

// newTreeFromNodes expands the ratchet_tree extension's truncated array to
// a full tree (§12.4.3.3: the receiver pads with blanks to the next full
// width) and checks that leaves sit at even and parents at odd indices.
func newTreeFromNodes(rt RatchetTree) (*ratchetTree, error) {
	if len(rt) == 0 {
		return nil, fmt.Errorf("empty tree: %w", ErrInvalidTree)
	}
	n := uint32(1)
	for nodeWidth(n) < uint32(len(rt)) {
		if n >= maxLeaves {
			return nil, fmt.Errorf("tree of %d nodes: %w", len(rt), ErrInvalidTree)
		}
		n *= 2
	}
	nodes := make([]*Node, nodeWidth(n))
	for i, nd := range rt {
		if nd == nil {
			continue
		}
		isLeaf := i%2 == 0
		if (isLeaf && (nd.Type != NodeTypeLeaf || nd.LeafNode == nil)) ||
			(!isLeaf && (nd.Type != NodeTypeParent || nd.ParentNode == nil)) {
			return nil, fmt.Errorf("node %d has type %v: %w", i, nd.Type, ErrInvalidTree)
		}
		nodes[i] = nd
	}
	return &ratchetTree{nodes: nodes}, nil
}

// export returns the ratchet_tree extension form: the array without
// trailing blanks (§12.4.3.3).
func (t *ratchetTree) export() RatchetTree {
	end := len(t.nodes)
	for end > 0 && t.nodes[end-1] == nil {
		end--
	}
	return RatchetTree(slices.Clone(t.nodes[:end]))
}

// leaf returns the LeafNode at leaf index i, or nil if blank or outside.
func (t *ratchetTree) leaf(i uint32) *LeafNode {
	if i >= t.numLeaves() || t.nodes[2*i] == nil {
		return nil
	}
	return t.nodes[2*i].LeafNode
}

// parent returns the ParentNode at node index x, or nil if blank.
func (t *ratchetTree) parent(x uint32) *ParentNode {
	if int(x) >= len(t.nodes) || t.nodes[x] == nil {
		return nil
	}
	return t.nodes[x].ParentNode
}

func (t *ratchetTree) setLeaf(i uint32, ln *LeafNode) {
	if ln == nil {
		t.nodes[2*i] = nil
		return
	}
	t.nodes[2*i] = &Node{Type: NodeTypeLeaf, LeafNode: ln}
}

func (t *ratchetTree) setParent(x uint32, p *ParentNode) {
	if p == nil {
		t.nodes[x] = nil
		return
	}
	t.nodes[x] = &Node{Type: NodeTypeParent, ParentNode: p}
}

// encryptionKey returns the HPKE public key of a non-blank node.
func (t *ratchetTree) encryptionKey(x uint32) []byte {
	nd := t.nodes[x]
	switch {
	case nd == nil:
		return nil
	case nd.LeafNode != nil:
		return nd.LeafNode.EncryptionKey
	default:
		return nd.ParentNode.EncryptionKey
	}
}

// members lists the indices of the non-blank leaves.
func (t *ratchetTree) members() []uint32 {
	var out []uint32
	for i := uint32(0); i < t.numLeaves(); i++ {
		if t.nodes[2*i] != nil {
			out = append(out, i)
		}
	}
	return out
}

// resolution is §4.1: a non-blank node followed by its unmerged leaves; a
// blank leaf resolves to nothing; a blank parent to the resolutions of its
// children. Leaves in exclude (by leaf index) are left out, which is how
// UpdatePath encryption skips members added by the same commit (§12.4.2).
func (t *ratchetTree) resolution(x uint32, exclude map[uint32]bool) []uint32 {
	var out []uint32
	var walk func(x uint32)
	walk = func(x uint32) {
		nd := t.nodes[x]
		if nodeLevel(x) == 0 {
			if nd != nil && !exclude[x/2] {
				out = append(out, x)
			}
			return
		}
		if nd != nil {
			out = append(out, x)
			for _, l := range nd.ParentNode.UnmergedLeaves {
				if !exclude[l] {
					out = append(out, 2*l)
				}
			}
			return
		}
		l, _ := nodeLeft(x)
		r, _ := nodeRight(x)
		walk(l)
		walk(r)
	}
	walk(x)
	return out
}

// filteredDirectPath is §4.1.2: the direct path of a leaf without the
// parents whose child off the path (the copath child) has an empty
// resolution, since nothing would be encrypted to them. It returns the
// path nodes and, for each, its copath child.
func (t *ratchetTree) filteredDirectPath(leaf uint32) (path, copathChildren []uint32) {
	n := t.numLeaves()
	dp, _ := directPath(2*leaf, n)
	cp, _ := copath(2*leaf, n)
	for i, p := range dp {
		if len(t.resolution(cp[i], nil)) == 0 {
			continue
		}
		path = append(path, p)
		copathChildren = append(copathChildren, cp[i])
	}
	return path, copathChildren
}

// blankPath blanks every parent on a leaf's direct path (§12.1.2, §12.1.3,
// §7.5): their keys were known to the member being replaced or removed.
func (t *ratchetTree) blankPath(leaf uint32) {
	dp, _ := directPath(2*leaf, t.numLeaves())
	for _, p := range dp {
		t.nodes[p] = nil
	}
}

// addLeaf puts a new member in the leftmost blank leaf, doubling the tree
// if there is none (§7.7), and records it as unmerged at every non-blank
// parent above it, because those parents' keys were chosen without it
// (§7.7, §12.1.1).
func (t *ratchetTree) addLeaf(ln *LeafNode) (uint32, error) {
	i := uint32(0)
	for ; i < t.numLeaves(); i++ {
		if t.nodes[2*i] == nil {
			break
		}
	}
	if i == t.numLeaves() {
		if t.numLeaves() >= maxLeaves {
			return 0, fmt.Errorf("add leaf to %d leaves: %w", t.numLeaves(), ErrInvalidTree)
		}
		grown := make([]*Node, nodeWidth(2*t.numLeaves()))
		copy(grown, t.nodes)
		t.nodes = grown
	}
	t.setLeaf(i, ln)
	dp, _ := directPath(2*i, t.numLeaves())
	for _, p := range dp {
		if pn := t.parent(p); pn != nil {
			np := *pn
			np.UnmergedLeaves = append(slices.Clone(pn.UnmergedLeaves), i)
			t.setParent(p, &np)
		}
	}
	return i, nil
}

// removeLeaf blanks a member's leaf and direct path, then truncates
// (§12.1.3).
func (t *ratchetTree) removeLeaf(i uint32) error {
	if t.leaf(i) == nil {
		return fmt.Errorf("remove leaf %d: %w", i, ErrBlankLeaf)
	}
	t.setLeaf(i, nil)
	t.blankPath(i)
	t.truncate()
	return nil
}

// truncate halves the tree while its whole right half is blank (§7.7), so
// that the tree stays as small as its rightmost member allows.
func (t *ratchetTree) truncate() {
	for t.numLeaves() > 1 {
		half := t.numLeaves() / 2
		blank := true
		for i := half; i < t.numLeaves(); i++ {
			if t.nodes[2*i] != nil {
				blank = false
				break
			}
		}
		if !blank {
			return
		}
		t.nodes = t.nodes[:nodeWidth(half)]
	}
}

// updateLeaf replaces a member's leaf and blanks its direct path
// (§12.1.2): the old path keys were derived from the replaced leaf's
// secrets.
func (t *ratchetTree) updateLeaf(i uint32, ln *LeafNode) error {
	if t.leaf(i) == nil {
		return fmt.Errorf("update leaf %d: %w", i, ErrBlankLeaf)
	}
	t.setLeaf(i, ln)
	t.blankPath(i)
	return nil
}

// hashNode is the tree hash of node x (§7.8) given its children's hashes
// (ignored for leaves): Hash(TreeHashInput). Leaves in exclude are hashed
// as blank and removed from parents' unmerged lists, which is how the
// "original" sibling tree of a parent hash is computed (§7.9.1).
func (t *ratchetTree) hashNode(s *CipherSuite, x uint32, exclude map[uint32]bool, lh, rh []byte) ([]byte, error) {
	var b cryptobyte.Builder
	if nodeLevel(x) == 0 {
		b.AddUint8(uint8(NodeTypeLeaf))
		b.AddUint32(x / 2)
		nd := t.nodes[x]
		present := nd != nil && !exclude[x/2]
		addOptional(&b, present)
		if present {
			nd.LeafNode.marshal(&b)
		}
	} else {
		b.AddUint8(uint8(NodeTypeParent))
		pn := t.parent(x)
		addOptional(&b, pn != nil)
		if pn != nil {
			if len(exclude) > 0 {
				c := *pn
				c.UnmergedLeaves = slices.DeleteFunc(slices.Clone(pn.UnmergedLeaves), func(l uint32) bool { return exclude[l] })
				pn = &c
			}
			pn.marshal(&b)
		}
		addOpaque(&b, lh)
		addOpaque(&b, rh)
	}
	in, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("tree hash of node %d: %w", x, err)
	}
	return s.Hash(in), nil
}

// treeHashes computes the tree hash (§7.8) of every node below root in
// one bottom-up pass, with the leaves in exclude treated as in hashNode.
// It returns a slice by node index.
func (t *ratchetTree) treeHashes(s *CipherSuite, root uint32, exclude map[uint32]bool) ([][]byte, error) {
	hashes := make([][]byte, len(t.nodes))
	var walk func(x uint32) error
	walk = func(x uint32) error {
		var lh, rh []byte
		if nodeLevel(x) > 0 {
			l, _ := nodeLeft(x)
			r, _ := nodeRight(x)
			if err := walk(l); err != nil {
				return err
			}
			if err := walk(r); err != nil {
				return err
			}
			lh, rh = hashes[l], hashes[r]
		}
		h, err := t.hashNode(s, x, exclude, lh, rh)
		hashes[x] = h
		return err
	}
	if err := walk(root); err != nil {
		return nil, err
	}
	return hashes, nil
}

// rehashPath updates hashes (from treeHashes over the whole tree) after a
// change confined to a leaf and its direct path, and returns the new root
// hash: a commit touches only that path, so one full pass per commit is
// enough.
func (t *ratchetTree) rehashPath(s *CipherSuite, hashes [][]byte, leaf uint32) ([]byte, error) {
	var err error
	if hashes[2*leaf], err = t.hashNode(s, 2*leaf, nil, nil, nil); err != nil {
		return nil, err
	}
	dp, _ := directPath(2*leaf, t.numLeaves())
	for _, p := range dp {
		l, _ := nodeLeft(p)
		r, _ := nodeRight(p)
		if hashes[p], err = t.hashNode(s, p, nil, hashes[l], hashes[r]); err != nil {
			return nil, err
		}
	}
	return hashes[treeRoot(t.numLeaves())], nil
}

// treeHash is the tree hash of the root, which the GroupContext carries.
func (t *ratchetTree) treeHash(s *CipherSuite) ([]byte, error) {
	root := treeRoot(t.numLeaves())
	h, err := t.treeHashes(s, root, nil)
	if err != nil {
		return nil, err
	}
	return h[root], nil
}

// parentHash is §7.9: Hash(ParentHashInput{encryption_key, parent_hash,
// original_sibling_tree_hash}) of parent p, as recorded by the child on
// the other side of the sibling.
func parentHash(s *CipherSuite, p *ParentNode, siblingHash []byte) []byte {
	var b cryptobyte.Builder
	addOpaque(&b, p.EncryptionKey)
	addOpaque(&b, p.ParentHash)
	addOpaque(&b, siblingHash)
	return s.Hash(b.BytesOrPanic())
}

// nodeParentHash is the parent_hash field of a leaf (source commit) or
// parent node, nil for other leaves and blanks.
func (t *ratchetTree) nodeParentHash(x uint32) []byte {
	nd := t.nodes[x]
	switch {
	case nd == nil:
		return nil
	case nd.LeafNode != nil:
		if nd.LeafNode.Source != LeafNodeSourceCommit {
			return nil
		}
		return nd.LeafNode.ParentHash
	default:
		return nd.ParentNode.ParentHash
	}
}

// inSubtree reports whether node x lies in the subtree rooted at r.
func inSubtree(x, r uint32) bool {
	k := nodeLevel(r)
	lo := r - (1<<k - 1)
	hi := r + (1<<k - 1)
	return x >= lo && x <= hi
}

// verifyParentHashes checks §7.9.2 top down: every non-blank parent P must
// have exactly one descendant D that links to it, i.e. D sits in the
// resolution of a child C of P, D.parent_hash equals P's parent hash over
// the other child's original tree hash, and P's unmerged leaves below C
// are exactly the rest of C's resolution. That proves each parent key was
// set by a member's signed commit rather than injected.
func (t *ratchetTree) verifyParentHashes(s *CipherSuite) error {
	n := t.numLeaves()
	for x := uint32(1); x < uint32(len(t.nodes)); x += 2 {
		p := t.parent(x)
		if p == nil {
			continue
		}
		exclude := map[uint32]bool{}
		for _, l := range p.UnmergedLeaves {
			exclude[l] = true
		}
		l, _ := nodeLeft(x)
		r, _ := nodeRight(x)
		matches := 0
		for _, side := range [2][2]uint32{{l, r}, {r, l}} {
			c, sib := side[0], side[1]
			hashes, err := t.treeHashes(s, sib, exclude)
			if err != nil {
				return err
			}
			want := parentHash(s, p, hashes[sib])
			res := t.resolution(c, nil)
			var unmergedBelow []uint32
			for _, u := range p.UnmergedLeaves {
				if inSubtree(2*u, c) {
					unmergedBelow = append(unmergedBelow, 2*u)
				}
			}
			for _, d := range res {
				if !bytes.Equal(t.nodeParentHash(d), want) {
					continue
				}
				rest := slices.DeleteFunc(slices.Clone(res), func(y uint32) bool { return y == d })
				if sameSet(rest, unmergedBelow) {
					matches++
				}
			}
		}
		if matches != 1 {
			return fmt.Errorf("parent node %d of %d leaves has %d linked descendants: %w", x, n, matches, ErrParentHash)
		}
	}
	return nil
}

func sameSet(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// verifyStructure checks the rules of §12.4.3.1 that are not about
// hashes: each unmerged leaf of a parent P is a non-blank descendant of P
// and is unmerged at every non-blank parent between it and P; HPKE keys
// are unique across nodes and signature keys across leaves, so that no
// member can impersonate another or make two nodes share secrets.
func (t *ratchetTree) verifyStructure() error {
	n := t.numLeaves()
	encKeys := map[string]uint32{}
	sigKeys := map[string]uint32{}
	for x := uint32(0); x < uint32(len(t.nodes)); x++ {
		nd := t.nodes[x]
		if nd == nil {
			continue
		}
		k := string(t.encryptionKey(x))
		if prev, dup := encKeys[k]; dup {
			return fmt.Errorf("nodes %d and %d share an encryption key: %w", prev, x, ErrInvalidTree)
		}
		encKeys[k] = x
		if nd.LeafNode != nil {
			sk := string(nd.LeafNode.SignatureKey)
			if prev, dup := sigKeys[sk]; dup {
				return fmt.Errorf("leaves %d and %d share a signature key: %w", prev/2, x/2, ErrInvalidTree)
			}
			sigKeys[sk] = x
			continue
		}
		for _, u := range nd.ParentNode.UnmergedLeaves {
			if u >= n || !inSubtree(2*u, x) || t.nodes[2*u] == nil {
				return fmt.Errorf("parent %d lists unmerged leaf %d: %w", x, u, ErrInvalidTree)
			}
			dp, _ := directPath(2*u, n)
			for _, y := range dp {
				if y == x {
					break
				}
				if py := t.parent(y); py != nil && !slices.Contains(py.UnmergedLeaves, u) {
					return fmt.Errorf("leaf %d unmerged at %d but not at %d: %w", u, x, y, ErrInvalidTree)
				}
			}
		}
		if len(slices.Compact(slices.Sorted(slices.Values(nd.ParentNode.UnmergedLeaves)))) != len(nd.ParentNode.UnmergedLeaves) {
			return fmt.Errorf("parent %d lists an unmerged leaf twice: %w", x, ErrInvalidTree)
		}
	}
	return nil
}

// verifyLeafSignature checks a LeafNode's signature (§7.2): update and
// commit leaves are bound to their group and leaf index, key-package
// leaves are not (they are signed before the member has a position).
func verifyLeafSignature(s *CipherSuite, ln *LeafNode, groupID []byte, leaf uint32) error {
	tbs, err := ln.MarshalTBS(groupID, leaf)
	if err != nil {
		return fmt.Errorf("leaf %d: %w", leaf, err)
	}
	if err := s.VerifyWithLabel(ln.SignatureKey, "LeafNodeTBS", tbs, ln.Signature); err != nil {
		return fmt.Errorf("leaf %d: %w", leaf, err)
	}
	return nil
}

// signLeaf sets ln.Signature for its position.
func signLeaf(s *CipherSuite, ln *LeafNode, sigPriv, groupID []byte, leaf uint32) error {
	tbs, err := ln.MarshalTBS(groupID, leaf)
	if err != nil {
		return err
	}
	ln.Signature, err = s.SignWithLabel(sigPriv, "LeafNodeTBS", tbs)
	return err
}

// verifyTree is the integrity check a joiner runs on a received tree
// (§12.4.3.1): structure, every leaf signature, parent hashes, and the
// tree hash against the group context (compared in constant time only as
// a matter of habit; the hash is public).
func (t *ratchetTree) verifyTree(s *CipherSuite, groupID, treeHash []byte) error {
	if err := t.verifyStructure(); err != nil {
		return err
	}
	for _, i := range t.members() {
		if err := verifyLeafSignature(s, t.leaf(i), groupID, i); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidLeafNode, err)
		}
	}
	if err := t.verifyParentHashes(s); err != nil {
		return err
	}
	h, err := t.treeHash(s)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(h, treeHash) != 1 {
		return ErrTreeHash
	}
	return nil
}

// findLeaf returns the index of the leaf whose encryption key is encKey.
func (t *ratchetTree) findLeaf(encKey []byte) (uint32, bool) {
	for _, i := range t.members() {
		if bytes.Equal(t.leaf(i).EncryptionKey, encKey) {
			return i, true
		}
	}
	return 0, false
}
