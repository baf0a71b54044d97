package kt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// bbolt buckets of the directory database.
var (
	bucketNodes    = []byte("nodes")     // node key -> nodeRecord
	bucketVersions = []byte("versions")  // vrfInput(label, version) -> versionRecord
	bucketEpochs   = []byte("epochs")    // u64 epoch -> EpochRecord
	bucketUpdates  = []byte("updates")   // u64 epoch -> UpdateList
	bucketMeta     = []byte("tree-meta") // metaLayout -> u32 treeLayout
)

// The tree's storage layout, recorded in the meta bucket so that a
// database is never read by code that would misread it.
//
//	1 (no meta bucket): every node under key(), records with their
//	  previous state, a "latest" bucket
//	2: nodes below storeSplit under storeKey, records without their
//	  previous state (nodeRecord), no "latest" bucket kept
//	3: as 2, and records an epoch changes are written in format 2
//	  (recordV2, about half the bytes); format-1 records still read
//	  (docs/adr/0043). Layout-2 code misreads format 2, hence the bump.
//
// openTreeStore migrates layout 1 to 3 (2 needs no migration: its
// records are rewritten as epochs change them) and refuses a layout above
// treeLayout, which a newer version wrote. (Versions before layout 2 do
// not read the marker: docs/adr/0014-kt-tree-storage-layout.md says what
// a downgrade does.)
const treeLayout = 3

var metaLayout = []byte("tree-layout")

// ErrTreeLayout reports a database whose tree a newer version stored in
// a layout this one does not know.
var ErrTreeLayout = errors.New("kt: the database's tree is stored in a layout this version does not know (written by a newer version); refusing to open it")

// treeStore reads the prefix tree through a TreeStore's snapshots, with
// every node of depth <= cacheDepth held in memory. The cache is complete
// for those depths (filled at open, updated after each commit), so a miss
// there means the node does not exist.
type treeStore struct {
	cacheDepth int
	mu         sync.RWMutex
	cache      map[nodeID]*nodeRecord
	// The records epoch prevEpoch changed, whose previous states
	// (nodeRecord) readers of the epoch before may need: records are
	// stored without them.
	prevEpoch uint64
	prevs     map[nodeID]*nodeRecord
	// bypass, on a node of several that does not sequence (Lease), sends
	// every read to the store's snapshot: another node commits the
	// epochs, so the cache would be stale.
	bypass atomic.Bool
	// epochs is the number of committed epochs the cache reflects (on
	// a node of several, which follows other nodes' commits).
	epochs uint64
}

// errNoState is a node read for an epoch whose state it no longer has:
// the tree moved on more than an epoch past the reader's.
var errNoState = errors.New("kt: tree node has no state at epoch")

// refill replaces the cache with the nodes of snap and drops the staged
// previous states: a node that takes the sequencer lease starts from
// what the last holder committed.
func (ts *treeStore) refill(snap TreeSnapshot) error {
	fresh := newTreeStore(ts.cacheDepth)
	n, err := snap.Epochs()
	if err != nil {
		return err
	}
	if err := fresh.fill(snap); err != nil {
		return err
	}
	ts.mu.Lock()
	ts.cache, ts.prevEpoch, ts.prevs, ts.epochs = fresh.cache, 0, nil, n
	ts.mu.Unlock()
	return nil
}

// followMax is the most epochs follow catches up on by their update
// lists; further behind, it reads the whole cache again.
const followMax = 64

