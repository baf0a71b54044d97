package kt

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
)

// The prefix tree is a binary Merkle tree over 256-bit indices (VRF
// outputs), compressed like a Patricia trie: an internal node sits at the
// longest common prefix of the leaves below it, so a tree of n random
// leaves is about log2(n) nodes deep. The root is an internal node at depth
// 0 that always exists; it is the only node that may have an empty child.
//
//	leaf hash     = SHA-256(0x00 || index (32) || commitment (32))
//	node hash     = SHA-256(0x01 || depth (1) || prefix (32) || left || right)
//	empty subtree = 32 zero bytes
//
// prefix is the node's first depth bits with the rest zeroed. Binding the
// depth and prefix into each node hash gives every position in the tree one
// hash, so one root answers "is index i present, and with which
// commitment" in exactly one way.

// IndexSize is the size of a tree index (a truncated VRF output).
const IndexSize = 32

// Index is a position in the prefix tree.
type Index [IndexSize]byte

// bit returns bit d (0 = most significant bit of byte 0).
func (x *Index) bit(d int) int { return int(x[d/8]>>(7-d%8)) & 1 }

// prefix returns x truncated to its first d bits.
func (x *Index) prefix(d int) Index {
	var p Index
	copy(p[:d/8], x[:d/8])
	if r := d % 8; r != 0 {
		p[d/8] = x[d/8] & (0xff << (8 - r))
	}
	return p
}

// commonPrefix returns the number of leading bits a and b share (256 if equal).
func commonPrefix(a, b *Index) int {
	for i := range IndexSize {
		if x := a[i] ^ b[i]; x != 0 {
			return i*8 + bits.LeadingZeros8(x)
		}
	}
	return 256
}

// leafDepth is the depth of a leaf; internal nodes have depths 0..255.
const leafDepth = 256

// nodeID names a node: its depth and its prefix.
type nodeID struct {
	depth  uint16
	prefix Index
}

var rootID = nodeID{}

// key is the node's ID as a child reference in a record: depth (2,
// big-endian) || prefix. Nodes are stored under storeKey.
func (n nodeID) key() []byte {
	k := make([]byte, 2+IndexSize)
	binary.BigEndian.PutUint16(k, n.depth)
	copy(k[2:], n.prefix[:])
	return k
}

// storeSplit is the deepest level stored by depth; deeper nodes are
// stored by prefix (storeKey).
const storeSplit = 16

// storeKey is the node's bbolt key. Down to depth storeSplit it is key():
// the top of the tree is one contiguous range, read whole into the cache
// at open. Below, it is 0x01 || prefix || depth (1): every subtree is one
// contiguous range, so the nodes an insert changes below the cached levels
// sit together on one or two pages instead of one page per level. An epoch
// of 10,000 inserts into a 1M-leaf tree changes about 50,000 such nodes;
// ordered by depth they dirtied most of the file's pages at every commit.
func (n nodeID) storeKey() []byte {
	return n.appendStoreKey(make([]byte, 0, 2+IndexSize))
}

// appendStoreKey appends storeKey to b.
func (n nodeID) appendStoreKey(b []byte) []byte {
	if n.depth <= storeSplit {
		b = binary.BigEndian.AppendUint16(b, n.depth)
		return append(b, n.prefix[:]...)
	}
	b = append(b, storeKeyDeep)
	b = append(b, n.prefix[:]...)
	return append(b, byte(n.depth))
}

// storeKeyDeep is the first byte of the store keys of nodes below
// storeSplit.
const storeKeyDeep = 0x01

// nodeIDFromStoreKey inverts storeKey.
func nodeIDFromStoreKey(k []byte) (nodeID, error) {
	if len(k) != 2+IndexSize || k[0] > storeKeyDeep {
		return nodeID{}, errors.New("kt: bad node key")
	}
	if k[0] != storeKeyDeep {
		return nodeIDFromKey(k)
	}
	n := nodeID{depth: uint16(k[1+IndexSize])}
	copy(n.prefix[:], k[1:])
	if n.depth <= storeSplit {
		return nodeID{}, errors.New("kt: bad node key")
	}
	return n, nil
}

func nodeIDFromKey(k []byte) (nodeID, error) {
	if len(k) != 2+IndexSize {
		return nodeID{}, errors.New("kt: bad node key")
	}
	var n nodeID
	n.depth = binary.BigEndian.Uint16(k)
	copy(n.prefix[:], k[2:])
	return n, nil
}

