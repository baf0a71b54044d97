package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The bbolt-specific tests. The backend-neutral behaviour is covered by the
// conformance suite in storetest (run against Bolt in storetest/bolt_test.go);
// these test what only this implementation has: the file, group commit,
// transaction failure, the encoding.

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func openTest(t *testing.T, path string, opts Options) *Bolt {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "qpc.db")
	}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func rid(t *testing.T) [MailboxIDSize]byte {
	t.Helper()
	var v [MailboxIDSize]byte
	rand.Read(v[:])
	return v
}

func mid() [MessageIDSize]byte {
	var v [MessageIDSize]byte
	rand.Read(v[:])
	return v
}

func mkMailbox(t *testing.T, s *Bolt) Mailbox {
	t.Helper()
	m := Mailbox{ReceiveID: rid(t), SendID: rid(t), OwnerKey: rid(t), Created: t0}
	if err := s.CreateMailbox(context.Background(), m, nil); err != nil {
		t.Fatalf("CreateMailbox: %v", err)
	}
	return m
}

func mustPut(t *testing.T, s *Bolt, m Mailbox, id [MessageIDSize]byte, env []byte, q Quota, now time.Time) PutResult {
	t.Helper()
	r, err := s.Put(context.Background(), m.SendID, id, env, q, now, nil)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	return r
}

func mustFetch(t *testing.T, s *Bolt, m Mailbox) []Message {
	t.Helper()
	msgs, _, err := s.Fetch(context.Background(), m.ReceiveID, 0, 1<<20, t0)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return msgs
}

// blockWriter parks the writer goroutine inside a transaction until the
// returned release is called, so a test can line up operations in the
// queue and know they will share the next transaction.
func blockWriter(t *testing.T, s *Bolt) (release func()) {
	t.Helper()
	entered, rel, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.do(context.Background(), func(*txn) error {
			close(entered)
			<-rel
			return nil
		})
	}()
	<-entered
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(rel)
			if err := <-done; err != nil {
				t.Errorf("blocking op: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// lockedBuffer collects log output written by the writer goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitQueued waits until n operations wait in the writer's queue.
func waitQueued(t *testing.T, s *Bolt, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.queue) != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d operations, want %d", len(s.queue), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkInvariants walks the whole file and checks that the indexes and
// counters agree with the messages: what Put, Ack, Purge and Delete must
// keep exact between them.
func checkInvariants(t *testing.T, s *Bolt) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		type sums struct{ count, bytes, maxSeq uint64 }
		got := map[[MailboxIDSize]byte]*sums{}
		if err := tx.Bucket(bucketMailboxes).ForEach(func(k, v []byte) error {
			rec, err := decodeMailbox(v)
			if err != nil {
				return err
			}
			var id [MailboxIDSize]byte
			copy(id[:], k)
			got[id] = &sums{}
			back, err := lookupSendID(tx, rec.sendID)
			if err != nil || back != id {
				t.Errorf("send index of a mailbox missing or wrong: %v", err)
			}
			return nil
		}); err != nil {
			return err
		}
		if n := tx.Bucket(bucketSendIDs).Stats().KeyN; n != len(got) {
			t.Errorf("%d send index entries for %d mailboxes", n, len(got))
		}
		arrivals := tx.Bucket(bucketArrivals)
		messages := 0
		slots := map[uint32]bool{}
		if err := tx.Bucket(bucketMessages).ForEach(func(k, v []byte) error {
			messages++
			var id [MailboxIDSize]byte
			copy(id[:], k)
			sum, ok := got[id]
			if !ok {
				t.Errorf("message of no mailbox")
				return nil
			}
			msgID, received, slot, sealed, err := decodeMessage(v)
			if err != nil {
				return err
			}
			if slots[slot] {
				t.Errorf("two messages name key slot %d", slot)
			}
			slots[slot] = true
			if _, ok := s.open(v, slot, sealed); !ok {
				t.Errorf("message in slot %d does not open with its key", slot)
			}
			seq := binary.BigEndian.Uint64(k[MailboxIDSize:])
			sum.count++
			sum.bytes += uint64(len(sealed) - sealOverhead)
			sum.maxSeq = max(sum.maxSeq, seq)
			if v := arrivals.Get(expiryKey(received, k)); !bytes.Equal(v, msgID[:]) {
				t.Errorf("message without its arrival (%x)", v)
			}
			if e, ok := s.idem.get(id, msgID); !ok || e.seq != seq {
				t.Errorf("idempotency key names seq %d for message seq %d (%v)", e.seq, seq, ok)
			}
			return nil
		}); err != nil {
			return err
		}
		// The index in memory is exactly the arrivals on disk.
		loaded := newIdemIndex()
		if err := loadIdem(tx, loaded); err != nil {
			return err
		}
		if !reflect.DeepEqual(loaded.boxes, s.idem.boxes) || loaded.keys != s.idem.keys {
			t.Errorf("idempotency index in memory (%d keys) is not what the arrivals load (%d keys)", s.idem.keys, loaded.keys)
		}
		if n := arrivals.Stats().KeyN; n != s.idem.keys || s.Stats().IdempotencyKeys != n {
			t.Errorf("%d arrivals, %d idempotency keys (stats %d)", n, s.idem.keys, s.Stats().IdempotencyKeys)
		}
		if messages > s.idem.keys {
			t.Errorf("%d messages but %d idempotency keys", messages, s.idem.keys)
		}
		// The key-slot file holds a key exactly for the stored messages,
		// every other slot is free, and the file on disk is the copy in
		// memory.
		s.updateMu.Lock()
		defer s.updateMu.Unlock()
		free := map[uint32]bool{}
		for _, f := range s.keys.free {
			if free[f] {
				t.Errorf("slot %d free twice", f)
			}
			free[f] = true
		}
		for i := range s.keys.slotCount() {
			_, filled := s.keys.key(uint32(i))
			if filled != slots[uint32(i)] || filled == free[uint32(i)] {
				t.Errorf("slot %d: filled %v, named by a message %v, free %v", i, filled, slots[uint32(i)], free[uint32(i)])
			}
		}
		if err := s.keys.writeDirty(); err != nil {
			return err
		}
		onDisk, err := os.ReadFile(s.keys.path)
		if err != nil {
			return err
		}
		if want := s.keys.slots; !bytes.Equal(onDisk[keyPage:], want[:min(len(want), len(onDisk)-keyPage)]) || !allZero(want[len(onDisk)-keyPage:]) {
			t.Errorf("the key-slot file differs from its copy in memory")
		}
		// The idle index holds one entry per mailbox, at its last-use day;
		// the totals in memory are the sums of the records.
		if n := tx.Bucket(bucketIdle).Stats().KeyN; n != len(got) {
			t.Errorf("%d idle index entries for %d mailboxes", n, len(got))
		}
		want, err := sumTotals(tx)
		if err != nil {
			return err
		}
		if tot, err := s.Totals(context.Background()); err != nil || tot != want {
			t.Errorf("totals in memory %+v (%v), the records sum to %+v", tot, err, want)
		}
		return tx.Bucket(bucketMailboxes).ForEach(func(k, v []byte) error {
			rec, _ := decodeMailbox(v)
			var id [MailboxIDSize]byte
			copy(id[:], k)
			if tx.Bucket(bucketIdle).Get(idleKey(rec.lastUsed, id)) == nil {
				t.Errorf("mailbox not in the idle index at its last-use day")
			}
			sum := got[id]
			if rec.count != sum.count || rec.bytes != sum.bytes {
				t.Errorf("mailbox counters %d msgs/%d bytes, stored %d/%d", rec.count, rec.bytes, sum.count, sum.bytes)
			}
			if rec.nextSeq <= sum.maxSeq {
				t.Errorf("next seq %d not above stored seq %d", rec.nextSeq, sum.maxSeq)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("invariants: %v", err)
	}
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "qpc")
	path := filepath.Join(dir, "store.db")
	s := openTest(t, path, Options{})
	mkMailbox(t, s)
	for _, c := range []struct {
		path string
		want os.FileMode
	}{
		{filepath.Dir(dir), 0o700 | os.ModeDir},
		{dir, 0o700 | os.ModeDir},
		{path, 0o600},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.want {
			t.Errorf("%s: mode %v, want %v", c.path, fi.Mode(), c.want)
		}
	}
	if s.db.NoSync {
		t.Errorf("bbolt NoSync is on: acknowledged writes would not be durable")
	}
}

func TestOpenOptions(t *testing.T) {
	for _, o := range []Options{
		{TimeGranularity: time.Millisecond},
		{TimeGranularity: 1500 * time.Millisecond},
		{MaxBatch: -1},
		{MaxEnvelope: -1},
		{MaxSize: -1},
		{OpenTimeout: -time.Second},
	} {
		path := filepath.Join(t.TempDir(), "x", "qpc.db")
		if s, err := Open(path, o); err == nil {
			s.Close()
			t.Errorf("Open(%+v) accepted invalid options", o)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Open with invalid options created the file")
		}
	}
}

func TestOpenLockedFileTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qpc.db")
	openTest(t, path, Options{})
	start := time.Now()
	s, err := Open(path, Options{OpenTimeout: 100 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("a second Open of a file in use succeeded")
	}
	if !errors.Is(err, ErrStorageFailed) || !errors.Is(err, berrors.ErrTimeout) {
		t.Errorf("second Open: %v, want storage failure by timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open waited %v despite a 100ms timeout", d)
	}
}

func TestOpenRefusesUnknownSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qpc.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, []byte{schemaVersion + 1})
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path, Options{}); err == nil {
		s.Close()
		t.Fatal("Open accepted a file of an unknown schema version")
	} else if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open: %v, want ErrCorrupt", err)
	}
}

func TestDurableAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qpc.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	boxes := []Mailbox{mkMailbox(t, s), mkMailbox(t, s), mkMailbox(t, s)}
	type sent struct {
		id  [MessageIDSize]byte
		env []byte
		seq uint64
	}
	var (
		mu   sync.Mutex
		kept = map[int][]sent{}
		wg   sync.WaitGroup
	)
	for b := range boxes {
		for range 4 {
			wg.Go(func() {
				for range 10 {
					id := mid()
					env := append([]byte("envelope "), id[:]...)
					r, err := s.Put(ctx, boxes[b].SendID, id, env, Quota{}, t0, nil)
					if err != nil {
						t.Errorf("Put: %v", err)
						return
					}
					mu.Lock()
					kept[b] = append(kept[b], sent{id, env, r.Seq})
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	// Ack the first five sent to mailbox 0, delete mailbox 2.
	var acked [][MessageIDSize]byte
	for _, m := range kept[0][:5] {
		acked = append(acked, m.id)
	}
	if n, err := s.Ack(ctx, boxes[0].ReceiveID, acked); err != nil || n != 5 {
		t.Fatalf("Ack: %d, %v", n, err)
	}
	kept[0] = kept[0][5:]
	if err := s.DeleteMailbox(ctx, boxes[2].ReceiveID); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, path, Options{})
	for b, box := range boxes[:2] {
		got, err := s.Mailbox(ctx, box.ReceiveID)
		box.LastUsed = fromUnix(dayOf(box.Created.Unix()))
		if err != nil || got != box {
			t.Fatalf("mailbox %d after reopen: %+v, %v", b, got, err)
		}
		msgs := mustFetch(t, s, box)
		if len(msgs) != len(kept[b]) {
			t.Fatalf("mailbox %d: %d messages after reopen, want %d", b, len(msgs), len(kept[b]))
		}
		bySeq := map[uint64]sent{}
		for _, m := range kept[b] {
			bySeq[m.seq] = m
		}
		for _, msg := range msgs {
			want, ok := bySeq[msg.Seq]
			if !ok || want.id != msg.ID || !bytes.Equal(want.env, msg.Envelope) {
				t.Fatalf("mailbox %d seq %d differs after reopen", b, msg.Seq)
			}
		}
	}
	if _, err := s.Mailbox(ctx, boxes[2].ReceiveID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted mailbox back after reopen: %v", err)
	}
	// Idempotency keys, seqs and counters survived too.
	if r := mustPut(t, s, boxes[0], acked[0], []byte("retry"), Quota{}, t0); !r.Duplicate {
		t.Fatalf("retry of an acked message after reopen stored again")
	}
	if r := mustPut(t, s, boxes[0], mid(), []byte("new"), Quota{}, t0); r.Seq != 41 {
		t.Fatalf("first seq after reopen %d, want 41", r.Seq)
	}
	_, err = s.Put(ctx, boxes[1].SendID, mid(), []byte("x"), Quota{MaxMessages: 40}, t0, nil)
	if !errors.Is(err, ErrQuotaCount) {
		t.Fatalf("count quota after reopen: %v", err)
	}
	checkInvariants(t, s)
}

// TestAckedWritesAreInTheFile copies the file while the store is still open,
// as a crash would leave it: every acknowledged write must be in the copy,
// not waiting for Close.
// TestSpendDurable: a Spend that returned is in the file: after a
// reopen the key is still refused, by Spend and by Put.
func TestSpendDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qpc.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spend := &Spend{Key: [SpendKeySize]byte{7}, Until: t0.Add(time.Hour)}
	if err := s.Spend(ctx, spend); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, Options{})
	if err := s.Spend(ctx, spend); !errors.Is(err, ErrSpent) {
		t.Fatalf("Spend after reopen: %v, want ErrSpent", err)
	}
	m := mkMailbox(t, s)
	if _, err := s.Put(ctx, m.SendID, mid(), []byte("x"), Quota{}, t0, spend); !errors.Is(err, ErrSpent) {
		t.Fatalf("Put after reopen: %v, want ErrSpent", err)
	}
}

func TestAckedWritesAreInTheFile(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, filepath.Join(dir, "qpc.db"), Options{})
	m := mkMailbox(t, s)
	id := mid()
	mustPut(t, s, m, id, []byte("durable"), Quota{}, t0)

	// The files as a crash would leave them: the key-slot file too.
	crash := filepath.Join(dir, "crash.db")
	for _, suffix := range []string{"", KeyFileSuffix} {
		data, err := os.ReadFile(filepath.Join(dir, "qpc.db"+suffix))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crash+suffix, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := openTest(t, crash, Options{})
	msgs := mustFetch(t, c, m)
	if len(msgs) != 1 || msgs[0].ID != id || string(msgs[0].Envelope) != "durable" {
		t.Fatalf("acknowledged message missing from the file: %d messages", len(msgs))
	}
}

func TestGroupCommitBatchesConcurrentWriters(t *testing.T) {
	var (
		mu    sync.Mutex
		infos []CommitInfo
	)
	s := openTest(t, "", Options{OnCommit: func(ci CommitInfo) {
		mu.Lock()
		infos = append(infos, ci)
		mu.Unlock()
	}})
	m := mkMailbox(t, s)
	before := s.Stats()
	const writers, each = 64, 20
	began := time.Now()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				if _, err := s.Put(context.Background(), m.SendID, mid(), make([]byte, 2048), Quota{}, t0, nil); err != nil {
					t.Errorf("Put: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(began)
	st := s.Stats()
	ops, commits := st.Ops-before.Ops, st.Commits-before.Commits
	// Every op spent its whole transaction in OpTxn, so OpTxn lies between
	// the transactions' total time and that times the largest batch; with
	// 64 writers some waited for the writer, and every one was woken.
	txn, queued, wake := st.OpTxn-before.OpTxn, st.OpQueued-before.OpQueued, st.OpWake-before.OpWake
	busy := st.CommitTime - before.CommitTime
	if txn < busy || txn > busy*time.Duration(st.LargestBatch) || queued <= 0 || wake <= 0 {
		t.Fatalf("op stages: txn %v queued %v wake %v for %v in transactions", txn, queued, wake, busy)
	}
	// A 2 KiB message does not share its leaf page, so each Put writes
	// at least one page.
	if pages := st.PagesWritten - before.PagesWritten; pages < int64(ops) || st.PageSize < 1024 {
		t.Fatalf("%d pages of %d bytes written for %d Puts", pages, st.PageSize, ops)
	}
	if per := (txn + queued + wake) / time.Duration(ops); per > wall {
		t.Fatalf("an op's stages add up to %v, longer than the whole run (%v)", per, wall)
	}
	if ops != writers*each {
		t.Fatalf("Stats counted %d ops, want %d", ops, writers*each)
	}
	if commits >= ops {
		t.Fatalf("%d commits for %d ops: no batching", commits, ops)
	}
	if st.LargestBatch < 2 || st.CommitTime <= 0 || st.FailedCommits != 0 || st.Queued != 0 {
		t.Fatalf("implausible stats %+v", st)
	}
	t.Logf("%d ops in %d commits (mean batch %.1f, largest %d, mean commit %v)",
		ops, commits, float64(ops)/float64(commits), st.LargestBatch, st.CommitTime/time.Duration(st.Commits))
	mu.Lock()
	defer mu.Unlock()
	sum := 0
	for _, ci := range infos {
		if ci.Err != nil || ci.Ops < 1 || ci.Duration <= 0 {
			t.Fatalf("OnCommit got %+v", ci)
		}
		sum += ci.Ops
	}
	if uint64(len(infos)) != st.Commits || uint64(sum) != st.Ops {
		t.Fatalf("OnCommit saw %d commits/%d ops, Stats %d/%d", len(infos), sum, st.Commits, st.Ops)
	}
	if msgs := mustFetch(t, s, m); len(msgs) != writers*each {
		t.Fatalf("%d messages stored", len(msgs))
	}
}

// TestGroupCommitTakesWholeQueue lines up operations behind a parked writer:
// they must all land in the next transaction, up to MaxBatch.
func TestGroupCommitTakesWholeQueue(t *testing.T) {
	for _, c := range []struct{ maxBatch, queued, wantCommits int }{
		{256, 64, 1},
		{8, 32, 4}, // the queue holds 4×MaxBatch
	} {
		s := openTest(t, "", Options{MaxBatch: c.maxBatch})
		m := mkMailbox(t, s)
		release := blockWriter(t, s)
		before := s.Stats()
		var wg sync.WaitGroup
		for range c.queued {
			wg.Go(func() {
				if _, err := s.Put(context.Background(), m.SendID, mid(), []byte("x"), Quota{}, t0, nil); err != nil {
					t.Errorf("Put: %v", err)
				}
			})
		}
		waitQueued(t, s, c.queued)
		release() // commits the blocking op alone
		wg.Wait()
		st := s.Stats()
		if got := int(st.Commits - before.Commits - 1); got != c.wantCommits {
			t.Errorf("MaxBatch %d: %d queued ops took %d commits, want %d", c.maxBatch, c.queued, got, c.wantCommits)
		}
		if st.LargestBatch != min(c.maxBatch, c.queued) {
			t.Errorf("MaxBatch %d: largest batch %d", c.maxBatch, st.LargestBatch)
		}
		if msgs := mustFetch(t, s, m); len(msgs) != c.queued {
			t.Errorf("%d messages stored, want %d", len(msgs), c.queued)
		}
	}
}

// TestFailedTransaction provokes a real bbolt failure: with MaxSize set, a
// transaction that needs to grow the file past it fails at commit with
// ErrMaxSizeReached. Every operation that shared that transaction must
// report ErrStorageFailed, none of them may be applied, and the store must
// go on working.
func TestFailedTransaction(t *testing.T) {
	var logs lockedBuffer
	s := openTest(t, "", Options{MaxSize: 1 << 20, MaxEnvelope: 4 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	m, full := mkMailbox(t, s), mkMailbox(t, s)
	mustPut(t, s, m, mid(), []byte("before"), Quota{}, t0)
	fullID := mid()
	mustPut(t, s, full, fullID, []byte("full"), Quota{}, t0)
	before := s.Stats()

	release := blockWriter(t, s)
	newBox := Mailbox{ReceiveID: rid(t), SendID: rid(t), Created: t0}
	small := mid()
	errs := make([]error, 6)
	var wg sync.WaitGroup
	wg.Go(func() { _, errs[0] = s.Put(ctx, m.SendID, small, []byte("small"), Quota{}, t0, nil) })
	waitQueued(t, s, 1)
	wg.Go(func() { _, errs[1] = s.Put(ctx, full.SendID, mid(), []byte("refused"), Quota{MaxMessages: 1}, t0, nil) })
	waitQueued(t, s, 2)
	wg.Go(func() { errs[2] = s.CreateMailbox(ctx, newBox, nil) })
	waitQueued(t, s, 3)
	// The idempotency index is changed by the transaction too: a key
	// added (small), a mailbox's keys dropped (full), and one added to a
	// mailbox created in the same transaction.
	wg.Go(func() { errs[3] = s.DeleteMailbox(ctx, full.ReceiveID) })
	waitQueued(t, s, 4)
	wg.Go(func() { _, errs[4] = s.Put(ctx, newBox.SendID, small, []byte("new"), Quota{}, t0, nil) })
	waitQueued(t, s, 5)
	wg.Go(func() { _, errs[5] = s.Put(ctx, m.SendID, mid(), make([]byte, 2<<20), Quota{}, t0, nil) })
	waitQueued(t, s, 6)
	keys := s.Stats().IdempotencyKeys
	release()
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrStorageFailed) || !errors.Is(err, berrors.ErrMaxSizeReached) {
			t.Errorf("op %d in the failed transaction: %v, want ErrStorageFailed (max size)", i, err)
		}
	}
	st := s.Stats()
	if st.FailedCommits != before.FailedCommits+1 || st.FailedOps != before.FailedOps+6 {
		t.Errorf("stats after failure: %+v", st)
	}

	// The failure is logged, without naming any mailbox.
	logged := logs.String()
	if !strings.Contains(logged, "write transaction failed") {
		t.Errorf("failure not logged: %q", logged)
	}
	for _, id := range [][MailboxIDSize]byte{m.ReceiveID, m.SendID, full.ReceiveID, full.SendID, newBox.ReceiveID, newBox.SendID} {
		if strings.Contains(logged, hex.EncodeToString(id[:])) || strings.Contains(logged, base64.RawURLEncoding.EncodeToString(id[:])) || bytes.Contains([]byte(logged), id[:]) {
			t.Errorf("log names a mailbox ID: %q", logged)
		}
	}

	// Nothing of it was applied...
	msgs := mustFetch(t, s, m)
	if len(msgs) != 1 || string(msgs[0].Envelope) != "before" {
		t.Fatalf("failed transaction left %d messages", len(msgs))
	}
	if _, err := s.Mailbox(ctx, newBox.ReceiveID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("mailbox of the failed transaction exists: %v", err)
	}
	// ...nor to the idempotency index...
	if k := s.Stats().IdempotencyKeys; k != keys {
		t.Errorf("%d idempotency keys after the failed transaction, %d before", k, keys)
	}
	if r := mustPut(t, s, full, fullID, []byte("full"), Quota{}, t0); !r.Duplicate || r.Seq != 1 {
		t.Fatalf("retry of a message the failed delete had dropped: %+v", r)
	}
	// ...and the store works: the same operations succeed now, with the
	// seq the failed Put had been given (its counter update was rolled back).
	if r := mustPut(t, s, m, small, []byte("small"), Quota{}, t0); r.Duplicate || r.Seq != 2 {
		t.Fatalf("retry after failure: %+v", r)
	}
	if err := s.CreateMailbox(ctx, newBox, nil); err != nil {
		t.Fatalf("CreateMailbox after failure: %v", err)
	}
	if _, err := s.Put(ctx, full.SendID, mid(), []byte("refused"), Quota{MaxMessages: 1}, t0, nil); !errors.Is(err, ErrQuotaCount) {
		t.Fatalf("quota after failure: %v", err)
	}
	checkInvariants(t, s)
}

// TestRefusalDoesNotAbortBatch puts refusals and successes into one
// transaction: the refusals must not cost the others their write.
func TestRefusalDoesNotAbortBatch(t *testing.T) {
	s := openTest(t, "", Options{})
	ctx := context.Background()
	m, corrupt := mkMailbox(t, s), mkMailbox(t, s)
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMailboxes).Put(corrupt.ReceiveID[:], []byte{recordV1, 1, 2})
	}); err != nil {
		t.Fatal(err)
	}
	release := blockWriter(t, s)
	type result struct {
		err    error
		wantOK bool
		want   error
	}
	ops := []func() result{
		func() result {
			_, err := s.Put(ctx, m.SendID, mid(), []byte("a"), Quota{}, t0, nil)
			return result{err, true, nil}
		},
		func() result {
			_, err := s.Put(ctx, m.SendID, mid(), []byte("b"), Quota{MaxMessages: 1}, t0, nil)
			return result{err, false, ErrQuotaCount}
		},
		func() result {
			_, err := s.Put(ctx, corrupt.SendID, mid(), []byte("c"), Quota{}, t0, nil)
			return result{err, false, ErrCorrupt}
		},
		func() result { return result{s.CreateMailbox(ctx, m, nil), false, ErrExists} },
		func() result {
			_, err := s.Put(ctx, rid(t), mid(), []byte("d"), Quota{}, t0, nil)
			return result{err, false, ErrNotFound}
		},
		func() result {
			_, err := s.Put(ctx, m.SendID, mid(), []byte("e"), Quota{}, t0, nil)
			return result{err, true, nil}
		},
	}
	results := make([]result, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Go(func() { results[i] = op() })
		waitQueued(t, s, i+1) // keep their order in the transaction
	}
	before := s.Stats()
	release()
	wg.Wait()
	for i, r := range results {
		if r.wantOK && r.err != nil || !r.wantOK && !errors.Is(r.err, r.want) {
			t.Errorf("op %d: %v, want %v", i, r.err, r.want)
		}
		if errors.Is(r.err, ErrQuotaCount) && errors.Is(r.err, ErrStorageFailed) {
			t.Errorf("a refusal reported a storage failure")
		}
	}
	if st := s.Stats(); st.Commits != before.Commits+2 || st.FailedCommits != 0 {
		t.Errorf("expected one commit for the blocker and one for the batch: %+v", st)
	}
	if msgs := mustFetch(t, s, m); len(msgs) != 2 || string(msgs[0].Envelope) != "a" || string(msgs[1].Envelope) != "e" {
		t.Fatalf("batch with refusals stored %d messages", len(msgs))
	}
}