// follow brings the cache up to snap, which another node's commits moved
// on: every node an epoch changed lies on the path from the root to a
// leaf it inserted (an insert changes the nodes above its leaf, and a
// later one only adds nodes between them), so walking those paths in snap
// down to cacheDepth reads every changed and new node. The records read
// carry their previous states (stored so on a shared store), so readers
// of the epoch before snap's last keep finding theirs.
func (ts *treeStore) follow(snap TreeSnapshot) error {
	m, err := snap.Epochs()
	if err != nil {
		return err
	}
	ts.mu.RLock()
	from := ts.epochs
	ts.mu.RUnlock()
	if from >= m {
		return nil
	}
	if m-from > followMax {
		return ts.refill(snap)
	}
	found := map[nodeID]*nodeRecord{}
	for e := from; e < m; e++ {
		raw, err := snap.UpdateList(e)
		if err != nil {
			return err
		}
		if raw == nil {
			return ts.refill(snap) // an epoch from before update lists were kept
		}
		ul, err := ParseUpdateList(raw)
		if err != nil {
			return err
		}
		for i := range ul.Leaves {
			if err := ts.walk(snap, &ul.Leaves[i].Index, found); err != nil {
				return err
			}
		}
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.epochs != from {
		return nil // another follow got there first
	}
	for id, r := range found {
		ts.cache[id] = r
	}
	ts.epochs = m
	return nil
}

// walk reads the nodes on the path to index down to cacheDepth into found.
func (ts *treeStore) walk(snap TreeSnapshot, index *Index, found map[nodeID]*nodeRecord) error {
	id := rootID
	for int(id.depth) <= ts.cacheDepth {
		r, ok := found[id]
		if !ok {
			raw, err := snap.Node(id.storeKey())
			if err != nil {
				return err
			}
			if raw == nil {
				return nil
			}
			if r, err = parseNodeRecord(id, raw); err != nil {
				return err
			}
			found[id] = r
		}
		b := index.bit(int(id.depth))
		if !r.state.present[b] || r.state.child[b].leaf() {
			return nil
		}
		id = r.state.child[b].id
	}
	return nil
}

// stagePrevs keeps the records of epoch e's batch, with their previous
// states, for readers of the epoch before, dropping those of the epoch
// before (its readers are gone: an epoch is committed only once the one
// before it is served). Call it before the commit that stores the batch,
// so no reader sees the records without them (until then nobody reads
// epoch e's records, and nobody needs the dropped ones). The
// batch's map is kept as it is, not copied: nothing changes it after
// Finish.
func (ts *treeStore) stagePrevs(e uint64, dirty map[nodeID]*nodeRecord) {
	ts.mu.Lock()
	ts.prevEpoch, ts.prevs = e, dirty
	ts.mu.Unlock()
}

// openTreeStore prepares the tree in db's nodes bucket (prepareBoltTree)
// and fills a cache from it: the ReplayTree's way in.
func openTreeStore(db *bolt.DB, cacheDepth int, buckets ...[]byte) (*treeStore, error) {
	if err := prepareBoltTree(db, buckets...); err != nil {
		return nil, err
	}
	ts := newTreeStore(cacheDepth)
	err := db.View(func(tx *bolt.Tx) error { return ts.fill(boltSnapshot{tx: tx}) })
	if err != nil {
		return nil, fmt.Errorf("kt: open tree: %w", err)
	}
	return ts, nil
}

// prepareBoltTree creates db's nodes and meta buckets and the other
// buckets named, refuses a layout it does not know and upgrades an older
// one.
func prepareBoltTree(db *bolt.DB, buckets ...[]byte) error {
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range append([][]byte{bucketNodes, bucketMeta}, buckets...) {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = checkLayout(db)
	}
	if err == nil {
		err = migrateNodeKeys(db)
	}
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(metaLayout, binary.BigEndian.AppendUint32(nil, treeLayout))
		})
	}
	if err != nil {
		return fmt.Errorf("kt: open tree: %w", err)
	}
	return nil
}

func newTreeStore(cacheDepth int) *treeStore {
	return &treeStore{cacheDepth: cacheDepth, cache: map[nodeID]*nodeRecord{}}
}

// fill loads the nodes of depth <= cacheDepth from snap into the cache.
func (ts *treeStore) fill(snap TreeSnapshot) error {
	return snap.ScanNodes(func(k, v []byte) (bool, error) {
		id, err := nodeIDFromStoreKey(k)
		if err != nil {
			return false, err
		}
		if int(id.depth) > ts.cacheDepth {
			// Below storeSplit the depths are interleaved.
			return ts.cacheDepth > storeSplit, nil
		}
		r, err := parseNodeRecord(id, v)
		if err != nil {
			return false, err
		}
		ts.cache[id] = r
		return true, nil
	})
}

// checkLayout refuses a tree stored in a layout above treeLayout.
func checkLayout(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(metaLayout)
		if v == nil {
			return nil // layout 1, or a new database
		}
		if len(v) != 4 {
			return fmt.Errorf("%w: malformed layout marker %x", ErrTreeLayout, v)
		}
		if l := binary.BigEndian.Uint32(v); l > treeLayout {
			return fmt.Errorf("%w: layout %d, this version knows up to %d", ErrTreeLayout, l, treeLayout)
		}
		return nil
	})
}

// migrateNodeKeys moves the records of nodes below storeSplit that a
// version before storeKey stored under key() to their storeKey, in
// transactions of at most migrateBatch records.
func migrateNodeKeys(db *bolt.DB) error {
	const migrateBatch = 50_000
	first := nodeID{depth: storeSplit + 1}.key()
	old := false
	if err := db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketNodes).Cursor().Seek(first)
		old = k != nil && k[0] < storeKeyDeep
		return nil
	}); err != nil || !old {
		return err
	}
	for {
		moved := 0
		err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketNodes)
			c := b.Cursor()
			for k, v := c.Seek(first); k != nil && k[0] < storeKeyDeep && moved < migrateBatch; k, v = c.Seek(first) {
				id, err := nodeIDFromKey(k)
				if err != nil {
					return err
				}
				val := slices.Clone(v)
				if err := b.Delete(k); err != nil {
					return err
				}
				if err := b.Put(id.storeKey(), val); err != nil {
					return err
				}
				moved++
			}
			return nil
		})
		if err != nil || moved < migrateBatch {
			return err
		}
	}
}

