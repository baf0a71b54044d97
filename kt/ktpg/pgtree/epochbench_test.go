package pgtree_test

import (
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pgtree"
	"github.com/quicprochat/qpc/kt/kttest"
)

// BenchmarkDirectoryEpoch10k measures the real directory's epoch of
// 10,000 leaves (Tick: the tree's inserts and hashing, reading the nodes
// below the cached levels from the store, the commit, the log append) on
// PostgreSQL against bbolt, interleaved in one run, into a tree of
// QPC_KT_PG_BENCH_LEAVES leaves (default 100,000) with the top 12 levels
// cached (as 16 are of a 1M-leaf tree: ~5 levels read from the store per
// insert). The leaves are the directory's padding (MinUpdates 10,000):
// random, as real ones are, without the VRF work of a publish. Medians
// of QPC_KT_PG_BENCH_EPOCHS (default 5) epochs: pg-ms/epoch,
// bolt-ms/epoch, pg/bolt.
//
//	go test ./kt/ktpg/pgtree -run '^$' -bench DirectoryEpoch10k -timeout 60m
func BenchmarkDirectoryEpoch10k(b *testing.B) {
	leaves, epochs := 100_000, 5
	if s := os.Getenv("QPC_KT_PG_BENCH_LEAVES"); s != "" {
		leaves, _ = strconv.Atoi(s)
	}
	if s := os.Getenv("QPC_KT_PG_BENCH_EPOCHS"); s != "" {
		epochs, _ = strconv.Atoi(s)
	}
	k := kttest.NewKeys(b, "kt.test/bench")
	openDir := func(tree kt.TreeStore) *kt.Directory {
		d, err := kt.OpenDirectory(bg, kt.DirectoryOptions{
			Dir: b.TempDir(), LogSigner: k.Signer, LogVerifier: k.Verifier, VRFKey: k.VRF,
			Logger: quiet, Tree: tree, MinUpdates: 10_000, CacheDepth: 12,
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { d.Close() })
		return d
	}
	dirs := []struct {
		name string
		d    *kt.Directory
		ms   []float64
	}{{name: "pg", d: openDir(open(b, pgtest.DB(b), pgtree.Options{Logger: quiet}))}, {name: "bolt", d: openDir(nil)}}
	tick := func(d *kt.Directory) time.Duration {
		t0 := time.Now()
		if _, err := d.Tick(bg); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	start := time.Now()
	for range 1 + leaves/10_000 { // epoch 0, the empty tree, has no padding
		for _, x := range dirs {
			tick(x.d)
		}
	}
	b.Logf("filled both directories with %d leaves in %v", leaves, time.Since(start).Round(time.Second))
	b.ResetTimer()
	for it := range epochs {
		for j := range dirs {
			x := &dirs[(j+it)%len(dirs)]
			x.ms = append(x.ms, float64(tick(x.d).Microseconds())/1000)
		}
	}
	b.StopTimer()
	med := func(x []float64) float64 {
		x = slices.Clone(x)
		slices.Sort(x)
		return x[len(x)/2]
	}
	for _, x := range dirs {
		b.ReportMetric(med(x.ms), x.name+"-ms/epoch")
		b.Logf("%s: %v ms", x.name, x.ms)
	}
	b.ReportMetric(med(dirs[0].ms)/med(dirs[1].ms), "pg/bolt")
	b.ReportMetric(0, "ns/op")
}