func TestCancelWhileQueued(t *testing.T) {
	s := openTest(t, "", Options{})
	m := mkMailbox(t, s)
	release := blockWriter(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	id := mid()
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, m.SendID, id, []byte("abandoned"), Quota{}, t0, nil)
		done <- err
	}()
	waitQueued(t, s, 1)
	cancel()
	// The caller returns at once although the writer is still parked.
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Put: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled Put did not return while queued")
	}
	release()
	// The abandoned op must never run: a later Put of the same ID is new.
	if r := mustPut(t, s, m, id, []byte("real"), Quota{}, t0); r.Duplicate || r.Seq != 1 {
		t.Fatalf("abandoned Put was applied: %+v", r)
	}
}

func TestCancelAfterTakenWaitsForCommit(t *testing.T) {
	s := openTest(t, "", Options{})
	m := mkMailbox(t, s)
	release1 := blockWriter(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, m.SendID, mid(), []byte("taken"), Quota{}, t0, nil)
		done <- err
	}()
	waitQueued(t, s, 1)
	// A second blocker queued behind the Put shares its transaction and
	// parks the writer after the Put ran but before the commit.
	entered, rel2, done2 := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done2 <- s.do(context.Background(), func(*txn) error { close(entered); <-rel2; return nil })
	}()
	waitQueued(t, s, 2)
	release1()
	<-entered
	cancel()
	select {
	case err := <-done:
		t.Fatalf("a taken Put returned before its commit: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(rel2)
	if err := <-done; err != nil {
		t.Fatalf("taken Put whose ctx was cancelled: %v, want success (it was committed)", err)
	}
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	if msgs := mustFetch(t, s, m); len(msgs) != 1 {
		t.Fatalf("%d messages stored, want the taken one", len(msgs))
	}
}

func TestCloseFlushesQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qpc.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := mkMailbox(t, s)
	release := blockWriter(t, s)
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := s.Put(context.Background(), m.SendID, mid(), []byte("queued"), Quota{}, t0, nil)
			errs <- err
		}()
	}
	waitQueued(t, s, n)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for !s.shut.Load() {
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Put(context.Background(), m.SendID, mid(), []byte("late"), Quota{}, t0, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put during Close: %v, want ErrClosed", err)
	}
	// Reads after Close began get ErrClosed, never a bbolt error.
	if _, err := s.Mailbox(context.Background(), m.ReceiveID); !errors.Is(err, ErrClosed) {
		t.Fatalf("Mailbox during Close: %v", err)
	}
	release()
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("queued Put during Close: %v", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openTest(t, path, Options{})
	if msgs := mustFetch(t, s, m); len(msgs) != n {
		t.Fatalf("%d of %d queued messages survived Close", len(msgs), n)
	}
}

func TestReadsDoNotWaitForWriter(t *testing.T) {
	s := openTest(t, "", Options{})
	m := mkMailbox(t, s)
	mustPut(t, s, m, mid(), []byte("x"), Quota{}, t0)
	blockWriter(t, s)
	done := make(chan error, 1)
	go func() {
		if _, err := s.Mailbox(context.Background(), m.ReceiveID); err != nil {
			done <- err
			return
		}
		_, _, err := s.Fetch(context.Background(), m.ReceiveID, 0, 10, t0)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reads blocked behind the writer")
	}
}

func TestTooLarge(t *testing.T) {
	s := openTest(t, "", Options{MaxEnvelope: 1024})
	m := mkMailbox(t, s)
	if _, err := s.Put(context.Background(), m.SendID, mid(), make([]byte, 1025), Quota{}, t0, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put of 1025 bytes: %v, want ErrTooLarge", err)
	}
	mustPut(t, s, m, mid(), make([]byte, 1024), Quota{}, t0)
	mustPut(t, s, m, mid(), nil, Quota{}, t0) // empty is not malformed here
	if msgs := mustFetch(t, s, m); len(msgs) != 2 || len(msgs[0].Envelope) != 1024 || len(msgs[1].Envelope) != 0 {
		t.Fatalf("stored %d messages", len(msgs))
	}
}

// TestTimesAreCoarseOnDisk checks the file itself never holds a precise time.
func TestTimesAreCoarseOnDisk(t *testing.T) {
	s := openTest(t, "", Options{TimeGranularity: time.Hour})
	exact := time.Date(2026, 3, 1, 12, 34, 56, 789, time.UTC)
	coarse := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := Mailbox{ReceiveID: rid(t), SendID: rid(t), Created: exact}
	if err := s.CreateMailbox(context.Background(), m, nil); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, m, mid(), []byte("x"), Quota{}, exact)
	got, err := s.Mailbox(context.Background(), m.ReceiveID)
	if err != nil || !got.Created.Equal(coarse) {
		t.Fatalf("Created %v (%v), want %v", got.Created, err, coarse)
	}
	msgs := mustFetch(t, s, m)
	if len(msgs) != 1 || !msgs[0].ReceivedAt.Equal(coarse) {
		t.Fatalf("ReceivedAt %v, want %v", msgs[0].ReceivedAt, coarse)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				for _, blob := range [][]byte{k, v} {
					for i := 0; i+8 <= len(blob); i++ {
						sec := int64(binary.BigEndian.Uint64(blob[i:]))
						if sec == exact.Unix() || sec^(-1<<63) == exact.Unix() {
							t.Errorf("bucket %s holds the exact time", name)
						}
					}
				}
				return nil
			})
		})
	}); err != nil {
		t.Fatal(err)
	}
}