// childRef is a node's reference to one child: its ID and hash, and for
// a leaf its commitment. Leaves have no records of their own: a leaf is
// its parent's child reference, so an insert writes one node fewer and
// hashing a node never reads its children.
type childRef struct {
	id         nodeID
	hash       [32]byte
	commitment [32]byte // leaves only
}

func (c *childRef) leaf() bool { return c.id.depth == leafDepth }

// nodeState is one internal node at one epoch.
type nodeState struct {
	hash    [32]byte
	child   [2]childRef
	present [2]bool // false only at the root
}

// nodeRecord keeps the node's newest state and, while the epoch that wrote
// it is not yet served, the state before it. Readers of the served epoch
// pick the newest state not newer than their epoch; this is what lets the
// writer build epoch N+1 while lookups are answered at epoch N without
// holding a transaction open. The previous state is kept in memory
// (treeStore.stagePrevs), not stored: only the epoch being built has one
// a reader needs, and stored it doubled the bytes every commit writes.
// Records stored with one by earlier versions still parse.
type nodeRecord struct {
	id       nodeID
	epoch    uint64
	state    nodeState
	hasPrev  bool
	prevFrom uint64
	prev     nodeState
	// kid links a record a treeBatch changed to the records of its
	// children the batch changed: 1 + their position in the batch's
	// list, 0 for none. Only meaningful within that batch; indices, not
	// pointers, so that records hold no pointers for the GC to scan.
	kid [2]int32
	// own marks a record read for one caller alone (parsed from the
	// store, not the cache's): a treeBatch edits it in place instead of
	// copying it.
	own bool
}

// at returns the state of the node at epoch e.
func (r *nodeRecord) at(e uint64) (*nodeState, bool) {
	if r.epoch <= e {
		return &r.state, true
	}
	if r.hasPrev && r.prevFrom <= e {
		return &r.prev, true
	}
	return nil, false
}

// presentMask is the state's mask byte in both formats: bit i set when
// child i is present.
func (s *nodeState) presentMask() byte {
	var mask byte
	for i := range 2 {
		if s.present[i] {
			mask |= 1 << i
		}
	}
	return mask
}

func appendState(b []byte, s *nodeState) []byte {
	b = append(b, s.hash[:]...)
	b = append(b, s.presentMask())
	for i := range 2 {
		if !s.present[i] {
			continue
		}
		c := &s.child[i]
		b = binary.BigEndian.AppendUint16(b, c.id.depth) // c.id.key()
		b = append(b, c.id.prefix[:]...)
		b = append(b, c.hash[:]...)
		if c.leaf() {
			b = append(b, c.commitment[:]...)
		}
	}
	return b
}

// Node records are stored in one of two formats; both parse.
//
// Format 1 (before 2026-12-07b): epoch (8) || state [|| prevFrom (8) ||
// state], a state being hash (32) || mask (1) || per present child: key
// (34) || hash (32) [|| commitment (32) for a leaf]. Its first byte is
// 0 (the epoch's high byte).
//
// Format 2 (recordV2): 0x02 || epoch (8) || state2 [|| prevFrom (8) ||
// state2], a state2 being mask (1) || per present child either 0x00 ||
// index (32) || commitment (32) for a leaf, or depth (1, >= 1) || the
// first ceil(depth/8) bytes of its prefix || hash (32) for an internal
// node. It leaves out what a reader recomputes: the node's own hash and
// its leaves' hashes (one SHA-256 each), and the zero bytes of a child's
// prefix. A record is about half the size, so an epoch's changed nodes
// sit on fewer pages (docs/adr/0043). Records are rewritten in format 2
// when an epoch changes them; format-1 records stay readable.
//
// Parsing either format recomputes the hashes a state2 leaves out, so a
// parsed record is the same whichever format it was read from.
const recordV2 = 0x02

// marshal encodes the record without its previous state (format 2).
func (r *nodeRecord) marshal() []byte { return r.appendTo(make([]byte, 0, 160)) }

// appendTo appends marshal's encoding to b.
func (r *nodeRecord) appendTo(b []byte) []byte {
	b = append(b, recordV2)
	b = binary.BigEndian.AppendUint64(b, r.epoch)
	return appendState2(b, &r.state)
}

// marshalV1 encodes the record in format 1 (tests of the upgrade path).
func (r *nodeRecord) marshalV1() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 240), r.epoch)
	return appendState(b, &r.state)
}

