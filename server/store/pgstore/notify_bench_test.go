package pgstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/server/store/pgstore"
)

// BenchmarkPutNotify: BenchmarkStorePut's sends (2 KiB, token-paid, 256
// mailboxes) through one node while a second node listens, with the
// cross-node notification off, once per group-commit batch (the
// default), once per send, and once per batch in a transaction of its
// own after the batch's commit ("after"). Sub-benchmarks of one benchmark, so that
// -count=N interleaves them: compare them within one run only. Each
// reports the wake-ups the listening node received per send.
func BenchmarkPutNotify(b *testing.B) {
	for _, par := range []int{1, 16} {
		for _, mode := range []string{"off", "batch", "send", "after"} {
			b.Run(fmt.Sprintf("par=%d/notify=%s", par, mode), func(b *testing.B) {
				url := syncedDB(b)
				s, listener := open(b, url), open(b, url)
				pgstore.SetNotifyMode(s, mode)
				var woken atomic.Int64
				up := make(chan struct{})
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					defer close(done)
					listener.Wakes(ctx, func(w store.Wake) {
						switch w.Kind {
						case store.WakeListening:
							close(up)
						case store.WakeStored:
							woken.Add(1)
						}
					})
				}()
				defer func() { cancel(); <-done }()
				<-up
				putSends(b, s, benchBoxes(b, s, 256), par)
				b.StopTimer()
				if mode != "off" {
					// Every send's mailbox is heard of (deduplicated within a batch).
					deadline := time.Now().Add(30 * time.Second)
					for woken.Load() == 0 && time.Now().Before(deadline) {
						time.Sleep(10 * time.Millisecond)
					}
					if woken.Load() == 0 {
						b.Fatal("the listening node heard of no send")
					}
				}
				b.ReportMetric(float64(woken.Load())/float64(b.N), "wakes/op")
			})
		}
	}
}