func TestPurgeInChunks(t *testing.T) {
	s := openTest(t, "", Options{})
	m, other := mkMailbox(t, s), mkMailbox(t, s)
	const n = 2*purgeChunk + 100
	// Fill in a single transaction through the same code Put uses, to keep
	// the test fast; the purge below goes through the writer as usual.
	if err := s.update(func(tx *txn) error {
		for i := range n {
			box := m
			if i%2 == 1 {
				box = other
			}
			var res PutResult
			if err := s.putOp(box.SendID, mid(), []byte("old"), Quota{}, t0, nil, &res)(tx); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	fresh := mustPut(t, s, m, mid(), []byte("fresh"), Quota{}, t0.Add(time.Hour))
	before := s.Stats()
	purged, err := s.PurgeExpired(context.Background(), t0.Add(time.Hour), time.Minute)
	if err != nil || purged != n {
		t.Fatalf("PurgeExpired: %d, %v; want %d", purged, err, n)
	}
	// 3 chunks of arrivals and one (empty) spent-set chunk, each its own
	// transaction.
	if c := s.Stats().Commits - before.Commits; c != 4 {
		t.Errorf("purge took %d transactions, want 4", c)
	}
	msgs := mustFetch(t, s, m)
	if len(msgs) != 1 || msgs[0].Seq != fresh.Seq {
		t.Fatalf("%d messages left, want the fresh one", len(msgs))
	}
	if len(mustFetch(t, s, other)) != 0 {
		t.Fatal("other mailbox kept expired messages")
	}
	checkInvariants(t, s)
	if k := s.Stats().IdempotencyKeys; k != 1 {
		t.Errorf("%d idempotency keys left, want 1", k)
	}
}

// TestCountersStayExact runs a random mix of every mutation and checks the
// stored counters against the stored messages after each round.
func TestCountersStayExact(t *testing.T) {
	s := openTest(t, "", Options{})
	ctx := context.Background()
	boxes := []Mailbox{mkMailbox(t, s), mkMailbox(t, s), mkMailbox(t, s)}
	var sent [][MessageIDSize]byte
	now := t0
	for round := range 6 {
		var wg sync.WaitGroup
		for b := range boxes {
			wg.Go(func() {
				for i := range 15 {
					id := mid()
					if i%5 == 4 && len(sent) > 0 {
						id = sent[i%len(sent)] // retries, sometimes of another box's ID
					}
					_, err := s.Put(ctx, boxes[b].SendID, id, make([]byte, 10*(i+1)), Quota{MaxMessages: 30, MaxBytes: 2000}, now, nil)
					if err != nil && !errors.Is(err, ErrQuotaCount) && !errors.Is(err, ErrQuotaBytes) {
						t.Errorf("Put: %v", err)
					}
				}
			})
		}
		wg.Wait()
		for _, b := range boxes {
			msgs := mustFetch(t, s, b)
			var ids [][MessageIDSize]byte
			for i, msg := range msgs {
				sent = append(sent, msg.ID)
				if i%3 == 0 {
					ids = append(ids, msg.ID)
				}
			}
			if _, err := s.Ack(ctx, b.ReceiveID, append(ids, ids...)); err != nil {
				t.Fatal(err)
			}
		}
		if round == 3 {
			if err := s.DeleteMailbox(ctx, boxes[2].ReceiveID); err != nil {
				t.Fatal(err)
			}
			boxes[2] = mkMailbox(t, s)
		}
		if _, err := s.PurgeExpired(ctx, now, 90*time.Minute); err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, s)
		now = now.Add(time.Hour)
	}
}

func TestCorruptValuesAreErrors(t *testing.T) {
	ctx := context.Background()
	corrupt := func(t *testing.T, s *Bolt, bucket, key, value []byte) {
		t.Helper()
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, value) }); err != nil {
			t.Fatal(err)
		}
	}
	wantCorrupt := func(t *testing.T, what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrStorageFailed) {
			t.Errorf("%s: %v, want ErrCorrupt", what, err)
		}
	}
	t.Run("Mailbox", func(t *testing.T) {
		for _, v := range [][]byte{{}, {recordV1}, append([]byte{2}, make([]byte, mailboxRecordSize-1)...), make([]byte, mailboxRecordSize+1)} {
			s := openTest(t, "", Options{})
			m := mkMailbox(t, s)
			mustPut(t, s, m, mid(), []byte("x"), Quota{}, t0)
			corrupt(t, s, bucketMailboxes, m.ReceiveID[:], v)
			_, err := s.Mailbox(ctx, m.ReceiveID)
			wantCorrupt(t, "Mailbox", err)
			_, err = s.Put(ctx, m.SendID, mid(), []byte("x"), Quota{}, t0, nil)
			wantCorrupt(t, "Put", err)
			_, err = s.Ack(ctx, m.ReceiveID, [][MessageIDSize]byte{mid()})
			wantCorrupt(t, "Ack", err)
			wantCorrupt(t, "DeleteMailbox", s.DeleteMailbox(ctx, m.ReceiveID))
			_, err = s.PurgeExpired(ctx, t0.Add(time.Hour), time.Minute)
			wantCorrupt(t, "PurgeExpired", err)
		}
	})
	t.Run("Message", func(t *testing.T) {
		s := openTest(t, "", Options{})
		m := mkMailbox(t, s)
		id := mid()
		r := mustPut(t, s, m, id, []byte("x"), Quota{}, t0)
		corrupt(t, s, bucketMessages, messageKey(m.ReceiveID, r.Seq), []byte{recordV1, 1})
		_, _, err := s.Fetch(ctx, m.ReceiveID, 0, 10, t0)
		wantCorrupt(t, "Fetch", err)
		_, err = s.Ack(ctx, m.ReceiveID, [][MessageIDSize]byte{id})
		wantCorrupt(t, "Ack", err)
		wantCorrupt(t, "DeleteMailbox", s.DeleteMailbox(ctx, m.ReceiveID))
	})
	t.Run("Arrival", func(t *testing.T) {
		// The arrivals are read whole at Open (into the idempotency
		// index): a corrupt one refuses the file rather than forget a
		// key and store a retried message twice.
		path := filepath.Join(t.TempDir(), "qpc.db")
		for _, bad := range []struct{ key, value []byte }{
			{arrival{rid: rid(t), seq: 1, id: mid()}.key(), []byte{1, 2}},
			{arrival{rid: rid(t), seq: 0, id: mid()}.key(), make([]byte, MessageIDSize)},
			{[]byte{0}, make([]byte, MessageIDSize)},
		} {
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			m := mkMailbox(t, s)
			mustPut(t, s, m, mid(), []byte("x"), Quota{}, t0)
			corrupt(t, s, bucketArrivals, bad.key, bad.value)
			// While open, the purge that walks it refuses it too.
			_, err = s.PurgeExpired(ctx, t0.Add(1000*time.Hour), time.Minute)
			wantCorrupt(t, "PurgeExpired", err)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open accepted the arrival %x -> %x", bad.key, bad.value)
			}
			wantCorrupt(t, "Open", err)
			// Repair: remove it, and everything else is as it was.
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketArrivals).Delete(bad.key) }); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err = Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(mustFetch(t, s, m)) != 1 {
				t.Fatal("the good message is gone")
			}
			checkInvariants(t, s)
			s.Close()
		}
	})
	t.Run("SendIndex", func(t *testing.T) {
		s := openTest(t, "", Options{})
		m := mkMailbox(t, s)
		corrupt(t, s, bucketSendIDs, m.SendID[:], []byte{recordV1})
		_, err := s.Put(ctx, m.SendID, mid(), []byte("x"), Quota{}, t0, nil)
		wantCorrupt(t, "Put", err)
		dangling := rid(t)
		corrupt(t, s, bucketSendIDs, dangling[:], encodeSendRecord(rid(t)))
		_, err = s.Put(ctx, dangling, mid(), []byte("x"), Quota{}, t0, nil)
		wantCorrupt(t, "Put via dangling index", err)
	})
	t.Run("ExpiryKey", func(t *testing.T) {
		s := openTest(t, "", Options{})
		corrupt(t, s, bucketSpentExp, []byte{0}, nil)
		_, err := s.PurgeExpired(ctx, t0, time.Minute)
		wantCorrupt(t, "PurgeExpired", err)
	})
}

