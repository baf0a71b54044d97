package mls

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
)

// TreeKEM (RFC 9420 §7.4–§7.6): a committer picks a fresh path secret,
// hashes it up its filtered direct path to give every parent a new key
// pair, and encrypts each path secret to the resolution of the copath
// child below that parent. Every other member can decrypt exactly one of
// them — at the lowest parent it shares with the committer — and derive
// the rest of the path and the commit secret from it.

// ErrInvalidPath: an UpdatePath does not fit the tree (wrong node count,
// keys that do not follow from the path secret, undecryptable secret).
var ErrInvalidPath = errors.New("mls: invalid update path")

// hpkeKeyPair is a node key pair; pub identifies which node key the
// private key belongs to, so stale keys are recognised and dropped.
type hpkeKeyPair struct {
	pub, priv []byte
}

// treePrivate is a member's private view of the tree (§7.4): its leaf index
// and the private keys of its leaf and of the parents on its direct path
// it learned from path secrets.
type treePrivate struct {
	leaf uint32
	keys map[uint32]hpkeKeyPair
}

// clone deep-copies the keys: prune zeroes private keys in place, which
// must not reach the state a working copy was taken from.
func (p *treePrivate) clone() *treePrivate {
	keys := make(map[uint32]hpkeKeyPair, len(p.keys))
	for x, k := range p.keys {
		keys[x] = hpkeKeyPair{pub: k.pub, priv: slices.Clone(k.priv)}
	}
	return &treePrivate{leaf: p.leaf, keys: keys}
}

// keyFor returns the private key of node x if the member holds the key
// the tree currently has there.
func (p *treePrivate) keyFor(t *ratchetTree, x uint32) ([]byte, bool) {
	k, ok := p.keys[x]
	if !ok || !bytes.Equal(k.pub, t.encryptionKey(x)) {
		return nil, false
	}
	return k.priv, true
}

// prune drops private keys of nodes the tree no longer has them for, so
// that secrets of replaced or blanked nodes are deleted (§9.2 spirit:
// forward secrecy needs old keys gone).
func (p *treePrivate) prune(t *ratchetTree) {
	for x, k := range p.keys {
		if int(x) >= len(t.nodes) || !bytes.Equal(k.pub, t.encryptionKey(x)) {
			zero(k.priv)
			delete(p.keys, x)
		}
	}
}

// nodeKeyPair derives a parent's key pair from its path secret (§7.4):
// node_secret = DeriveSecret(path_secret, "node"), then DeriveKeyPair.
func (s *CipherSuite) nodeKeyPair(pathSecret []byte) (hpkeKeyPair, error) {
	pub, priv, err := s.DeriveKeyPair(s.DeriveSecret(pathSecret, "node"))
	if err != nil {
		return hpkeKeyPair{}, err
	}
	return hpkeKeyPair{pub: pub, priv: priv}, nil
}

// contextFunc builds the provisional GroupContext for a tree hash: path
// secrets are encrypted with the new epoch's context as HPKE info so that
// they are bound to the exact tree they belong to (§12.4.1, §12.4.2).
type contextFunc func(treeHash []byte) (*GroupContext, error)

// mergePath writes an UpdatePath's public keys into the tree (§7.5): the
// sender's direct path is blanked, the filtered direct path gets the new
// keys with empty unmerged lists, and parent hashes are chained top down
// (§7.9). It returns the parent hash the sender's new leaf must carry and
// the node hashes, for rehashPath once the leaf is in place.
func (t *ratchetTree) mergePath(s *CipherSuite, sender uint32, keys [][]byte) ([]byte, [][]byte, error) {
	path, copath := t.filteredDirectPath(sender)
	if len(keys) != len(path) {
		return nil, nil, fmt.Errorf("%d path nodes for a filtered direct path of %d: %w", len(keys), len(path), ErrInvalidPath)
	}
	t.blankPath(sender)
	// The copath subtrees are untouched by the merge, so one hash pass
	// gives every original_sibling_tree_hash (the new parents have no
	// unmerged leaves, so "original" is the current tree).
	hashes, err := t.treeHashes(s, treeRoot(t.numLeaves()), nil)
	if err != nil {
		return nil, nil, err
	}
	var ph []byte // the root-most node's parent_hash is empty
	for i := len(path) - 1; i >= 0; i-- {
		pn := &ParentNode{EncryptionKey: keys[i], ParentHash: ph}
		t.setParent(path[i], pn)
		ph = parentHash(s, pn, hashes[copath[i]])
	}
	return ph, hashes, nil
}

