package kt

import (
	"crypto/sha256"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkEpoch10k measures the figure of docs/key-transparency.md §6
// "one 10,000-update epoch into a 1M-label tree": the commit of a full
// epoch (tree inserts, hashing, versions, update list, epoch record and
// the bbolt commit with its fsync) into a directory of
// QPC_KT_BENCH_LABELS labels (default 1,000,000). The VRF proofs are made
// when an update is queued, not in the commit, so the directory is built
// with synthetic indices (SHA-256 of the label) to spend its time on the
// tree. Each iteration commits one epoch updating 10,000 labels spread
// evenly over the directory; it reports the median over the iterations.
//
//	go test ./kt -run '^$' -bench Epoch10k -benchtime 7x -timeout 30m
func BenchmarkEpoch10k(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("QPC_KT_BENCH_LABELS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	d := newTestDir(b)
	label := func(i int) string { return fmt.Sprintf("user%07d", i) }
	version := map[int]uint32{}
	commit := func(labels []int) time.Duration {
		batch := make([]*update, len(labels))
		for i, l := range labels {
			version[l]++
			u := &update{label: label(l), value: []byte("binding"), done: make(chan Published, 1), version: version[l]}
			h := sha256.Sum256(vrfInput(u.label, u.version))
			copy(u.index[:], h[:])
			batch[i] = u
		}
		d.writeMu.Lock()
		defer d.writeMu.Unlock()
		start := time.Now()
		if _, err := d.commit(batch, false); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for done := 0; done < n; done += 100_000 {
		m := min(100_000, n-done)
		labels := make([]int, m)
		for i := range labels {
			labels[i] = done + i
		}
		commit(labels)
	}
	stride := max(n/maxPerEpoch, 1)
	var times []time.Duration
	r := 0
	b.ResetTimer()
	for b.Loop() {
		labels := make([]int, maxPerEpoch)
		for i := range labels {
			labels[i] = (i*stride + r) % n
		}
		r++
		times = append(times, commit(labels))
	}
	slices.Sort(times)
	med := times[len(times)/2]
	b.ReportMetric(float64(maxPerEpoch)/med.Seconds(), "updates/s")
	b.ReportMetric(float64(med.Milliseconds()), "ms/epoch")
}