// FuzzDecode feeds arbitrary bytes to every decoder: each must either
// refuse them with ErrCorrupt or accept a value that encodes back to the
// same bytes; none may panic. Its seeds run as part of go test.
func FuzzDecode(f *testing.F) {
	rec := mailboxRecord{nextSeq: 7, count: 3, bytes: 99, created: -5}
	f.Add(rec.encode())
	f.Add(encodeSendRecord([MailboxIDSize]byte{1}))
	f.Add(encodeMessage([MessageIDSize]byte{2}, 1234, 77, make([]byte, sealOverhead+3)))
	f.Add(encodeMessageV1([MessageIDSize]byte{2}, 1234, []byte("env")))
	f.Add(keyFileHeader([keyFileIDSize]byte{5}, stateClean, 9))
	f.Add(append(arrival{rid: [MailboxIDSize]byte{3}, seq: 9, received: 1234, id: [MessageIDSize]byte{4}}.key(), make([]byte, MessageIDSize)...))
	f.Add(encodeEnvelopeLimit(131035))
	f.Add([]byte{})
	f.Add([]byte{recordV1})
	f.Add([]byte{0xff, 0, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		check := func(name string, err error, re func() []byte) {
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: error %v is not ErrCorrupt", name, err)
				}
				return
			}
			if !bytes.Equal(re(), v) {
				t.Fatalf("%s: accepted %x but re-encodes differently", name, v)
			}
		}
		r, err := decodeMailbox(v)
		check("mailbox", err, r.encode)
		id, err := decodeSendRecord(v)
		check("send index", err, func() []byte { return encodeSendRecord(id) })
		msgID, received, slot, sealed, err := decodeMessage(v)
		check("message", err, func() []byte { return encodeMessage(msgID, received, slot, sealed) })
		msgID, received, env, err := decodeMessageV1(v)
		check("message v1", err, func() []byte { return encodeMessageV1(msgID, received, env) })
		// A header is a whole page: the input is its start, zeros the rest.
		if len(v) <= keyPage {
			page := make([]byte, keyPage)
			copy(page, v)
			fid, state, gen, err := decodeKeyFileHeader(page)
			check("key file header", err, func() []byte { return keyFileHeader(fid, state, gen)[:len(v)] })
		}
		// An arrival is a key and a value: split where the key ends.
		k, av := v[:min(len(v), arrivalKeySize)], v[min(len(v), arrivalKeySize):]
		a, err := decodeArrival(k, av)
		check("arrival", err, func() []byte { return append(a.key(), a.id[:]...) })
		limit, err := decodeEnvelopeLimit(v)
		check("envelope limit", err, func() []byte { return encodeEnvelopeLimit(int(limit)) })
	})
}

