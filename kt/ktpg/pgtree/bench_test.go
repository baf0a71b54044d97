package pgtree_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pgtree"
)

// BenchmarkCommit10k measures the commit of one 10,000-update epoch into
// a store holding the tree of QPC_KT_PG_BENCH_LABELS labels (default
// 1,000,000), on PostgreSQL (pgtree) and on the
// embedded bbolt store, interleaved in the same run: each iteration
// commits one epoch to each (the order alternating), and the benchmark
// reports the median of each (pg-ms/epoch, bolt-ms/epoch) and their
// ratio (pg/bolt; pg/bolt-paired is the median of each epoch's own
// ratio). An epoch is what the directory writes for 10,000
// updates at 1M labels: 10,000 new versions, ~37,000 node records
// (nodes/epoch; replacing existing ones, keyed and ordered as the
// directory keys the nodes below its cached levels), an update list and
// a record. The bytes are synthetic (no tree is built or hashed): this
// measures the stores, not the directory (docs/key-transparency.md §6).
// The stores are filled through CommitEpoch first (not timed). The
// throwaway cluster syncs its commits (pgtest: fsync on under -bench), as
// bbolt does.
//
// QPC_KT_PG_BENCH_EPOCHS sets the number of timed epochs (default 7: one
// run of the benchmark function, whatever -benchtime says, so the stores
// are filled once).
//
//	go test ./kt/ktpg/pgtree -run '^$' -bench Commit10k -timeout 60m
func BenchmarkCommit10k(b *testing.B) {
	labels := 1_000_000
	if s := os.Getenv("QPC_KT_PG_BENCH_LABELS"); s != "" {
		labels, _ = strconv.Atoi(s)
	}
	const updates = 10_000
	epochs := 7
	if s := os.Getenv("QPC_KT_PG_BENCH_EPOCHS"); s != "" {
		epochs, _ = strconv.Atoi(s)
	}
	pg := open(b, pgtest.DB(b), pgtree.Options{Logger: quiet})
	b.Cleanup(func() { pg.Close() })
	bolt, err := kt.OpenBoltTree(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bolt.Close() })
	type store struct {
		name string
		s    kt.TreeStore
		ms   []float64
	}
	stores := []store{{name: "pg", s: pg}, {name: "bolt", s: bolt}}

	// The nodes on label l's path at depths 16 to 19, keyed as the
	// directory keys nodes below its cached levels (0x01, the 32-byte
	// prefix, the depth: a subtree's nodes together). 10,000 updates at 1M
	// labels change ~38,000 of them, the ~37,000 node records of the
	// directory's epoch.
	path := func(l int) [][]byte {
		h := sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(l)))
		var keys [][]byte
		for d := 16; d <= 19; d++ {
			p := make([]byte, 32) // the index's first d bits
			p[0], p[1], p[2] = h[0], h[1], h[2]&byte(0xff<<(24-d))
			keys = append(keys, append(append([]byte{1}, p...), byte(d)))
		}
		return keys
	}
	value := func(k []byte, gen int) []byte {
		h := sha256.Sum256(binary.BigEndian.AppendUint64(bytes.Clone(k), uint64(gen)))
		return append(append(append([]byte{1}, h[:]...), h[:]...), 0, 0, 0, 1, 0, 0, 0, 0, 0)
	}
	nodesOf := func(ls []int, gen int) []kt.NodeWrite {
		seen := map[string]bool{}
		var ns []kt.NodeWrite
		for _, l := range ls {
			for _, k := range path(l) {
				if !seen[string(k)] {
					seen[string(k)] = true
					ns = append(ns, kt.NodeWrite{Key: k, Value: value(k, gen)})
				}
			}
		}
		slices.SortFunc(ns, func(x, y kt.NodeWrite) int { return bytes.Compare(x.Key, y.Key) })
		return ns
	}
	label := func(i int) string { return fmt.Sprintf("user%07d@example.org", i) }
	commitAll := func(c kt.EpochCommit) {
		for _, st := range stores {
			if err := st.s.CommitEpoch(bg, c); err != nil {
				b.Fatalf("%s: %v", st.name, err)
			}
		}
	}

	// Fill: every label at version 1 and its nodes, in epochs of
	// 100,000 labels.
	start := time.Now()
	epoch := uint64(0)
	nodeWritesFill := 0
	const chunk = 100_000
	for lo := 0; lo < labels; lo += chunk {
		c := kt.EpochCommit{Epoch: epoch, Record: []byte("fill")}
		var ls []int
		for l := lo; l < min(lo+chunk, labels); l++ {
			ls = append(ls, l)
			c.Versions = append(c.Versions, kt.VersionWrite{Label: label(l), Version: 1, Record: value([]byte(label(l)), 0)[:80]})
		}
		c.Nodes = nodesOf(ls, 0)
		nodeWritesFill += len(c.Nodes)
		commitAll(c)
		epoch++
	}
	b.Logf("filled both stores with %d labels (%d node writes) in %v", labels, nodeWritesFill, time.Since(start).Round(time.Second))

	rng := rand.New(rand.NewPCG(1, 2))
	version := map[int]uint32{}
	var nodeWrites []float64
	b.ResetTimer()
	for it := range epochs {
		c := kt.EpochCommit{Epoch: epoch, Record: make([]byte, 200)}
		ls := rng.Perm(labels)[:updates]
		for _, l := range ls {
			version[l]++
			c.Versions = append(c.Versions, kt.VersionWrite{Label: label(l), Version: version[l] + 1, Record: value([]byte(label(l)), it+1)[:80]})
			c.UpdateList = append(c.UpdateList, label(l)...)
		}
		c.Nodes = nodesOf(ls, it+1)
		nodeWrites = append(nodeWrites, float64(len(c.Nodes)))
		for j := range stores {
			st := &stores[(j+it)%len(stores)]
			t0 := time.Now()
			if err := st.s.CommitEpoch(bg, c); err != nil {
				b.Fatalf("%s: %v", st.name, err)
			}
			st.ms = append(st.ms, float64(time.Since(t0).Microseconds())/1000)
		}
		epoch++
	}
	b.StopTimer()
	med := func(x []float64) float64 {
		x = slices.Clone(x)
		slices.Sort(x)
		return x[len(x)/2]
	}
	boltMs := med(stores[1].ms)
	for _, st := range stores {
		b.ReportMetric(med(st.ms), st.name+"-ms/epoch")
		if st.name != "bolt" {
			b.ReportMetric(med(st.ms)/boltMs, st.name+"/bolt")
		}
		b.Logf("%s: %v ms", st.name, st.ms)
	}
	// The ratio of each epoch's two commits, which ran back to back.
	var paired []float64
	for i := range stores[0].ms {
		paired = append(paired, stores[0].ms[i]/stores[1].ms[i])
	}
	b.ReportMetric(med(paired), "pg/bolt-paired")
	b.ReportMetric(med(nodeWrites), "nodes/epoch")
	b.ReportMetric(0, "ns/op")
}
