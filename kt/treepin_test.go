package kt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// pinnedRoots is SHA-256 over the roots of every epoch treePinEpochs
// makes, computed by the tree code before the storage was optimised for
// large epochs. How the tree is stored may change; what it commits to may
// not: the same leaves must give the same roots, byte for byte.
const pinnedRoots = "946fff4427111258db3ff1f1e643d768be78caba530c544e739e460650e47db0"

// treePinEpochs returns the leaves of a fixed sequence of epochs: one large
// epoch, then small ones, from a fixed seed, with runs of indices that
// share long prefixes (down to the last bit) so splits happen at every
// depth, above and below the cached levels.
func treePinEpochs() [][]Leaf {
	r := rand.New(rand.NewChaCha8([32]byte{'q', 'p', 'c', '-', 'p', 'i', 'n'}))
	leaf := func() Leaf {
		var l Leaf
		for i := range l.Index {
			l.Index[i] = byte(r.Uint32())
			l.Commitment[i] = byte(r.Uint32())
		}
		return l
	}
	var epochs [][]Leaf
	seen := map[Index]bool{}
	for e := range 25 {
		n := 300
		if e == 0 {
			n = 20_000
		}
		var ls []Leaf
		for len(ls) < n {
			l := leaf()
			seen[l.Index] = true
			ls = append(ls, l)
			if r.IntN(50) == 0 {
				// A neighbour differing from l from bit d on.
				d := r.IntN(256)
				m := leaf()
				m.Index = l.Index.prefix(d)
				m.Index[d/8] |= (^l.Index[d/8]) & (0x80 >> (d % 8))
				if !seen[m.Index] {
					seen[m.Index] = true
					ls = append(ls, m)
				}
			}
		}
		epochs = append(epochs, ls)
	}
	return epochs
}

// TestTreeRootPinned grows the tree through the same code the directory
// (previous states kept) and the auditor (kt.ReplayTree, none kept) use,
// reopening the database halfway with different cached depths, and checks
// the roots against pinnedRoots.
func TestTreeRootPinned(t *testing.T) {
	epochs := treePinEpochs()
	for _, c := range []struct {
		name       string
		noPrev     bool
		cacheDepth [2]int
		legacy     bool // stored by key() before the reopen
		parallel   bool // insertLeaves, every epoch on two goroutines (the directory's commit)
	}{
		{"directory", false, [2]int{DefaultCacheDepth, 3}, false, false},
		{"replay", true, [2]int{2, 20}, false, false},
		{"legacy directory", false, [2]int{DefaultCacheDepth, DefaultCacheDepth}, true, false},
		{"legacy replay", true, [2]int{20, 18}, true, false},
		{"directory, two goroutines", false, [2]int{DefaultCacheDepth, 5}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pin.db")
			all := sha256.New()
			for half := range 2 {
				db, err := bolt.Open(path, 0o600, nil)
				if err != nil {
					t.Fatal(err)
				}
				ts, err := openTreeStore(db, c.cacheDepth[half])
				if err != nil {
					t.Fatal(err)
				}
				for e := half * len(epochs) / 2; e < (half+1)*len(epochs)/2; e++ {
					var dirty map[nodeID]*nodeRecord
					if c.parallel {
						var root [32]byte
						dirty, root, err = insertLeaves(func(int) (nodeSource, func()) {
							tx, err := db.Begin(false)
							if err != nil {
								t.Error(err)
								return errSource{err}, func() {}
							}
							return txNodes{ts: ts, snap: boltSnapshot{tx: tx}}, func() { tx.Rollback() }
						}, uint64(e+1), epochs[e], 1)
						if err != nil {
							t.Fatalf("epoch %d: %v", e+1, err)
						}
						all.Write(root[:])
						if err := db.Update(func(tx *bolt.Tx) error { return ts.putNodes(tx, dirty) }); err != nil {
							t.Fatal(err)
						}
						ts.publish(dirty)
						continue
					}
					if err := db.Update(func(tx *bolt.Tx) error {
						tb := newTreeBatch(txNodes{ts: ts, snap: boltSnapshot{tx: tx}}, uint64(e+1))
						tb.noPrev = c.noPrev
						for _, l := range epochs[e] {
							if err := tb.Insert(l.Index, l.Commitment); err != nil {
								return err
							}
						}
						root, err := tb.Finish()
						if err != nil {
							return err
						}
						all.Write(root[:])
						dirty = tb.dirty
						return ts.putNodes(tx, tb.dirty)
					}); err != nil {
						t.Fatalf("epoch %d: %v", e+1, err)
					}
					ts.publish(dirty)
				}
				if half == 0 && c.legacy {
					toLegacyLayout(t, db)
				}
				db.Close()
			}
			if got := hex.EncodeToString(all.Sum(nil)); got != pinnedRoots {
				t.Fatalf("roots of the pinned epochs: %s, want %s", got, pinnedRoots)
			}
		})
	}
}

