package kt

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkEpoch10k measures the figure of docs/key-transparency.md §6
// "one 10,000-update epoch into a 1M-label tree": the commit of a full
// epoch (tree inserts, hashing, versions, update list, epoch record and
// the bbolt commit with its fsync) into a directory of
// QPC_KT_BENCH_LABELS labels (default 1,000,000). The VRF proofs are made
// when an update is queued, not in the commit, so the directory is built
// with synthetic indices (SHA-256 of the label) to spend its time on the
// tree. Each iteration commits one epoch updating 10,000 labels spread
// evenly over the directory; it reports the median over the iterations,
// as wall time (updates/s, ms/epoch) and as the process's CPU time
// (cpu-ms/epoch, all threads: less sensitive to a busy machine), and
// bbolt's page writes per commit (page-writes/epoch) and the time they
// took with the fsyncs (write-ms/epoch).
//
//	go test ./kt -run '^$' -bench Epoch10k -benchtime 7x -timeout 30m
//
// QPC_KT_BENCH_DB names a database file: when it exists the directory
// starts from a copy of it instead of being built (every label at
// version 1, as the build leaves it), and when it does not the built
// database is saved there, so that runs comparing two versions of the
// code (docs/bench) skip the build. QPC_KT_BENCH_CPUPROFILE writes a CPU
// profile of the timed epochs only.
func BenchmarkEpoch10k(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("QPC_KT_BENCH_LABELS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	saved := os.Getenv("QPC_KT_BENCH_DB")
	fromSaved := false
	var d *testDir
	if saved != "" {
		if _, err := os.Stat(saved); err == nil {
			dir := b.TempDir()
			if err := copyFile(saved, filepath.Join(dir, DBFile)); err != nil {
				b.Fatal(err)
			}
			s, v, vkey, k := newKeys(b, "kt.test/log")
			d = openTestDir(b, dir, s, v, vkey, k)
			b.Cleanup(func() { d.Close() })
			fromSaved = true
		}
	}
	if d == nil {
		d = newTestDir(b)
	}
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
	if fromSaved {
		for i := range n {
			version[i] = 1
		}
	} else {
		for done := 0; done < n; done += 100_000 {
			m := min(100_000, n-done)
			labels := make([]int, m)
			for i := range labels {
				labels[i] = done + i
			}
			commit(labels)
		}
		if saved != "" {
			if err := d.boltDB().View(func(tx *bolt.Tx) error { return tx.CopyFile(saved, 0o600) }); err != nil {
				b.Fatal(err)
			}
		}
	}
	if p := os.Getenv("QPC_KT_BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	stride := max(n/maxPerEpoch, 1)
	var times, cpus []time.Duration
	var writes []int64
	var writeTimes []time.Duration
	r := 0
	b.ResetTimer()
	for b.Loop() {
		labels := make([]int, maxPerEpoch)
		for i := range labels {
			labels[i] = (i*stride + r) % n
		}
		r++
		cpu0, w0, wt0 := cpuTime(), pageWrites(d.boltDB()), writeTime(d.boltDB())
		times = append(times, commit(labels))
		cpus = append(cpus, cpuTime()-cpu0)
		writes = append(writes, pageWrites(d.boltDB())-w0)
		writeTimes = append(writeTimes, writeTime(d.boltDB())-wt0)
	}
	slices.Sort(times)
	slices.Sort(cpus)
	med := times[len(times)/2]
	b.ReportMetric(float64(maxPerEpoch)/med.Seconds(), "updates/s")
	b.ReportMetric(float64(med.Milliseconds()), "ms/epoch")
	b.ReportMetric(float64(cpus[len(cpus)/2].Milliseconds()), "cpu-ms/epoch")
	slices.Sort(writes)
	b.ReportMetric(float64(writes[len(writes)/2]), "page-writes/epoch")
	slices.Sort(writeTimes)
	b.ReportMetric(float64(writeTimes[len(writeTimes)/2].Milliseconds()), "write-ms/epoch")
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pageWrites is the number of page writes db's transactions made.
func pageWrites(db *bolt.DB) int64 {
	s := db.Stats()
	return s.TxStats.GetWrite()
}

// writeTime is the time db's transactions spent writing, fsyncs included.
func writeTime(db *bolt.DB) time.Duration {
	s := db.Stats()
	return s.TxStats.GetWriteTime()
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