// TestOpenRefusesEnvelopesOverLimit: a store filled under a larger
// envelope limit (a larger padding policy) is refused when reopened under
// a limit that an envelope it still holds exceeds, with the figures an
// operator needs, and nothing in it is lost: reopened under the old limit
// every message is there. Once the long envelope is acked, the smaller
// limit opens.
func TestOpenRefusesEnvelopesOverLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qpc.db")
	s, err := Open(path, Options{MaxEnvelope: 4096})
	if err != nil {
		t.Fatal(err)
	}
	m := mkMailbox(t, s)
	long, short := mid(), mid()
	mustPut(t, s, m, long, make([]byte, 3000), Quota{}, t0)
	mustPut(t, s, m, short, make([]byte, 100), Quota{}, t0.Add(time.Hour))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	_, err = Open(path, Options{MaxEnvelope: 2000})
	var over *OversizeError
	if !errors.Is(err, ErrOversize) || !errors.As(err, &over) {
		t.Fatalf("Open under a smaller limit: %v, want ErrOversize", err)
	}
	if over.Count != 1 || over.Largest != 3000 || over.Limit != 2000 || !over.Newest.Equal(t0) {
		t.Fatalf("refusal %+v, want 1 envelope of 3000 bytes over 2000, received %v", over, t0)
	}
	for _, want := range []string{"1 stored envelopes", "limit of 2000 bytes", "longest 3000 bytes", "2026-03-01"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}

	s = openTest(t, path, Options{MaxEnvelope: 4096})
	msgs := mustFetch(t, s, m)
	if len(msgs) != 2 || msgs[0].ID != long || len(msgs[0].Envelope) != 3000 || msgs[1].ID != short {
		t.Fatalf("after the refusal the store holds %d messages", len(msgs))
	}
	if _, err := s.Ack(context.Background(), m.ReceiveID, [][MessageIDSize]byte{long}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, Options{MaxEnvelope: 2000})
	if msgs := mustFetch(t, s, m); len(msgs) != 1 || msgs[0].ID != short {
		t.Fatalf("under the smaller limit the store holds %d messages", len(msgs))
	}
}