// pathResult is what generating or processing an UpdatePath yields.
type pathResult struct {
	commitSecret []byte
	// keys are the new private keys of parents on the sender's path
	// (all of them for the sender, from the common ancestor up for a
	// receiver).
	keys map[uint32]hpkeKeyPair
	// secrets are the path secrets by node index, which the committer
	// needs for Welcome messages (§12.4.3.1).
	secrets map[uint32][]byte
	// lcaSecret is the path secret a receiver decrypted.
	lcaSecret []byte
	ctx       *GroupContext
}

// treeHash is the new tree hash, nil when there was no path.
func (r *pathResult) treeHash() []byte {
	if r.ctx == nil {
		return nil
	}
	return r.ctx.TreeHash
}

// createUpdatePath is §7.5 for the committer at leaf `sender`: leaf is the
// new LeafNode (fresh encryption key, not yet signed), which gets source
// commit, the parent hash and a signature; exclude lists leaves added by
// this commit, which learn their path secret from the Welcome instead.
// The tree is updated in place. tamper, nil but in tests, may change the
// new leaf and path keys before they are merged and signed: it is how the
// package's tests play a committer that breaks §12.4.2's key rules.
func createUpdatePath(s *CipherSuite, t *ratchetTree, sender uint32, leaf *LeafNode, sigPriv, groupID []byte, exclude map[uint32]bool, ctxFn contextFunc, tamper func(leaf *LeafNode, pubs [][]byte)) (*UpdatePath, *pathResult, error) {
	path, copath := t.filteredDirectPath(sender)
	res := &pathResult{keys: map[uint32]hpkeKeyPair{}, secrets: map[uint32][]byte{}}
	secret := make([]byte, s.nh)
	if _, err := io.ReadFull(rand.Reader, secret); err != nil {
		return nil, nil, fmt.Errorf("path secret: %w", err)
	}
	pubs := make([][]byte, len(path))
	secrets := make([][]byte, len(path))
	for i, p := range path {
		kp, err := s.nodeKeyPair(secret)
		if err != nil {
			return nil, nil, err
		}
		pubs[i], secrets[i] = kp.pub, secret
		res.keys[p], res.secrets[p] = kp, secret
		secret = s.DeriveSecret(secret, "path")
	}
	// commit_secret is the secret one step past the root (§7.4, §8).
	res.commitSecret = secret
	if tamper != nil {
		tamper(leaf, pubs)
	}
	ph, hashes, err := t.mergePath(s, sender, pubs)
	if err != nil {
		return nil, nil, err
	}
	nl := *leaf
	nl.Source, nl.Lifetime, nl.ParentHash = LeafNodeSourceCommit, nil, ph
	if err := signLeaf(s, &nl, sigPriv, groupID, sender); err != nil {
		return nil, nil, fmt.Errorf("sign path leaf: %w", err)
	}
	t.setLeaf(sender, &nl)
	th, err := t.rehashPath(s, hashes, sender)
	if err != nil {
		return nil, nil, err
	}
	if res.ctx, err = ctxFn(th); err != nil {
		return nil, nil, err
	}
	ctx, err := res.ctx.Marshal()
	if err != nil {
		return nil, nil, err
	}
	up := &UpdatePath{LeafNode: nl, Nodes: make([]UpdatePathNode, len(path))}
	for i := range path {
		up.Nodes[i].EncryptionKey = pubs[i]
		for _, y := range t.resolution(copath[i], exclude) {
			kem, ct, err := s.EncryptWithLabel(t.encryptionKey(y), "UpdatePathNode", ctx, secrets[i])
			if err != nil {
				return nil, nil, fmt.Errorf("encrypt path secret to node %d: %w", y, err)
			}
			up.Nodes[i].EncryptedPathSecret = append(up.Nodes[i].EncryptedPathSecret, HPKECiphertext{KEMOutput: kem, Ciphertext: ct})
		}
	}
	return up, res, nil
}

