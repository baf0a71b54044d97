package bench

import (
	"os"
	"slices"
	"time"
)

// fsyncProbes is how many single-page writes fsyncProbe times.
const fsyncProbes = 10

// fsyncProbe times fsyncProbes rounds of one 4 KiB write and a data sync
// of a scratch file in dir, the disk's share of every group commit, and
// appends the durations to into. The qpc phase waits on such syncs (three
// per commit: the key-slot file, bbolt's pages, its meta page) and the
// relay on none, so the ratio follows the disk's sync latency as much as
// the CPU: on a shared machine other tenants' writes move it, which the
// load average does not show.
func fsyncProbe(dir string, into []time.Duration) []time.Duration {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return into
	}
	defer os.Remove(f.Name())
	defer f.Close()
	page := make([]byte, 4096)
	for range fsyncProbes {
		start := time.Now()
		if _, err := f.WriteAt(page, 0); err != nil {
			return into
		}
		if err := datasync(f); err != nil {
			return into
		}
		into = append(into, time.Since(start))
	}
	return into
}

// medianMs is the median of ds in milliseconds, zero if ds is empty.
func medianMs(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return ms(s[len(s)/2])
}
