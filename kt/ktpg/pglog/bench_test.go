package pglog_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pglog"
)

// BenchmarkAppendVsPOSIX measures the latency of one Append (acknowledged
// = durably integrated) on pglog against Tessera's POSIX driver in the
// same run: each iteration appends the same entry to both, alternating
// which goes first, and the benchmark reports the median latency of each
// (posix-us, pglog-us) and their ratio (pglog/posix). pgtest runs its
// cluster with fsync on under -test.bench, so a commit is a real one.
//
//	go test ./kt/ktpg/pglog -run '^$' -bench AppendVsPOSIX -benchtime 300x -count 5
func BenchmarkAppendVsPOSIX(b *testing.B) {
	ctx := context.Background()
	c, _ := keys(b)
	px, err := kt.OpenPOSIXLog(ctx, b.TempDir(), c)
	if err != nil {
		b.Fatal(err)
	}
	defer px.Close()
	pg := open(b, pool(b, pgtest.DB(b)), c, pglog.Options{})
	defer pg.Close()
	logs := [2]kt.LogDriver{px, pg}
	var lat [2][]time.Duration
	b.ResetTimer()
	for i := range b.N {
		e := entryOf(i)
		for k := range 2 {
			j := (i + k) % 2
			start := time.Now()
			if _, err := logs[j].Append(ctx, e); err != nil {
				b.Fatal(err)
			}
			lat[j] = append(lat[j], time.Since(start))
		}
	}
	b.StopTimer()
	med := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)/2]
	}
	mp, mg := med(lat[0]), med(lat[1])
	b.ReportMetric(float64(mp.Microseconds()), "posix-us")
	b.ReportMetric(float64(mg.Microseconds()), "pglog-us")
	b.ReportMetric(float64(mg)/float64(mp), "pglog/posix")
}