// applyUpdatePath is §12.4.2 for a receiver (priv may be nil for a member
// that only tracks public state): it checks the new leaf's signature and
// parent hash, merges the path into t in place, then decrypts the path
// secret at the lowest common ancestor with the sender and checks that
// every derived public key matches the one sent.
func applyUpdatePath(s *CipherSuite, t *ratchetTree, sender uint32, up *UpdatePath, groupID []byte, exclude map[uint32]bool, priv *treePrivate, ctxFn contextFunc) (*pathResult, error) {
	if t.leaf(sender) == nil {
		return nil, fmt.Errorf("path from leaf %d: %w", sender, ErrBlankLeaf)
	}
	if up.LeafNode.Source != LeafNodeSourceCommit {
		return nil, fmt.Errorf("path leaf has source %v: %w", up.LeafNode.Source, ErrInvalidLeafNode)
	}
	if err := verifyLeafSignature(s, &up.LeafNode, groupID, sender); err != nil {
		return nil, fmt.Errorf("path leaf: %w", err)
	}
	path, copath := t.filteredDirectPath(sender)
	pubs := make([][]byte, len(up.Nodes))
	for i := range up.Nodes {
		pubs[i] = up.Nodes[i].EncryptionKey
	}
	ph, hashes, err := t.mergePath(s, sender, pubs)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(ph, up.LeafNode.ParentHash) {
		return nil, fmt.Errorf("path leaf of %d: %w", sender, ErrParentHash)
	}
	ln := up.LeafNode
	t.setLeaf(sender, &ln)
	th, err := t.rehashPath(s, hashes, sender)
	if err != nil {
		return nil, err
	}
	res := &pathResult{keys: map[uint32]hpkeKeyPair{}}
	if res.ctx, err = ctxFn(th); err != nil {
		return nil, err
	}
	if priv == nil || priv.leaf == sender {
		return res, nil
	}
	ctx, err := res.ctx.Marshal()
	if err != nil {
		return nil, err
	}
	me := 2 * priv.leaf
	i := 0
	for i < len(path) && !inSubtree(me, copath[i]) {
		i++
	}
	if i == len(path) {
		return nil, fmt.Errorf("leaf %d is below no node of the path: %w", priv.leaf, ErrInvalidPath)
	}
	resol := t.resolution(copath[i], exclude)
	if len(up.Nodes[i].EncryptedPathSecret) != len(resol) {
		return nil, fmt.Errorf("%d ciphertexts for a resolution of %d: %w", len(up.Nodes[i].EncryptedPathSecret), len(resol), ErrInvalidPath)
	}
	var secret []byte
	for j, y := range resol {
		key, ok := priv.keyFor(t, y)
		if !ok {
			continue
		}
		ct := up.Nodes[i].EncryptedPathSecret[j]
		if secret, err = s.DecryptWithLabel(key, "UpdatePathNode", ctx, ct.KEMOutput, ct.Ciphertext); err != nil {
			return nil, fmt.Errorf("path secret at node %d: %w: %w", path[i], ErrInvalidPath, err)
		}
		break
	}
	if secret == nil {
		return nil, fmt.Errorf("no key for the resolution of node %d: %w", copath[i], ErrInvalidPath)
	}
	if len(secret) != s.nh {
		return nil, fmt.Errorf("path secret of %d bytes: %w", len(secret), ErrInvalidPath)
	}
	res.lcaSecret = secret
	for ; i < len(path); i++ {
		kp, err := s.nodeKeyPair(secret)
		if err != nil {
			return nil, err
		}
		// A wrong key here means the committer sent members different
		// views of the tree; accepting it would split the group.
		if !bytes.Equal(kp.pub, pubs[i]) {
			return nil, fmt.Errorf("public key of node %d does not match its path secret: %w", path[i], ErrInvalidPath)
		}
		res.keys[path[i]] = kp
		secret = s.DeriveSecret(secret, "path")
	}
	res.commitSecret = secret
	return res, nil
}

// setPathSecret installs a path secret learned from a Welcome at node x
// (§12.4.3.1) and derives the keys of x and every ancestor, checking them
// against the tree; it returns the commit secret, which a joiner does not
// need but tests compare.
func (p *treePrivate) setPathSecret(s *CipherSuite, t *ratchetTree, x uint32, secret []byte) ([]byte, error) {
	dp, err := directPath(x, t.numLeaves())
	if err != nil {
		return nil, err
	}
	for _, y := range append([]uint32{x}, dp...) {
		if t.nodes[y] == nil {
			continue
		}
		kp, err := s.nodeKeyPair(secret)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(kp.pub, t.encryptionKey(y)) {
			return nil, fmt.Errorf("path secret does not match node %d: %w", y, ErrInvalidPath)
		}
		p.keys[y] = kp
		secret = s.DeriveSecret(secret, "path")
	}
	return secret, nil
}
