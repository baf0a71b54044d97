package pgtree_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pgtree"
	"github.com/quicprochat/qpc/kt/ktstoretest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var bg = context.Background()

func open(t testing.TB, url string, o pgtree.Options) *pgtree.Store {
	t.Helper()
	s, err := pgtree.Open(bg, url, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPostgresTree runs the tree store's conformance suite on a real
// PostgreSQL, one fresh schema per subtest.
func TestPostgresTree(t *testing.T) {
	ktstoretest.RunTree(t, func(t *testing.T) ktstoretest.TreeStorage {
		url := pgtest.DB(t)
		return func(t *testing.T) kt.TreeStore { return open(t, url, pgtree.Options{Logger: quiet}) }
	})
}

// TestSnapshotIsTakenAtOnce: a snapshot shows the state when Snapshot
// returned, also when a commit completes before its first read.
func TestSnapshotIsTakenAtOnce(t *testing.T) {
	s := open(t, pgtest.DB(t), pgtree.Options{Logger: quiet})
	defer s.Close()
	commitN(t, s, 0, []kt.NodeWrite{{Key: []byte{0}, Value: []byte("root 0")}})
	snap, err := s.Snapshot(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	commitN(t, s, 1, []kt.NodeWrite{{Key: []byte{0}, Value: []byte("root 1")}, {Key: []byte{1}, Value: []byte("new")}})
	if n, _ := snap.Epochs(); n != 1 {
		t.Fatalf("Epochs = %d, want 1", n)
	}
	if v, err := snap.Node([]byte{0}); err != nil || string(v) != "root 0" {
		t.Fatalf("Node(root) = %q, %v; want root 0", v, err)
	}
	if v, err := snap.Node([]byte{1}); err != nil || v != nil {
		t.Fatalf("Node of the later commit = %q, %v; want nil", v, err)
	}
}

// TestScanNodesPages: a scan over several of ScanNodes' pages visits
// every node once in key order, and fn may read the snapshot meanwhile.
func TestScanNodesPages(t *testing.T) {
	s := open(t, pgtest.DB(t), pgtree.Options{Logger: quiet})
	defer s.Close()
	const n = 5000
	nodes := make([]kt.NodeWrite, n)
	for i := range nodes {
		nodes[i] = kt.NodeWrite{Key: binary.BigEndian.AppendUint16([]byte{1}, uint16(i)), Value: fmt.Appendf(nil, "v%d", i)}
	}
	// A duplicate key: the last write wins, as in a sequence of puts.
	nodes = append(nodes, kt.NodeWrite{Key: nodes[7].Key, Value: []byte("again")})
	commitN(t, s, 0, nodes)
	snap, err := s.Snapshot(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	i := 0
	err = snap.ScanNodes(func(k, v []byte) (bool, error) {
		want := nodes[i]
		if i == 7 {
			want = nodes[n]
		}
		if !bytes.Equal(k, want.Key) || !bytes.Equal(v, want.Value) {
			return false, fmt.Errorf("node %d: %x = %q, want %x = %q", i, k, v, want.Key, want.Value)
		}
		if got, err := snap.Node(k); err != nil || !bytes.Equal(got, v) {
			return false, fmt.Errorf("Node(%x) inside the scan = %q, %v", k, got, err)
		}
		i++
		return true, nil
	})
	if err != nil || i != n {
		t.Fatalf("ScanNodes visited %d of %d nodes: %v", i, n, err)
	}
}

var quiet = slog.New(slog.DiscardHandler)

func commitN(t testing.TB, s kt.TreeStore, e uint64, nodes []kt.NodeWrite) {
	t.Helper()
	if err := s.CommitEpoch(bg, kt.EpochCommit{Epoch: e, Nodes: nodes, Record: fmt.Appendf(nil, "record %d", e)}); err != nil {
		t.Fatalf("CommitEpoch(%d): %v", e, err)
	}
}

// TestSnapshotSharedByGoroutines: one snapshot read by several
// goroutines at once answers every key right (stored keys with their
// values, absent keys nil, a node committed after the snapshot not
// seen); under -race, no race.
func TestSnapshotSharedByGoroutines(t *testing.T) {
	s := open(t, pgtest.DB(t), pgtree.Options{Logger: quiet})
	defer s.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	stored := map[string][]byte{}
	var nodes []kt.NodeWrite
	for i := 0; i < 600; i += 1 + rng.IntN(3) { // gaps: absent keys between stored ones
		k := binary.BigEndian.AppendUint16([]byte{1}, uint16(i))
		v := fmt.Appendf(nil, "v%d", i)
		stored[string(k)] = v
		nodes = append(nodes, kt.NodeWrite{Key: k, Value: v})
	}
	commitN(t, s, 0, nodes)
	snap, err := s.Snapshot(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	commitN(t, s, 1, []kt.NodeWrite{{Key: binary.BigEndian.AppendUint16([]byte{1}, 601), Value: []byte("later")}})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 5))
			for range 2000 {
				i := r.IntN(640) - 20
				k := binary.BigEndian.AppendUint16([]byte{1}, uint16(i))
				if i < 0 {
					k = []byte{0, byte(-i)}
				}
				got, err := snap.Node(k)
				if want := stored[string(k)]; err != nil || !bytes.Equal(got, want) || (got == nil) != (want == nil) {
					t.Errorf("Node(%x) = %q, %v; want %q", k, got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