// appendState2 appends s as a format-2 state.
func appendState2(b []byte, s *nodeState) []byte {
	b = append(b, s.presentMask())
	for i := range 2 {
		if !s.present[i] {
			continue
		}
		c := &s.child[i]
		if c.leaf() {
			b = append(b, 0)
			b = append(b, c.id.prefix[:]...)
			b = append(b, c.commitment[:]...)
			continue
		}
		b = append(b, byte(c.id.depth))
		b = append(b, c.id.prefix[:(c.id.depth+7)/8]...)
		b = append(b, c.hash[:]...)
	}
	return b
}

// parseState2 parses a format-2 state into s, without its hashes.
func parseState2(b []byte, s *nodeState) ([]byte, error) {
	if len(b) < 1 || b[0] > 3 {
		return nil, errors.New("short node state")
	}
	mask := b[0]
	b = b[1:]
	for i := range 2 {
		if mask&(1<<i) == 0 {
			continue
		}
		if len(b) < 1 {
			return nil, errors.New("short child")
		}
		c := &s.child[i]
		if b[0] == 0 {
			if len(b) < 1+2*32 {
				return nil, errors.New("short leaf child")
			}
			c.id.depth = leafDepth
			copy(c.id.prefix[:], b[1:33])
			copy(c.commitment[:], b[33:65])
			b = b[65:]
		} else {
			d := int(b[0])
			n := (d + 7) / 8
			if len(b) < 1+n+32 {
				return nil, errors.New("short child")
			}
			var p Index
			copy(p[:], b[1:1+n])
			c.id = nodeID{depth: uint16(d), prefix: p.prefix(d)}
			copy(c.hash[:], b[1+n:1+n+32])
			b = b[1+n+32:]
		}
		s.present[i] = true
	}
	return b, nil
}

// rehashState recomputes the hashes a parsed state may not carry: its
// leaves' and its own (at node id).
func rehashState(id nodeID, s *nodeState) {
	var h [2][32]byte
	for i := range 2 {
		if !s.present[i] {
			continue
		}
		c := &s.child[i]
		if c.leaf() {
			c.hash = LeafHash(&c.id.prefix, &c.commitment)
		}
		h[i] = c.hash
	}
	s.hash = nodeHash(int(id.depth), &id.prefix, &h[0], &h[1])
}

func parseState(b []byte, s *nodeState) ([]byte, error) {
	if len(b) < 33 || b[32] > 3 {
		return nil, errors.New("short node state")
	}
	copy(s.hash[:], b)
	mask := b[32]
	b = b[33:]
	for i := range 2 {
		if mask&(1<<i) == 0 {
			continue
		}
		if len(b) < 34+32 {
			return nil, errors.New("short child")
		}
		c := &s.child[i]
		c.id, _ = nodeIDFromKey(b[:34])
		if c.id.depth == 0 || c.id.depth > leafDepth {
			return nil, errors.New("bad child depth")
		}
		if !c.leaf() {
			c.id.prefix = c.id.prefix.prefix(int(c.id.depth))
		}
		copy(c.hash[:], b[34:66])
		b = b[66:]
		if c.leaf() {
			if len(b) < 32 {
				return nil, errors.New("short leaf child")
			}
			copy(c.commitment[:], b)
			b = b[32:]
		}
		s.present[i] = true
	}
	return b, nil
}

func parseNodeRecord(id nodeID, b []byte) (*nodeRecord, error) {
	r := &nodeRecord{id: id}
	parse := parseState
	if len(b) > 0 && b[0] == recordV2 {
		parse, b = parseState2, b[1:]
	}
	if len(b) < 8 {
		return nil, fmt.Errorf("kt: node record: short")
	}
	r.epoch = binary.BigEndian.Uint64(b)
	b, err := parse(b[8:], &r.state)
	if err != nil {
		return nil, fmt.Errorf("kt: node record: %w", err)
	}
	if len(b) > 0 {
		if len(b) < 8 {
			return nil, fmt.Errorf("kt: node record: short previous state")
		}
		r.hasPrev, r.prevFrom = true, binary.BigEndian.Uint64(b)
		if b, err = parse(b[8:], &r.prev); err != nil || len(b) != 0 {
			return nil, fmt.Errorf("kt: node record: bad previous state")
		}
		rehashState(id, &r.prev)
	}
	rehashState(id, &r.state)
	return r, nil
}

// LeafHash is the hash of the leaf at index with the given commitment.
func LeafHash(index *Index, commitment *[32]byte) [32]byte {
	var buf [1 + 2*32]byte
	buf[0] = 0x00
	copy(buf[1:], index[:])
	copy(buf[33:], commitment[:])
	return sha256.Sum256(buf[:])
}

