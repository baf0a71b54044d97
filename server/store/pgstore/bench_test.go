package pgstore_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/server/store"
)

// The same workloads on the embedded bbolt store and on PostgreSQL, as
// sub-benchmarks of one benchmark, so that -count=N runs them
// interleaved: compare them only within one run. pgtest's throwaway
// cluster syncs its commits (fsync on) when benchmarks run, as bbolt
// does.

const benchEnvelope = 2048 // the 2 KiB padding bucket

var bt0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func backends(b *testing.B, fn func(b *testing.B, s store.Store)) {
	b.Run("backend=bbolt", func(b *testing.B) {
		s, err := store.Open(filepath.Join(b.TempDir(), "bench.db"), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		fn(b, s)
	})
	b.Run("backend=postgres", func(b *testing.B) {
		fn(b, open(b, syncedDB(b)))
	})
}

// syncedDB is pgtest.DB on a server that syncs its commits (fsync on):
// without it, sends would cost a fraction of what they cost in service,
// and a comparison with bbolt would be meaningless.
func syncedDB(b *testing.B) string {
	url := pgtest.DB(b)
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	var fsync string
	err = conn.QueryRow(context.Background(), "SHOW fsync").Scan(&fsync)
	conn.Close(context.Background())
	if err != nil || fsync != "on" {
		b.Fatalf("the database syncs no commits (fsync %q, %v)", fsync, err)
	}
	return url
}

func benchBoxes(b *testing.B, s store.Store, n int) []store.Mailbox {
	boxes := make([]store.Mailbox, n)
	for i := range boxes {
		boxes[i] = store.Mailbox{Created: bt0}
		binary.BigEndian.PutUint64(boxes[i].ReceiveID[:], uint64(i))
		binary.BigEndian.PutUint64(boxes[i].SendID[:], uint64(i)|1<<63)
		if err := s.CreateMailbox(context.Background(), boxes[i], nil); err != nil {
			b.Fatal(err)
		}
	}
	return boxes
}

// BenchmarkStorePut: sends of 2 KiB envelopes, each paid with a token
// (its spend is part of the write), spread over 256 mailboxes, at
// 1×GOMAXPROCS and 16×GOMAXPROCS senders.
func BenchmarkStorePut(b *testing.B) {
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("par=%d", par), func(b *testing.B) {
			backends(b, func(b *testing.B, s store.Store) {
				putSends(b, s, benchBoxes(b, s, 256), par)
			})
		})
	}
}

// putSends is BenchmarkStorePut's timed loop: b.N sends of 2 KiB
// envelopes, each paid with a token (its spend is part of the write),
// spread over boxes, by par×GOMAXPROCS senders.
func putSends(b *testing.B, s store.Store, boxes []store.Mailbox, par int) {
	var next atomic.Uint64
	b.SetParallelism(par)
	b.SetBytes(benchEnvelope)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		env := make([]byte, benchEnvelope)
		for pb.Next() {
			n := next.Add(1)
			var id [store.MessageIDSize]byte
			binary.BigEndian.PutUint64(id[:], n)
			spend := &store.Spend{Until: bt0.Add(time.Hour)}
			binary.BigEndian.PutUint64(spend.Key[:], n)
			if _, err := s.Put(context.Background(), boxes[n%uint64(len(boxes))].SendID, id, env, store.Quota{}, bt0, spend); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkStoreRoundTrip: one message's life, serially: Put, Fetch,
// Ack, on one of 16 mailboxes.
func BenchmarkStoreRoundTrip(b *testing.B) {
	backends(b, func(b *testing.B, s store.Store) {
		ctx := context.Background()
		boxes := benchBoxes(b, s, 16)
		env := make([]byte, benchEnvelope)
		b.SetBytes(benchEnvelope)
		b.ResetTimer()
		for i := range b.N {
			m := boxes[i%len(boxes)]
			var id [store.MessageIDSize]byte
			binary.BigEndian.PutUint64(id[:], uint64(i))
			if _, err := s.Put(ctx, m.SendID, id, env, store.Quota{}, bt0, nil); err != nil {
				b.Fatal(err)
			}
			msgs, _, err := s.Fetch(ctx, m.ReceiveID, 0, 10, bt0)
			if err != nil || len(msgs) != 1 {
				b.Fatalf("fetch: %d messages, %v", len(msgs), err)
			}
			if n, err := s.Ack(ctx, m.ReceiveID, [][store.MessageIDSize]byte{id}); err != nil || n != 1 {
				b.Fatalf("ack: %d, %v", n, err)
			}
		}
	})
}
