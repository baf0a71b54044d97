package kt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestDirectoryUpgradeFromLayout1 opens a directory whose database is in
// the layout versions before 2026-12 wrote (every node under key(), each
// record with its previous state, a "latest" bucket of versions), with
// its migration interrupted halfway (half the deep nodes moved), and
// checks that nothing is lost or misread: every label's lookup verifies
// against the logged roots at its version, new versions follow the old
// ones (not version 1 again), the epoch after the upgrade verifies, and a
// reopen finds the layout marker. The records the epochs after it
// change are rewritten in format 2 (ADR 0043); the rest stay in format 1.
func TestDirectoryUpgradeFromLayout1(t *testing.T) {
	s, nv, vkey, k := newKeys(t, "kt.test/log")
	dir := t.TempDir()
	d := openTestDir(t, dir, s, nv, vkey, k)
	ctx := context.Background()
	const n = 40
	label := func(i int) string { return fmt.Sprintf("user%02d", i) }
	for round := range 2 {
		for i := range n {
			if _, err := d.Enqueue(label(i), []byte(fmt.Sprintf("v%d", round+1))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := d.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		// Leaves next to each label's newest index, differing from bit
		// 17 on, so that its path runs through nodes below storeSplit.
		var nbrs []*update
		for i := range n {
			idx, _ := d.prove(label(i), uint32(round+1))
			for _, bit := range []int{17 + i%5, 24, 40 + i} {
				m := idx
				m[bit/8] ^= 0x80 >> (bit % 8)
				nbrs = append(nbrs, &update{label: fmt.Sprintf("nbr%d-%d-%d", round, i, bit), version: 1, index: m, value: []byte("x"), done: make(chan Published, 1)})
			}
		}
		d.writeMu.Lock()
		_, err := d.commit(nbrs, false)
		if err == nil {
			err = d.syncLog(ctx)
		}
		d.writeMu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	deep := toLayout1(t, filepath.Join(dir, DBFile), n)
	if deep < 3*n {
		t.Fatalf("%d nodes below depth %d, want at least %d", deep, storeSplit, 3*n)
	}

	d = openTestDir(t, dir, s, nv, vkey, k)
	defer d.Close()
	v := d.verifier(t)
	check := func(want uint32) {
		t.Helper()
		for i := range n {
			r, err := lookup(t, d, v, label(i))
			if err != nil {
				t.Fatalf("lookup of %s after the upgrade: %v", label(i), err)
			}
			if r.Version != want || string(r.Value) != fmt.Sprintf("v%d", want) {
				t.Fatalf("%s after the upgrade: version %d %q, want %d \"v%d\"", label(i), r.Version, r.Value, want, want)
			}
		}
	}
	check(2)
	for i := range n {
		p := d.publish(t, label(i), []byte("v3"))
		if p[0].Version != 3 {
			t.Fatalf("%s published after the upgrade as version %d, want 3", label(i), p[0].Version)
		}
	}
	check(3)
	if err := d.boltDB().View(func(tx *bolt.Tx) error {
		var left int
		c := tx.Bucket(bucketNodes).Cursor()
		for k, _ := c.Seek(nodeID{depth: storeSplit + 1}.key()); k != nil && k[0] < storeKeyDeep; k, _ = c.Next() {
			left++
		}
		if left != 0 {
			return fmt.Errorf("%d nodes below depth %d left under their layout-1 keys", left, storeSplit)
		}
		// Records the epochs after the upgrade changed are in format 2,
		// the others still in format 1, and the lookups above read both.
		var v1, v2 int
		if err := tx.Bucket(bucketNodes).ForEach(func(_, v []byte) error {
			if len(v) > 0 && v[0] == recordV2 {
				v2++
			} else {
				v1++
			}
			return nil
		}); err != nil {
			return err
		}
		if v1 == 0 || v2 == 0 {
			return fmt.Errorf("%d format-1 and %d format-2 records after the upgrade and %d epochs, want some of both", v1, v2, n)
		}
		t.Logf("%d format-1 and %d format-2 node records", v1, v2)
		if l := tx.Bucket(bucketMeta).Get(metaLayout); !bytes.Equal(l, binary.BigEndian.AppendUint32(nil, treeLayout)) {
			return fmt.Errorf("layout marker %x after the upgrade", l)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// toLayout1 rewrites a closed directory database the way versions before
// layout 2 stored it, and then moves half of the deep nodes back to
// their layout-2 keys, as a migration stopped halfway leaves it (each of
// its transactions moves whole records). It returns the number of nodes
// below storeSplit.
func toLayout1(t *testing.T, path string, labels int) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deep := 0
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketMeta); err != nil {
			return err
		}
		b := tx.Bucket(bucketNodes)
		var ks, vs [][]byte
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
			r, err := parseNodeRecord(id, vs[i])
			if err != nil {
				return err
			}
			// Layout 1 kept a previous state in the record: one the
			// served epoch never reads (its epoch is older than the
			// record's), stored as layout 1 stored it.
			old := r.marshalV1()
			if r.epoch > 0 {
				old = binary.BigEndian.AppendUint64(old, r.epoch-1)
				var prev nodeState
				prev.hash[0] = 0xee
				old = appendState(old, &prev)
			}
			if err := b.Delete(k); err != nil {
				return err
			}
			key := id.key()
			if id.depth > storeSplit {
				deep++
				if deep%2 == 0 {
					key = id.storeKey() // moved before the stop
				}
			}
			if err := b.Put(key, old); err != nil {
				return err
			}
		}
		latest, err := tx.CreateBucket([]byte("latest"))
		if err != nil {
			return err
		}
		for i := range labels {
			l := fmt.Sprintf("user%02d", i)
			if err := latest.Put(append([]byte{byte(len(l))}, l...), binary.BigEndian.AppendUint32(nil, 2)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return deep
}

// TestDirectoryRefusesNewerLayout: a database whose layout marker is above
// the one this version writes is refused with ErrTreeLayout, not read.
func TestDirectoryRefusesNewerLayout(t *testing.T) {
	s, nv, vkey, k := newKeys(t, "kt.test/log")
	dir := t.TempDir()
	d := openTestDir(t, dir, s, nv, vkey, k)
	d.publish(t, "alice", []byte("v1"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaLayout, binary.BigEndian.AppendUint32(nil, treeLayout+1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	opts := DirectoryOptions{Dir: dir, LogSigner: s, LogVerifier: nv, VRFKey: k}
	if d, err := OpenDirectory(context.Background(), opts); !errors.Is(err, ErrTreeLayout) {
		if err == nil {
			d.Close()
		}
		t.Fatalf("opening a database of tree layout %d: %v, want ErrTreeLayout", treeLayout+1, err)
	}
}