// nodeHash is the hash of the internal node at (depth, prefix).
func nodeHash(depth int, prefix *Index, left, right *[32]byte) [32]byte {
	var buf [1 + 1 + 32 + 64]byte
	buf[0] = 0x01
	buf[1] = byte(depth)
	copy(buf[2:], prefix[:])
	copy(buf[34:], left[:])
	copy(buf[66:], right[:])
	return sha256.Sum256(buf[:])
}

// nodeSource reads node records; nil, nil means absent.
type nodeSource interface {
	node(id nodeID) (*nodeRecord, error)
}

// ErrDuplicateIndex is returned when an index is inserted twice.
var ErrDuplicateIndex = errors.New("kt: index already in the tree")

// treeBatch inserts leaves for one epoch into copies of the nodes it
// touches; Finish rehashes them bottom-up. Nothing is written until the
// caller stores Dirty.
//
// The batch's records form a tree of their own: every changed node but
// the root is reached from its changed parent through nodeRecord.kid, so
// an insert walks down the nodes earlier inserts changed without a map
// lookup, and Finish rehashes them depth first from the root. dirty
// indexes the same records by ID for the store.
type treeBatch struct {
	src   nodeSource
	epoch uint64
	dirty map[nodeID]*nodeRecord // the internal nodes this batch changed, by ID: made by Finish from list
	list  []*nodeRecord          // the same records; nodeRecord.kid points into it
	root  *nodeRecord            // the root's record in this batch, once changed
	// noPrev drops the state before this epoch instead of keeping it for
	// readers of earlier epochs (a ReplayTree has none).
	noPrev bool
}

func newTreeBatch(src nodeSource, epoch uint64) *treeBatch {
	return &treeBatch{src: src, epoch: epoch}
}

// get returns the newest record of id, from this batch or the source.
func (t *treeBatch) get(id nodeID) (*nodeRecord, error) {
	r, err := t.src.node(id)
	if err != nil {
		return nil, err
	}
	if r == nil && id == rootID {
		return &nodeRecord{id: rootID, state: nodeState{hash: emptyRoot()}}, nil
	}
	return r, nil
}

// edit returns a writable copy of r, a record the batch has not changed
// yet, for this epoch, keeping the state readers of earlier epochs still
// need, and its position in list plus one.
func (t *treeBatch) edit(r *nodeRecord) (*nodeRecord, int32) {
	n := r
	if r.own {
		r.own, r.hasPrev = false, false
	} else {
		n = &nodeRecord{id: r.id, state: r.state}
	}
	if r.epoch < t.epoch && !t.noPrev {
		n.hasPrev, n.prevFrom, n.prev = true, r.epoch, r.state
	}
	n.epoch = t.epoch
	return n, t.add(n)
}

func (t *treeBatch) add(n *nodeRecord) int32 {
	t.list = append(t.list, n)
	return int32(len(t.list))
}

// Insert adds the leaf (index, commitment).
func (t *treeBatch) Insert(index Index, commitment [32]byte) error {
	leaf := childRef{id: nodeID{depth: leafDepth, prefix: index}, hash: LeafHash(&index, &commitment), commitment: commitment}
	if t.root == nil {
		r, err := t.get(rootID)
		if err != nil {
			return err
		}
		t.root, _ = t.edit(r)
	}
	w := t.root
	for {
		d := int(w.id.depth)
		b := index.bit(d)
		if !w.state.present[b] {
			w.state.child[b], w.state.present[b] = leaf, true
			return nil
		}
		c := &w.state.child[b]
		cp := commonPrefix(&index, &c.id.prefix)
		if cp >= int(c.id.depth) {
			if c.leaf() {
				return ErrDuplicateIndex
			}
			if k := w.kid[b]; k != 0 {
				w = t.list[k-1]
				continue
			}
			r, err := t.src.node(c.id)
			if err != nil {
				return err
			}
			if r == nil {
				return fmt.Errorf("kt: tree node %d/%x missing", c.id.depth, c.id.prefix[:4])
			}
			n, k := t.edit(r)
			w.kid[b] = k
			w = n
			continue
		}
		// Split: a new internal node at the common prefix holds the old
		// child (with its record in this batch, if changed) and the new
		// leaf.
		ib := index.bit(cp)
		mid := &nodeRecord{id: nodeID{depth: uint16(cp), prefix: index.prefix(cp)}, epoch: t.epoch}
		mid.state.child[ib], mid.state.present[ib] = leaf, true
		mid.state.child[1-ib], mid.state.present[1-ib] = *c, true
		mid.kid[1-ib] = w.kid[b]
		w.kid[b] = t.add(mid)
		*c = childRef{id: mid.id}
		return nil
	}
}

