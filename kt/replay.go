package kt

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ReplayTree is a prefix tree of one's own, grown one epoch at a time
// from a log's update lists (§1.5): what an auditor keeps (kt/audit). It
// lives in the nodes bucket of a bbolt database the caller opens, with the
// same node layout and hashing as the directory's tree, but without the
// previous states the directory keeps for lookups at the served epoch.
type ReplayTree struct {
	db *bolt.DB
	ts *treeStore
}

// OpenReplayTree opens (or creates) the tree in db; nodes up to
// cacheDepth are held in memory (0: DefaultCacheDepth).
func OpenReplayTree(db *bolt.DB, cacheDepth int) (*ReplayTree, error) {
	if cacheDepth <= 0 {
		cacheDepth = DefaultCacheDepth
	}
	ts, err := openTreeStore(db, cacheDepth)
	if err != nil {
		return nil, err
	}
	return &ReplayTree{db: db, ts: ts}, nil
}

// Root returns the tree's root hash (the empty tree's before any leaf).
func (t *ReplayTree) Root() ([32]byte, error) {
	var root [32]byte
	err := t.db.View(func(tx *bolt.Tx) error {
		r, err := txNodes{ts: t.ts, snap: boltSnapshot{tx: tx}}.node(rootID)
		if err != nil {
			return err
		}
		root = emptyRoot()
		if r != nil {
			root = r.state.hash
		}
		return nil
	})
	return root, err
}

// Apply inserts the leaves of epoch in order, in one bbolt transaction,
// and calls check with the new root inside that transaction before it
// commits: the tree and whatever check writes change together, or, when
// check or an insert fails, not at all. A leaf whose index is already in
// the tree (leaves are never replaced) fails with ErrDuplicateIndex,
// wrapped with the leaf's position in leaves.
func (t *ReplayTree) Apply(epoch uint64, leaves []Leaf, check func(tx *bolt.Tx, root [32]byte) error) error {
	var dirty map[nodeID]*nodeRecord
	err := t.db.Update(func(tx *bolt.Tx) error {
		tb := newTreeBatch(txNodes{ts: t.ts, snap: boltSnapshot{tx: tx}}, epoch)
		tb.noPrev = true
		for i := range leaves {
			if err := tb.Insert(leaves[i].Index, leaves[i].Commitment); err != nil {
				if errors.Is(err, ErrDuplicateIndex) {
					return fmt.Errorf("leaf %d (index %x): %w", i, leaves[i].Index[:8], err)
				}
				return err
			}
		}
		root, err := tb.Finish()
		if err != nil {
			return err
		}
		if err := check(tx, root); err != nil {
			return err
		}
		if err := t.ts.putNodes(tx, tb.dirty); err != nil {
			return err
		}
		dirty = tb.dirty
		return nil
	})
	if err != nil {
		return err
	}
	t.ts.publish(dirty)
	return nil
}
