package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicprochat/qpc/kt/kttest"
)

// BenchmarkAuditEpoch: one epoch of 100 publishes made by a real
// directory (Tick: tree inserts, bbolt commit, log append, published
// checkpoint; the VRF proofs are made at Enqueue, outside the timing),
// then audited over HTTP (entry bundle, update list, replay, bbolt
// commit). Reports both per epoch and their ratio, same run.
//
//	go test ./kt/audit -run '^$' -bench AuditEpoch -benchtime 20x
func BenchmarkAuditEpoch(b *testing.B) {
	ctx := context.Background()
	k := newKeys(b)
	d := kttest.OpenDirectory(b, b.TempDir(), k)
	a := openAuditor(b, filepath.Join(b.TempDir(), "audit.db"), Options{Log: HTTPLog(serve(b, d.Handler("/kt")), nil), Verifier: k.Verifier})
	if _, err := a.Follow(ctx); err != nil {
		b.Fatal(err)
	}
	var tickTime, auditTime time.Duration
	n := 0
	for b.Loop() {
		for j := range 100 {
			if _, err := d.Enqueue(fmt.Sprintf("u%d-%d", n, j), []byte("binding")); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		if _, err := d.Tick(ctx); err != nil {
			b.Fatal(err)
		}
		tickTime += time.Since(start)
		start = time.Now()
		if _, err := a.Follow(ctx); err != nil {
			b.Fatal(err)
		}
		auditTime += time.Since(start)
		n++
	}
	b.ReportMetric(ms(tickTime)/float64(n), "ms-tick/epoch")
	b.ReportMetric(ms(auditTime)/float64(n), "ms-audit/epoch")
	b.ReportMetric(float64(auditTime)/float64(tickTime), "audit/tick")
}