// Finish recomputes the hash of every touched internal node, deepest
// first (so each one's touched children are done), and returns the new
// root hash.
func (t *treeBatch) Finish() ([32]byte, error) {
	root, err := t.finishHashes()
	t.dirty = make(map[nodeID]*nodeRecord, len(t.list))
	for _, r := range t.list {
		t.dirty[r.id] = r
	}
	return root, err
}

// finishHashes is Finish without indexing the records by ID.
func (t *treeBatch) finishHashes() ([32]byte, error) {
	if t.root == nil {
		root, err := t.get(rootID)
		if err != nil {
			return [32]byte{}, err
		}
		return root.state.hash, nil
	}
	t.rehash(t.root)
	return t.root.state.hash, nil
}

// rehash recomputes the hashes of r and of its changed descendants.
// The recursion is at most 256 deep, one level per bit of the index.
func (t *treeBatch) rehash(r *nodeRecord) {
	var h [2][32]byte
	for i := range 2 {
		if !r.state.present[i] {
			continue
		}
		c := &r.state.child[i]
		if k := r.kid[i]; k != 0 {
			kr := t.list[k-1]
			t.rehash(kr)
			c.hash = kr.state.hash
		}
		h[i] = c.hash
	}
	r.state.hash = nodeHash(int(r.id.depth), &r.id.prefix, &h[0], &h[1])
}

var emptyRootHash = func() [32]byte {
	var zero [32]byte
	var p Index
	return nodeHash(0, &p, &zero, &zero)
}()

// emptyRoot is the root hash of the empty tree.
func emptyRoot() [32]byte { return emptyRootHash }

// insertLeaves inserts leaves (one epoch's) into the tree read through
// src, the two halves of the tree (the root's two children) on two
// goroutines when each half has at least minParallel, and rehashes. src(i) gives
// each goroutine a source of its own (a bbolt transaction is not safe
// for concurrent use). The result does not depend on the leaves' order
// or on the split: the tree's shape is a function of the set of leaves.
// It returns the changed records and the new root hash.
func insertLeaves(src func(i int) (nodeSource, func()), epoch uint64, leaves []Leaf, minParallel int) (map[nodeID]*nodeRecord, [32]byte, error) {
	var side [2][]Leaf
	for i := range leaves {
		b := leaves[i].Index.bit(0)
		side[b] = append(side[b], leaves[i])
	}
	if len(side[0]) < minParallel || len(side[1]) < minParallel {
		s, done := src(0)
		defer done()
		tb := newTreeBatch(s, epoch)
		for i := range leaves {
			if err := tb.Insert(leaves[i].Index, leaves[i].Commitment); err != nil {
				return nil, [32]byte{}, err
			}
		}
		root, err := tb.Finish()
		return tb.dirty, root, err
	}
	// Each half's batch changes the root's child on its side only; the
	// root is merged from the two below.
	var tbs [2]*treeBatch
	var errs [2]error
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, done := src(i)
			defer done()
			tb := newTreeBatch(s, epoch)
			for j := range side[i] {
				if errs[i] = tb.Insert(side[i][j].Index, side[i][j].Commitment); errs[i] != nil {
					return
				}
			}
			_, errs[i] = tb.finishHashes()
			tbs[i] = tb
		}()
	}
	wg.Wait()
	if err := errors.Join(errs[0], errs[1]); err != nil {
		return nil, [32]byte{}, err
	}
	root := tbs[0].root
	root.state.child[1], root.state.present[1] = tbs[1].root.state.child[1], tbs[1].root.state.present[1]
	var h [2][32]byte
	for i := range 2 {
		if root.state.present[i] {
			h[i] = root.state.child[i].hash
		}
	}
	root.state.hash = nodeHash(0, &root.id.prefix, &h[0], &h[1])
	dirty := make(map[nodeID]*nodeRecord, len(tbs[0].list)+len(tbs[1].list))
	for i := range 2 {
		for _, r := range tbs[i].list {
			if r.id != rootID || i == 0 {
				dirty[r.id] = r
			}
		}
	}
	return dirty, root.state.hash, nil
}
