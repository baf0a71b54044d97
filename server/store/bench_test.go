package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// The two benchmarks differ only in how transactions are formed: the same
// Put transaction body (putOp) runs either through the group-commit writer
// or in its own db.Update per operation, the baseline. Both fsync every
// transaction. Each runs at 2×GOMAXPROCS (a few senders) and
// 16×GOMAXPROCS goroutines (a busy server).

const benchEnvelope = 2048 // the 2 KiB padding bucket

func BenchmarkPutGroupCommit(b *testing.B) {
	benchPut(b, func(s *Bolt, m Mailbox, id [MessageIDSize]byte, env []byte) error {
		_, err := s.Put(context.Background(), m.SendID, id, env, Quota{}, t0, nil)
		return err
	})
}

func BenchmarkPutPlainUpdate(b *testing.B) {
	benchPut(b, func(s *Bolt, m Mailbox, id [MessageIDSize]byte, env []byte) error {
		var res PutResult
		return s.db.Update(s.putOp(m.SendID, id, env, Quota{}, t0, nil, &res))
	})
}

func benchPut(b *testing.B, put func(*Bolt, Mailbox, [MessageIDSize]byte, []byte) error) {
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("par=%d", par), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			boxes := make([]Mailbox, 16)
			for i := range boxes {
				boxes[i] = Mailbox{Created: t0}
				binary.BigEndian.PutUint64(boxes[i].ReceiveID[:], uint64(i))
				binary.BigEndian.PutUint64(boxes[i].SendID[:], uint64(i)|1<<63)
				if err := s.CreateMailbox(context.Background(), boxes[i], nil); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Uint64
			b.SetParallelism(par)
			b.SetBytes(benchEnvelope)
			before := s.Stats()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				env := make([]byte, benchEnvelope)
				for pb.Next() {
					n := next.Add(1)
					var id [MessageIDSize]byte
					binary.BigEndian.PutUint64(id[:], n)
					if err := put(s, boxes[n%uint64(len(boxes))], id, env); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			if c := s.Stats().Commits - before.Commits; c > 0 {
				b.ReportMetric(float64(s.Stats().Ops-before.Ops)/float64(c), "ops/commit")
			}
			// Every Put landed exactly once.
			stored := 0
			if err := s.db.View(func(tx *bolt.Tx) error {
				stored = tx.Bucket(bucketMessages).Stats().KeyN
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			if uint64(stored) != next.Load() {
				b.Fatalf("%d messages stored after %d puts", stored, next.Load())
			}
		})
	}
}