// TestOpenEnvelopeLimitRecord: the recorded limit is checked like every
// stored value; a wrong length is corruption, not a guess.
func TestOpenEnvelopeLimitRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qpc.db")
	s := openTest(t, path, Options{})
	if err := s.do(context.Background(), func(tx *txn) error {
		return tx.Bucket(bucketMeta).Put(keyEnvelopeLimit, []byte{1, 2, 3})
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a 3-byte envelope limit: %v, want ErrCorrupt", err)
	}
}

// TestUpgradeFromSchema1 opens testdata/schema1.db, a file written by the
// schema 1 store (commit 38a4a6e): mailbox a with messages a1, a2 (acked)
// and a3 sent an hour apart, mailbox b with b1 under the same message ID
// as a1. The upgrade must keep every message and every idempotency key,
// drop schema 1's derived buckets, and leave a file that works.
func TestUpgradeFromSchema1(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "schema1.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "qpc.db")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	fill := func(b byte) (x [32]byte) {
		for i := range x {
			x[i] = b
		}
		return
	}
	id := func(b byte) (x [MessageIDSize]byte) {
		copy(x[:], bytes.Repeat([]byte{b}, MessageIDSize))
		return
	}
	a := Mailbox{ReceiveID: fill(0xa1), SendID: fill(0xb1), OwnerKey: fill(0xc1)}
	b := Mailbox{ReceiveID: fill(0xb1), SendID: fill(0xc1), OwnerKey: fill(0xd1)}
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

	var logs lockedBuffer
	s := openTest(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !strings.Contains(logs.String(), "schema 1 to 4") {
		t.Errorf("upgrade not logged: %q", logs.String())
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySchema); !bytes.Equal(v, []byte{schemaVersion}) {
			t.Errorf("schema after upgrade: %v", v)
		}
		if tx.Bucket(bucketMeta).Get(keyCompact) != nil {
			t.Errorf("the compaction is still marked due")
		}
		for _, name := range schema1Dropped {
			if tx.Bucket(name) != nil {
				t.Errorf("bucket %s survived the upgrade", name)
			}
		}
		return nil
	})
	checkInvariants(t, s)
	if k := s.Stats().IdempotencyKeys; k != 4 {
		t.Errorf("%d idempotency keys, want 4 (a1, a2 acked, a3, b1)", k)
	}
	var got []string
	for _, m := range []Mailbox{a, b} {
		for _, msg := range mustFetch(t, s, m) {
			got = append(got, fmt.Sprintf("%s@%d", msg.Envelope, msg.Seq))
		}
	}
	if want := "a1@1 a3@3 b1@1"; strings.Join(got, " ") != want {
		t.Fatalf("messages after upgrade: %v, want %s", got, want)
	}
	// Every retry, of the acked message too, is still a duplicate.
	for _, c := range []struct {
		m   Mailbox
		id  byte
		seq uint64
	}{{a, 1, 1}, {a, 2, 2}, {a, 3, 3}, {b, 1, 1}} {
		if r := mustPut(t, s, c.m, id(c.id), []byte("retry"), Quota{}, t0); !r.Duplicate || r.Seq != c.seq {
			t.Errorf("retry of %x in %x: %+v", c.id, c.m.ReceiveID[0], r)
		}
	}
	// New messages continue the sequence; acks and the purge work.
	if r := mustPut(t, s, a, mid(), []byte("a4"), Quota{}, t0.Add(3*time.Hour)); r.Duplicate || r.Seq != 4 {
		t.Fatalf("new message after upgrade: %+v", r)
	}
	if n, err := s.Ack(context.Background(), a.ReceiveID, [][MessageIDSize]byte{id(3)}); err != nil || n != 1 {
		t.Fatalf("Ack after upgrade: %d, %v", n, err)
	}
	// What arrived at t0 (a1, b1) expires; the keys of a2, a3 and a4 stay.
	n, err := s.PurgeExpired(context.Background(), t0.Add(90*time.Minute), time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("PurgeExpired after upgrade: %d, %v; want 2 (a1, b1)", n, err)
	}
	if k := s.Stats().IdempotencyKeys; k != 3 {
		t.Errorf("%d idempotency keys after the purge, want 3 (a2, a3, a4)", k)
	}
	checkInvariants(t, s)
	// And it opens again as schema 3, with nothing to upgrade.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs = lockedBuffer{}
	s = openTest(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if strings.Contains(logs.String(), "upgraded") {
		t.Errorf("second open upgraded again: %q", logs.String())
	}
	if msgs := mustFetch(t, s, a); len(msgs) != 1 || string(msgs[0].Envelope) != "a4" {
		t.Fatalf("after reopen mailbox a holds %d messages", len(msgs))
	}
	checkInvariants(t, s)
}