// toLegacyLayout stores every node under key(), as the directory did
// before storeKey: openTreeStore must move them back.
func toLegacyLayout(t *testing.T, db *bolt.DB) {
	t.Helper()
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		var ks, vs [][]byte
		moved := 0
		if err := b.ForEach(func(k, v []byte) error {
			ks, vs = append(ks, slices.Clone(k)), append(vs, slices.Clone(v))
			return nil
		}); err != nil {
			return err
		}
		for i, k := range ks {
			id, err := nodeIDFromStoreKey(k)
			if err != nil {
				return err
			}
			if bytes.Equal(id.key(), k) {
				continue
			}
			moved++
			if err := b.Delete(k); err != nil {
				return err
			}
			if err := b.Put(id.key(), vs[i]); err != nil {
				return err
			}
		}
		if moved < 1000 {
			t.Fatalf("%d nodes below depth %d, want many", moved, storeSplit)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestLookupWhileNextEpochCommitted answers and verifies lookups at the
// served epoch while the next epoch, which changed every node on their
// paths, is committed and not yet served: the readers need the previous
// states of nodes the directory no longer stores (nodeRecord). Cache depth
// 1 puts nearly every node in bbolt.
func TestLookupWhileNextEpochCommitted(t *testing.T) {
	s, v, vkey, k := newKeys(t, "kt.test/log")
	opts := DirectoryOptions{Dir: t.TempDir(), LogSigner: s, LogVerifier: v, VRFKey: k, CacheDepth: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	dir, err := OpenDirectory(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	d := &testDir{Directory: dir, vkey: vkey, opts: opts}
	defer d.Close()
	ctx := context.Background()
	const n = 300
	label := func(i int) string { return fmt.Sprintf("user%03d", i) }
	enqueue := func(value string) {
		for i := range n {
			if _, err := d.Enqueue(label(i), []byte(value)); err != nil {
				t.Fatal(err)
			}
		}
	}
	enqueue("v1")
	if _, err := d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	ver := d.verifier(t)
	checked := 0
	d.Directory.opts.afterCommit = func(e uint64) error {
		for i := range n {
			p, err := d.Lookup(ctx, label(i), 0)
			if err != nil {
				return fmt.Errorf("lookup of %s while epoch %d is committed: %w", label(i), e, err)
			}
			r, err := ver.VerifyLookup(label(i), p)
			if err != nil {
				return fmt.Errorf("lookup of %s while epoch %d is committed: %w", label(i), e, err)
			}
			if r.Version != 1 || string(r.Value) != "v1" || r.Record.Epoch != e-1 {
				return fmt.Errorf("lookup of %s: version %d %q at epoch %d, want 1 \"v1\" at %d", label(i), r.Version, r.Value, r.Record.Epoch, e-1)
			}
			checked++
		}
		return nil
	}
	enqueue("v2")
	if _, err := d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if checked != n {
		t.Fatalf("%d lookups checked, want %d", checked, n)
	}
}

// TestLatestVersion finds a label's newest version from the versions
// bucket alone, next to labels that extend it, sort just after it, or
// have versions above 255.
func TestLatestVersion(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "v.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stored := map[string][]uint32{"a": {1, 2, 3}, "ab": {1, 7}, "b": {1, 256, 257}, "a\x00": {9}, "c": {math.MaxUint32}}
	want := map[string]uint32{"a": 3, "ab": 7, "b": 257, "a\x00": 9, "c": math.MaxUint32, "": 0, "aa": 0, "abc": 0, "d": 0, "0": 0}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketVersions)
		if err != nil {
			return err
		}
		for label, vs := range stored {
			for _, v := range vs {
				if err := b.Put(versionKey(label, v), []byte{1}); err != nil {
					return err
				}
			}
		}
		for label, w := range want {
			if got := latestVersion(b, label); got != w {
				t.Errorf("latest version of %q: %d, want %d", label, got, w)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
