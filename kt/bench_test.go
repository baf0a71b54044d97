package kt

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkDirectory builds a directory of QPC_KT_BENCH_LABELS labels
// (default 1,000,000) and reports, once, the figures of
// docs/key-transparency.md §7. Run it alone:
//
//	go test ./kt -run '^$' -bench Directory -benchtime 1x -timeout 1h
func BenchmarkDirectory(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("QPC_KT_BENCH_LABELS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	d := newTestDir(b)
	metrics := map[string]float64{}
	report := func(v float64, unit string) { metrics[unit] = v }
	ctx := context.Background()
	label := func(i int) string { return fmt.Sprintf("user%07d", i) }

	// Bulk load in batches of 100,000 (one commit each), timing the VRF
	// proofs and the tree (inserts, hashing, bbolt commit) separately.
	var insertTime time.Duration
	load := func(from, m int, value string) {
		batch := make([]*update, m)
		for i := range batch {
			batch[i] = &update{label: label((from + i) % n), value: []byte(value), done: make(chan Published, 1)}
		}
		start := time.Now()
		d.writeMu.Lock()
		_, err := d.commit(batch, false)
		insertTime += time.Since(start)
		if err == nil {
			err = d.syncLog(ctx)
		}
		d.writeMu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
	for done := 0; done < n; done += 100_000 {
		load(done, min(100_000, n-done), "binding")
	}
	report(float64(n)/insertTime.Seconds(), "publishes/s")
	report(float64(n)/d.stats.tree.Seconds(), "tree-inserts/s")
	report(float64(n)/d.stats.vrf.Seconds(), "vrf-proofs/s")
	// One full epoch (maxPerEpoch updates) into the loaded tree.
	d.stats = commitStats{}
	load(0, maxPerEpoch, "binding v1")
	report(float64(maxPerEpoch)/d.stats.tree.Seconds(), "tree-inserts/s-10k-epoch")

	// Epoch commit at 1,000 updates (tree, bbolt fsync, log append and a
	// published checkpoint).
	var epochTimes []time.Duration
	for r := range 5 {
		for i := range 1000 {
			d.Enqueue(label((r*1000+i)%n), []byte("binding v2"))
		}
		start := time.Now()
		if _, err := d.Tick(ctx); err != nil {
			b.Fatal(err)
		}
		epochTimes = append(epochTimes, time.Since(start))
	}
	slices.Sort(epochTimes)
	report(float64(epochTimes[len(epochTimes)/2].Milliseconds()), "ms/epoch-1000")

	// Lookup proof: size, generation and verification time.
	target := label(n / 2)
	p, err := d.Lookup(ctx, target, 0)
	if err != nil {
		b.Fatal(err)
	}
	report(float64(len(p.Marshal())-len(p.Value)), "proof-bytes")
	const rounds = 200
	start := time.Now()
	for range rounds {
		if p, err = d.Lookup(ctx, target, 0); err != nil {
			b.Fatal(err)
		}
	}
	report(float64(time.Since(start).Microseconds())/rounds, "µs/prove")
	v := d.verifier(b)
	start = time.Now()
	for range rounds {
		if _, err := v.VerifyLookup(target, p); err != nil {
			b.Fatal(err)
		}
	}
	verify := time.Since(start) / rounds
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("one Ed25519 verification")
	sig := ed25519.Sign(priv, msg)
	start = time.Now()
	for range rounds * 10 {
		ed25519.Verify(pub, msg, sig)
	}
	ed := time.Since(start) / (rounds * 10)
	report(float64(verify.Microseconds()), "µs/verify")
	report(float64(verify)/float64(ed), "ed25519-verifies/verify")

	// Update to signed checkpoint at the 1 s cadence.
	d.Directory.opts.EpochInterval = time.Second
	d.Start()
	var lat []time.Duration
	for i := range 20 {
		time.Sleep(time.Duration(137*i%1000) * time.Millisecond)
		start := time.Now()
		if _, err := d.Publish(ctx, label(i), []byte("binding v3")); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	report(float64(lat[len(lat)-1].Milliseconds()), "ms/update-to-checkpoint-max")
	report(float64(lat[len(lat)*99/100].Milliseconds()), "ms/update-to-checkpoint-p99")
	for b.Loop() {
	}
	for unit, v := range metrics {
		b.ReportMetric(v, unit)
	}
}
