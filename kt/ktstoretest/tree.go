package ktstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/quicprochat/qpc/kt"
)

// TreeStorage is one fresh, empty place for a tree store: calling it
// opens a store on it, and may be called again after Close to reopen the
// same store. The test arranges cleanup of the storage itself.
type TreeStorage func(t *testing.T) kt.TreeStore

// TreeOpener returns a fresh TreeStorage for one subtest.
type TreeOpener func(t *testing.T) TreeStorage

// RunTree runs every conformance subtest of kt.TreeStore against stores
// made by open.
func RunTree(t *testing.T, open TreeOpener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st TreeStorage)
	}{
		{"Empty", testTreeEmpty},
		{"CommitAndRead", testTreeCommitAndRead},
		{"EpochMustBeNext", testTreeEpochMustBeNext},
		{"LatestVersion", testTreeLatestVersion},
		{"NodesReplacedAndOrdered", testTreeNodes},
		{"KeepsItsOwnCopy", testTreeCopies},
		{"SnapshotIsolation", testTreeSnapshotIsolation},
		{"ConcurrentReadersSeeWholeEpochs", testTreeConcurrentReaders},
		{"ReopenKeepsState", testTreeReopen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

var ctx = context.Background()

func openTree(t *testing.T, st TreeStorage) kt.TreeStore {
	t.Helper()
	s := st(t)
	t.Cleanup(func() { s.Close() })
	return s
}

// snapshot opens a snapshot that is released at the latest when the test
// ends (before its store is closed), also when the test fails first.
func snapshot(t *testing.T, s kt.TreeStore) kt.TreeSnapshot {
	t.Helper()
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	o := &onceSnapshot{TreeSnapshot: snap}
	t.Cleanup(o.Release)
	return o
}

type onceSnapshot struct {
	kt.TreeSnapshot
	once sync.Once
}

func (o *onceSnapshot) Release() { o.once.Do(o.TreeSnapshot.Release) }

// epoch is a commit whose every byte string names the epoch, so a reader
// can tell which epoch it sees.
func epoch(e uint64) kt.EpochCommit {
	return kt.EpochCommit{
		Epoch:      e,
		Versions:   []kt.VersionWrite{{Label: "alice", Version: uint32(e + 1), Record: fmt.Appendf(nil, "alice v%d", e+1)}},
		Nodes:      []kt.NodeWrite{{Key: []byte{0, 0}, Value: fmt.Appendf(nil, "root at %d", e)}, {Key: fmt.Appendf(nil, "\x01node-%03d", e), Value: []byte("leaf")}},
		UpdateList: fmt.Appendf(nil, "list %d", e),
		Record:     fmt.Appendf(nil, "record %d", e),
	}
}

func commit(t *testing.T, s kt.TreeStore, c kt.EpochCommit) {
	t.Helper()
	if err := s.CommitEpoch(ctx, c); err != nil {
		t.Fatalf("CommitEpoch(%d): %v", c.Epoch, err)
	}
}

func epochsOf(t *testing.T, snap kt.TreeSnapshot) uint64 {
	t.Helper()
	n, err := snap.Epochs()
	if err != nil {
		t.Fatalf("Epochs: %v", err)
	}
	return n
}

func latest(t *testing.T, snap kt.TreeSnapshot, label string) uint32 {
	t.Helper()
	v, err := snap.LatestVersion(label)
	if err != nil {
		t.Fatalf("LatestVersion: %v", err)
	}
	return v
}

func wantBytes(t *testing.T, what string, got []byte, err error, want []byte) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

// checkAt checks that snap shows exactly epochs 0..n-1 made by epoch().
func checkAt(t *testing.T, snap kt.TreeSnapshot, n uint64) {
	t.Helper()
	if got := epochsOf(t, snap); got != n {
		t.Fatalf("Epochs = %d, want %d", got, n)
	}
	if n == 0 {
		return
	}
	last := epoch(n - 1)
	rec, err := snap.EpochRecord(n - 1)
	wantBytes(t, "EpochRecord", rec, err, last.Record)
	l, err := snap.UpdateList(n - 1)
	wantBytes(t, "UpdateList", l, err, last.UpdateList)
	rec, err = snap.EpochRecord(n)
	wantBytes(t, "EpochRecord of the next epoch", rec, err, nil)
	if v := latest(t, snap, "alice"); v != uint32(n) {
		t.Fatalf("LatestVersion = %d, want %d", v, n)
	}
	root, err := snap.Node([]byte{0, 0})
	wantBytes(t, "Node(root)", root, err, last.Nodes[0].Value)
	next, err := snap.Node(epoch(n).Nodes[1].Key)
	wantBytes(t, "Node of the next epoch", next, err, nil)
}

func testTreeEmpty(t *testing.T, st TreeStorage) {
	s := openTree(t, st)
	snap := snapshot(t, s)
	defer snap.Release()
	checkAt(t, snap, 0)
	for _, c := range []struct {
		what string
		read func() ([]byte, error)
	}{
		{"EpochRecord(0)", func() ([]byte, error) { return snap.EpochRecord(0) }},
		{"UpdateList(0)", func() ([]byte, error) { return snap.UpdateList(0) }},
		{"Version", func() ([]byte, error) { return snap.Version("alice", 1) }},
		{"Node", func() ([]byte, error) { return snap.Node([]byte{0, 0}) }},
	} {
		b, err := c.read()
		wantBytes(t, c.what+" of an empty store", b, err, nil)
	}
	if v := latest(t, snap, "alice"); v != 0 {
		t.Fatalf("LatestVersion of an empty store = %d", v)
	}
	n := 0
	if err := snap.ScanNodes(func(k, v []byte) (bool, error) { n++; return true, nil }); err != nil || n != 0 {
		t.Fatalf("ScanNodes of an empty store: %d nodes, %v", n, err)
	}
}

func testTreeCommitAndRead(t *testing.T, st TreeStorage) {
	s := openTree(t, st)
	for e := range uint64(3) {
		commit(t, s, epoch(e))
		snap := snapshot(t, s)
		checkAt(t, snap, e+1)
		for ee := range e + 1 {
			c := epoch(ee)
			rec, err := snap.EpochRecord(ee)
			wantBytes(t, "EpochRecord", rec, err, c.Record)
			l, err := snap.UpdateList(ee)
			wantBytes(t, "UpdateList", l, err, c.UpdateList)
			v, err := snap.Version("alice", uint32(ee+1))
			wantBytes(t, "Version", v, err, c.Versions[0].Record)
			n, err := snap.Node(c.Nodes[1].Key)
			wantBytes(t, "Node", n, err, c.Nodes[1].Value)
		}
		snap.Release()
	}
	// An epoch without versions or an update list (the genesis epoch of
	// an empty tree has neither).
	c := kt.EpochCommit{Epoch: 3, Record: []byte("record 3")}
	commit(t, s, c)
	snap := snapshot(t, s)
	defer snap.Release()
	rec, err := snap.EpochRecord(3)
	wantBytes(t, "EpochRecord of a bare epoch", rec, err, c.Record)
	if v := latest(t, snap, "alice"); v != 3 {
		t.Fatalf("LatestVersion after a bare epoch = %d, want 3", v)
	}
}

func testTreeEpochMustBeNext(t *testing.T, st TreeStorage) {
	s := openTree(t, st)
	if err := s.CommitEpoch(ctx, epoch(1)); !errors.Is(err, kt.ErrEpochTaken) {
		t.Fatalf("CommitEpoch(1) of an empty store: %v, want ErrEpochTaken", err)
	}
	commit(t, s, epoch(0))
	// A second writer that built epoch 0 too, with other contents.
	other := epoch(0)
	other.Record, other.Nodes[0].Value, other.Versions[0].Version = []byte("forked"), []byte("forked root"), 7
	if err := s.CommitEpoch(ctx, other); !errors.Is(err, kt.ErrEpochTaken) {
		t.Fatalf("CommitEpoch(0) again: %v, want ErrEpochTaken", err)
	}
	if err := s.CommitEpoch(ctx, epoch(5)); !errors.Is(err, kt.ErrEpochTaken) {
		t.Fatalf("CommitEpoch(5) after 0: %v, want ErrEpochTaken", err)
	}
	// Nothing of the refused commits was written.
	snap := snapshot(t, s)
	defer snap.Release()
	checkAt(t, snap, 1)
	v, err := snap.Version("alice", 7)
	wantBytes(t, "Version of a refused commit", v, err, nil)
	n, err := snap.Node(epoch(5).Nodes[1].Key)
	wantBytes(t, "Node of a refused commit", n, err, nil)
}

func testTreeLatestVersion(t *testing.T, st TreeStorage) {
	s := openTree(t, st)
	long := strings.Repeat("z", kt.MaxLabelLen)
	labels := map[string]uint32{"a": 2, "ab": 5, "b": 1, "a\x00": 3, long: 4, "\xff": 300}
	var vs []kt.VersionWrite
	for l, top := range labels {
		for v := uint32(1); v <= top; v++ {
			vs = append(vs, kt.VersionWrite{Label: l, Version: v, Record: fmt.Appendf(nil, "%q v%d", l, v)})
		}
	}
	commit(t, s, kt.EpochCommit{Epoch: 0, Versions: vs, Record: []byte("r")})
	snap := snapshot(t, s)
	for l, top := range labels {
		if v := latest(t, snap, l); v != top {
			t.Fatalf("LatestVersion(%.8q) = %d, want %d", l, v, top)
		}
		got, err := snap.Version(l, top)
		wantBytes(t, "Version", got, err, fmt.Appendf(nil, "%q v%d", l, top))
		got, err = snap.Version(l, top+1)
		wantBytes(t, "Version past the latest", got, err, nil)
	}
	for _, l := range []string{"", "c", "aa", "a\x00\x00", long[1:], "\xff\xff"} {
		if v := latest(t, snap, l); v != 0 {
			t.Fatalf("LatestVersion(%.8q) of a label never stored = %d", l, v)
		}
	}
	// The greatest version number a label can have.
	snap.Release()
	commit(t, s, kt.EpochCommit{Epoch: 1, Versions: []kt.VersionWrite{{Label: "b", Version: ^uint32(0), Record: []byte("max")}}, Record: []byte("r")})
	snap = snapshot(t, s)
	defer snap.Release()
	if v := latest(t, snap, "b"); v != ^uint32(0) {
		t.Fatalf("LatestVersion after the greatest version = %d", v)
	}
}

func testTreeNodes(t *testing.T, st TreeStorage) {
	s := openTree(t, st)
	keys := [][]byte{{0x00, 0x01}, {0x00}, {0x01, 0xff, 0x00}, {0x01}, {0xff}, {0x00, 0x01, 0x00}, {0x80, 0x00}}
	var nodes []kt.NodeWrite
	for i, k := range keys {
		nodes = append(nodes, kt.NodeWrite{Key: k, Value: fmt.Appendf(nil, "v%d", i)})
	}
	sortNodes(nodes)
	commit(t, s, kt.EpochCommit{Epoch: 0, Nodes: nodes, Record: []byte("r0")})
	commit(t, s, kt.EpochCommit{Epoch: 1, Nodes: []kt.NodeWrite{{Key: []byte{0x01}, Value: []byte("replaced")}}, Record: []byte("r1")})
	snap := snapshot(t, s)
	defer snap.Release()
	got, err := snap.Node([]byte{0x01})
	wantBytes(t, "replaced Node", got, err, []byte("replaced"))
	got, err = snap.Node([]byte{0x00, 0x01})
	wantBytes(t, "kept Node", got, err, []byte("v0"))
	var scanned [][]byte
	err = snap.ScanNodes(func(k, v []byte) (bool, error) {
		scanned = append(scanned, bytes.Clone(k))
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(scanned) != len(keys) {
		t.Fatalf("ScanNodes visited %d nodes, want %d", len(scanned), len(keys))
	}
	for i := 1; i < len(scanned); i++ {
		if bytes.Compare(scanned[i-1], scanned[i]) >= 0 {
			t.Fatalf("ScanNodes out of bytewise order: %x before %x", scanned[i-1], scanned[i])
		}
	}
	// Stopping early.
	n := 0
	if err := snap.ScanNodes(func(k, v []byte) (bool, error) { n++; return n < 3, nil }); err != nil || n != 3 {
		t.Fatalf("ScanNodes stopped after %d, %v; want 3", n, err)
	}
	stop := errors.New("stop")
	if err := snap.ScanNodes(func(k, v []byte) (bool, error) { return true, stop }); !errors.Is(err, stop) {
		t.Fatalf("ScanNodes did not return fn's error: %v", err)
	}
}

func sortNodes(n []kt.NodeWrite) {
	for i := 1; i < len(n); i++ {
		for j := i; j > 0 && bytes.Compare(n[j-1].Key, n[j].Key) > 0; j-- {
			n[j-1], n[j] = n[j], n[j-1]
		}
	}
}

func testTreeCopies(t *testing.T, st TreeStorage) {
	s := openTree(t, st)
	c := epoch(0)
	commit(t, s, c)
	// The directory reuses its buffers once a commit returned.
	for _, b := range [][]byte{c.Record, c.UpdateList, c.Nodes[0].Value, c.Nodes[0].Key, c.Versions[0].Record} {
		for i := range b {
			b[i] = '#'
		}
	}
	snap := snapshot(t, s)
	defer snap.Release()
	checkAt(t, snap, 1)
}

func testTreeSnapshotIsolation(t *testing.T, st TreeStorage) {
	s := openTree(t, st)
	commit(t, s, epoch(0))
	old := snapshot(t, s)
	// The commit may wait for the open snapshot (bbolt may need to grow
	// its map): run it beside the reads.
	done := make(chan error, 1)
	go func() { done <- s.CommitEpoch(ctx, epoch(1)) }()
	checkAt(t, old, 1)
	old.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	snap := snapshot(t, s)
	defer snap.Release()
	checkAt(t, snap, 2)
}

func testTreeConcurrentReaders(t *testing.T, st TreeStorage) {
	s := openTree(t, st)
	const epochs = 40
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				snap, err := s.Snapshot(ctx)
				if err != nil {
					t.Errorf("Snapshot: %v", err)
					return
				}
				n, err := snap.Epochs()
				if err != nil {
					t.Errorf("Epochs: %v", err)
				}
				// Every epoch a snapshot counts is there whole.
				if n > 0 {
					rec, _ := snap.EpochRecord(n - 1)
					root, _ := snap.Node([]byte{0, 0})
					v, _ := snap.LatestVersion("alice")
					if want := epoch(n - 1); !bytes.Equal(rec, want.Record) || !bytes.Equal(root, want.Nodes[0].Value) || v != uint32(n) {
						t.Errorf("a snapshot of %d epochs sees record %q, root %q, version %d", n, rec, root, v)
					}
				}
				snap.Release()
			}
		})
	}
	for e := range uint64(epochs) {
		if err := s.CommitEpoch(ctx, epoch(e)); err != nil {
			t.Errorf("CommitEpoch(%d): %v", e, err)
			break
		}
	}
	close(stop)
	wg.Wait()
}

func testTreeReopen(t *testing.T, st TreeStorage) {
	s := st(t)
	commit(t, s, epoch(0))
	commit(t, s, epoch(1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTree(t, st)
	snap := snapshot(t, s)
	checkAt(t, snap, 2)
	snap.Release()
	commit(t, s, epoch(2))
	snap = snapshot(t, s)
	defer snap.Release()
	checkAt(t, snap, 3)
}
