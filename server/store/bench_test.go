package store

import (
	"context"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

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
		return s.update(s.putOp(m.SendID, id, env, Quota{}, t0, nil, &res))
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

// BenchmarkDiskPages measures what a commit's I/O costs on the file system
// under the benchmark's temporary directory: writing n 4 KiB pages, then
// fdatasync, then one small meta write and fdatasync again, which is the
// shape of a bbolt commit. "random" scatters the pages over a 64 MiB file
// already written once (bbolt reuses freed pages wherever they are);
// "sequential" writes them contiguously, the baseline an append-only log
// would pay. docs/storage.md explains why the ratio matters.
func BenchmarkDiskPages(b *testing.B) {
	const pageSize, filePages = 4096, 16384
	for _, n := range []int{10, 40} {
		for _, layout := range []string{"sequential", "random"} {
			b.Run(fmt.Sprintf("pages=%d/%s", n, layout), func(b *testing.B) {
				f, err := os.OpenFile(filepath.Join(b.TempDir(), "pages"), os.O_RDWR|os.O_CREATE, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				chunk := make([]byte, 1<<20)
				for range filePages * pageSize / len(chunk) {
					if _, err := f.Write(chunk); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				page := make([]byte, pageSize)
				rng := mrand.New(mrand.NewPCG(1, 2))
				b.SetBytes(int64(n * pageSize))
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					for j := range n {
						at := int64(2 + (i*n+j)%(filePages-2))
						if layout == "random" {
							at = 2 + rng.Int64N(filePages-2)
						}
						if _, err := f.WriteAt(page, at*pageSize); err != nil {
							b.Fatal(err)
						}
					}
					if err := fdatasync(f); err != nil {
						b.Fatal(err)
					}
					if _, err := f.WriteAt(page[:128], 0); err != nil {
						b.Fatal(err)
					}
					if err := fdatasync(f); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkLoadIdem measures what the in-memory idempotency index costs at
// Open: a file holding 200,000 arrivals in 1,000 mailboxes, read by
// "scan" (a cursor over the arrivals decoding each, the baseline: what
// any start must pay to look at them) and "load" (the same, building the
// index). It reports the time per key of each and, for "load", the heap
// the index keeps per key. docs/storage.md quotes both.
func BenchmarkLoadIdem(b *testing.B) {
	const boxes, perBox = 1000, 200
	path := filepath.Join(b.TempDir(), "idem.db")
	s, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(3, 4))
	for i := range boxes {
		var m Mailbox
		binary.BigEndian.PutUint64(m.ReceiveID[:], uint64(i))
		binary.BigEndian.PutUint64(m.SendID[:], uint64(i)|1<<63)
		if err := s.CreateMailbox(context.Background(), m, nil); err != nil {
			b.Fatal(err)
		}
		if err := s.update(func(tx *txn) error {
			for j := range perBox {
				var id [MessageIDSize]byte
				binary.BigEndian.PutUint64(id[:], rng.Uint64())
				binary.BigEndian.PutUint64(id[8:], rng.Uint64())
				var res PutResult
				if err := s.putOp(m.SendID, id, []byte("e"), Quota{}, t0.Add(time.Duration(j)*time.Second), nil, &res)(tx); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const keys = boxes * perBox
	b.Run("scan", func(b *testing.B) {
		for b.Loop() {
			n := 0
			if err := db.View(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketArrivals).ForEach(func(k, v []byte) error {
					_, err := decodeArrival(k, v)
					n++
					return err
				})
			}); err != nil || n != keys {
				b.Fatalf("scan: %d arrivals, %v", n, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*keys), "ns/key")
	})
	b.Run("load", func(b *testing.B) {
		var heap float64
		for b.Loop() {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			idem := newIdemIndex()
			if err := db.View(func(tx *bolt.Tx) error { return loadIdem(tx, idem) }); err != nil || idem.keys != keys {
				b.Fatalf("load: %d keys, %v", idem.keys, err)
			}
			b.StopTimer()
			runtime.GC()
			runtime.ReadMemStats(&after)
			heap = float64(after.HeapAlloc) - float64(before.HeapAlloc)
			runtime.KeepAlive(idem)
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*keys), "ns/key")
		b.ReportMetric(heap/keys, "heapB/key")
	})
}

// BenchmarkRoundTrip is a message's whole life in the store: Put, Fetch
// of it alone, Ack, through the group-commit writer, at 2×GOMAXPROCS and
// 16×GOMAXPROCS goroutines. It includes what an envelope costs beyond
// its Put: reading it back and freeing it (with schema 3, decrypting it
// and zeroing its key slot; docs/storage.md compares the schemas).
func BenchmarkRoundTrip(b *testing.B) {
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("par=%d", par), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			var next atomic.Uint64
			b.SetParallelism(par)
			b.SetBytes(benchEnvelope)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				// One mailbox per goroutine, so Fetch sees only its own.
				var m Mailbox
				binary.BigEndian.PutUint64(m.ReceiveID[:], next.Add(1))
				binary.BigEndian.PutUint64(m.SendID[:], next.Add(1))
				if err := s.CreateMailbox(ctx, m, nil); err != nil {
					b.Error(err)
					return
				}
				env := make([]byte, benchEnvelope)
				for pb.Next() {
					var id [MessageIDSize]byte
					binary.BigEndian.PutUint64(id[:], next.Add(1))
					r, err := s.Put(ctx, m.SendID, id, env, Quota{}, t0, nil)
					if err != nil {
						b.Error(err)
						return
					}
					msgs, _, err := s.Fetch(ctx, m.ReceiveID, r.Seq-1, 1, t0)
					if err != nil || len(msgs) != 1 || len(msgs[0].Envelope) != benchEnvelope {
						b.Errorf("Fetch: %d messages, %v", len(msgs), err)
						return
					}
					if n, err := s.Ack(ctx, m.ReceiveID, [][MessageIDSize]byte{id}); err != nil || n != 1 {
						b.Errorf("Ack: %d, %v", n, err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkSeal is the CPU schema 3 adds to a message's life: a fresh
// key, sealing its envelope on Put and opening it on Fetch (2 KiB).
func BenchmarkSeal(b *testing.B) {
	env := make([]byte, benchEnvelope)
	var id [MessageIDSize]byte
	b.SetBytes(benchEnvelope)
	for b.Loop() {
		key := newMessageKey()
		rec, err := sealMessage(&key, id, 1234, env)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := unseal(&key, rec[:messageADSize], rec[messageHeaderSize:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeyFileSync is the key-slot file's share of a commit that
// stores messages: n new keys written (their pages) and one fdatasync,
// then their slots zeroed after the commit (written, synced with the
// next iteration's keys), as in a steady send-and-ack load.
func BenchmarkKeyFileSync(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			k, err := createKeyFile(filepath.Join(b.TempDir(), "bench.keys"))
			if err != nil {
				b.Fatal(err)
			}
			defer k.abandon()
			for b.Loop() {
				for range n {
					key := newMessageKey()
					slot, err := k.alloc(&key)
					if err != nil {
						b.Fatal(err)
					}
					k.release(slot)
				}
				if err := k.prepare(); err != nil {
					b.Fatal(err)
				}
				if err := k.commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