// txNodes reads nodes through the cache and one snapshot.
type txNodes struct {
	ts   *treeStore
	snap TreeSnapshot
}

func (s txNodes) node(id nodeID) (*nodeRecord, error) {
	if int(id.depth) <= s.ts.cacheDepth && !s.ts.bypass.Load() {
		s.ts.mu.RLock()
		r := s.ts.cache[id]
		s.ts.mu.RUnlock()
		return r, nil
	}
	v, err := s.snap.Node(id.storeKey())
	if err != nil || v == nil {
		return nil, err
	}
	r, err := parseNodeRecord(id, v)
	if err != nil {
		return nil, err
	}
	r.own = true
	if r.hasPrev {
		return r, nil
	}
	s.ts.mu.RLock()
	if r.epoch == s.ts.prevEpoch {
		if p, ok := s.ts.prevs[id]; ok && p.hasPrev {
			r.hasPrev, r.prevFrom, r.prev = true, p.prevFrom, p.prev
		}
	}
	s.ts.mu.RUnlock()
	return r, nil
}

// encodeNodes encodes a batch's records for a commit, in key order (so
// bbolt fills pages front to back). Keys and values share one buffer,
// which the store reads until the commit is done. withPrev stores each
// record with its previous state: on a store several nodes share, the
// nodes that do not sequence read the served epoch from the store while
// the next one is committed, and have no staged previous states.
func encodeNodes(dirty map[nodeID]*nodeRecord, withPrev bool) []NodeWrite {
	// The nodes down to storeSplit (keys from 0x00) and the deeper ones
	// (keys from storeKeyDeep) are two key ranges, sorted and encoded on
	// two goroutines.
	var part [2][]*nodeRecord
	for id, r := range dirty {
		i := 0
		if id.depth > storeSplit {
			i = 1
		}
		part[i] = append(part[i], r)
	}
	out := make([]NodeWrite, len(dirty))
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := 0
			if i == 1 {
				at = len(part[0])
			}
			encodeSorted(part[i], withPrev, out[at:at+len(part[i])])
		}()
	}
	wg.Wait()
	return out
}

// encodeSorted encodes recs into out in their store keys' order.
func encodeSorted(recs []*nodeRecord, withPrev bool, out []NodeWrite) {
	type put struct {
		k []byte
		r *nodeRecord
	}
	const maxKV = 2*(2+IndexSize) + 1 + 8 + 1 + 2*(1+IndexSize+32)
	buf := make([]byte, 0, len(recs)*maxKV)
	puts := make([]put, 0, len(recs))
	for _, r := range recs {
		n := len(buf)
		buf = r.id.appendStoreKey(buf)
		puts = append(puts, put{buf[n:len(buf):len(buf)], r})
	}
	slices.SortFunc(puts, func(a, b put) int { return bytes.Compare(a.k, b.k) })
	for i, p := range puts {
		n := len(buf)
		buf = p.r.appendTo(buf)
		if withPrev && p.r.hasPrev {
			buf = binary.BigEndian.AppendUint64(buf, p.r.prevFrom)
			buf = appendState2(buf, &p.r.prev)
		}
		out[i] = NodeWrite{Key: p.k, Value: buf[n:len(buf):len(buf)]}
	}
}

// putNodes writes a batch's records in a bbolt transaction (a
// ReplayTree's, or a test's).
func (ts *treeStore) putNodes(tx *bolt.Tx, dirty map[nodeID]*nodeRecord) error {
	return boltPutNodes(tx, encodeNodes(dirty, false))
}

// publish makes committed records visible through the cache.
func (ts *treeStore) publish(dirty map[nodeID]*nodeRecord) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for id, r := range dirty {
		if int(id.depth) <= ts.cacheDepth {
			ts.cache[id] = r
		}
	}
}

func epochKey(e uint64) []byte { return binary.BigEndian.AppendUint64(nil, e) }

// latestVersion returns the newest version of label in the versions bucket
// (0: none). versionKey is u8 len || label || u32 version (big-endian), so
// a label's versions are one key range in version order: its last key.
// (Versions before 2026-12 also kept a "latest" bucket, label -> u32
// version: one more random page rewritten per update; it is no longer
// written or read.)
func latestVersion(b *bolt.Bucket, label string) uint32 {
	top := versionKey(label, math.MaxUint32)
	prefix := top[:len(top)-4]
	c := b.Cursor()
	k, _ := c.Seek(top)
	switch {
	case k == nil:
		k, _ = c.Last()
	case !bytes.Equal(k, top):
		k, _ = c.Prev()
	}
	if len(k) != len(top) || !bytes.HasPrefix(k, prefix) {
		return 0
	}
	return binary.BigEndian.Uint32(k[len(prefix):])
}
