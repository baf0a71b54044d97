package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// createMany creates n mailboxes at created, 32 at a time (group commit).
func createMany(t testing.TB, s *Bolt, n int, created time.Time) []Mailbox {
	t.Helper()
	out := make([]Mailbox, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	work := make(chan int)
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				var m Mailbox
				fillRandom(m.ReceiveID[:], m.SendID[:], m.OwnerKey[:])
				m.Created = created
				if err := s.CreateMailbox(context.Background(), m, nil); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				out[i] = m
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("CreateMailbox: %v", errs[0])
	}
	return out
}

// TestAttackIdleMailboxesLeaveNothing: a stranger creates more mailboxes
// than a purge chunk holds, puts a message in some, and never fetches. An
// honest owner fetches from hers now and then. After the idle TTL the
// purge deletes every one of the stranger's mailboxes with their
// messages, their key slots (zeroed in the file) and idempotency keys;
// the honest mailbox, and the one a live subscription keeps, stay.
func TestAttackIdleMailboxesLeaveNothing(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "qpc.db")
	s := openTest(t, path, Options{})
	// More than one purge transaction's worth (about purgeChunk keys,
	// three per empty mailbox).
	const strangers = purgeChunk/2 + 200
	day0 := fromUnix(dayOf(t0.Unix()))
	stranger := createMany(t, s, strangers, t0)
	honest, subscribed := mkMailbox(t, s), mkMailbox(t, s)
	env := bytes.Repeat([]byte("stranger's envelope "), 100)
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Put(ctx, stranger[i].SendID, mid(), env, Quota{}, t0, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	mustPut(t, s, honest, mid(), []byte("for the owner"), Quota{}, t0)
	if got := s.Stats().KeySlots; got < 301 {
		t.Fatalf("%d key slots for 301 messages", got)
	}

	const ttl = 30 * 24 * time.Hour
	// Day 20: the honest owner fetches (one write: the day of use).
	commits := s.Stats().Commits
	if _, _, err := s.Fetch(ctx, honest.ReceiveID, 0, 10, t0.Add(20*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, _, err := s.Fetch(ctx, honest.ReceiveID, 0, 10, t0.Add(20*24*time.Hour+time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if c := s.Stats().Commits - commits; c != 1 {
		t.Errorf("six fetches on one day made %d commits, want 1", c)
	}
	if m, _ := s.Mailbox(ctx, honest.ReceiveID); !m.LastUsed.Equal(day0.Add(20 * 24 * time.Hour)) {
		t.Errorf("honest mailbox last used %v, want day 20", m.LastUsed)
	}

	// Just before the TTL has passed since the end of day 0: nothing goes.
	keep := func(rid [MailboxIDSize]byte) bool { return rid == subscribed.ReceiveID }
	var gone [][MailboxIDSize]byte
	goneFn := func(rid [MailboxIDSize]byte) { gone = append(gone, rid) }
	if n, err := s.PurgeIdle(ctx, day0.Add(ttl+24*time.Hour-time.Second), ttl, keep, goneFn); err != nil || n != 0 {
		t.Fatalf("early idle purge: %d, %v", n, err)
	}
	// At the end of the TTL after day 0: all the stranger's go.
	now := day0.Add(ttl + 24*time.Hour)
	n, err := s.PurgeIdle(ctx, now, ttl, keep, goneFn)
	if err != nil || n != strangers {
		t.Fatalf("idle purge deleted %d (%v), want %d", n, err, strangers)
	}
	if len(gone) != strangers {
		t.Errorf("gone called %d times, want %d", len(gone), strangers)
	}
	for _, m := range stranger {
		if _, err := s.Mailbox(ctx, m.ReceiveID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a stranger's mailbox survived: %v", err)
		}
		if _, err := s.Put(ctx, m.SendID, mid(), []byte("x"), Quota{}, now, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a send to a deleted mailbox: %v", err)
		}
	}
	for _, m := range []Mailbox{honest, subscribed} {
		if _, err := s.Mailbox(ctx, m.ReceiveID); err != nil {
			t.Fatalf("a used mailbox was deleted: %v", err)
		}
	}
	if m, _ := s.Mailbox(ctx, subscribed.ReceiveID); !m.LastUsed.Equal(fromUnix(dayOf(now.Unix()))) {
		t.Errorf("the kept mailbox was not counted as used today: %v", m.LastUsed)
	}
	if tot, _ := s.Totals(ctx); tot != (Totals{Mailboxes: 2, Messages: 1, Bytes: uint64(len("for the owner"))}) {
		t.Errorf("totals after the purge: %+v", tot)
	}
	if k := s.Stats().IdempotencyKeys; k != 1 {
		t.Errorf("%d idempotency keys left, want the honest message's", k)
	}
	checkInvariants(t, s)
	// The key-slot file holds one key: the honest message's. The other
	// 300 slots are zeros, on disk.
	s.syncKeys()
	raw, err := os.ReadFile(path + KeyFileSuffix)
	if err != nil {
		t.Fatal(err)
	}
	filled := 0
	for i := keyPage; i+keySize <= len(raw); i += keySize {
		if !allZero(raw[i : i+keySize]) {
			filled++
		}
	}
	if filled != 1 {
		t.Errorf("%d filled key slots on disk, want 1", filled)
	}
	// The honest mailbox goes too once its owner stops: TTL after day 20.
	if n, err := s.PurgeIdle(ctx, now.Add(ttl+24*time.Hour), ttl, nil, nil); err != nil || n != 2 {
		t.Fatalf("late purge: %d, %v; want 2 (honest, and the no longer subscribed one)", n, err)
	}
	checkInvariants(t, s)
	if tot, _ := s.Totals(ctx); tot != (Totals{}) {
		t.Errorf("totals of an empty store: %+v", tot)
	}
}

// TestAttackScrapeWalksNoMailbox: a stranger's mailboxes make a metrics
// scrape no dearer. Totals reads no record: it opens no read transaction
// at all, however many mailboxes there are, and its sums stay exact.
func TestAttackScrapeWalksNoMailbox(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "", Options{})
	boxes := createMany(t, s, 500, t0)
	for i := range 50 {
		mustPut(t, s, boxes[i], mid(), []byte("12345"), Quota{}, t0)
	}
	before := s.db.Stats().TxN
	var tot Totals
	for range 100 {
		var err error
		if tot, err = s.Totals(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.db.Stats().TxN - before; n != 0 {
		t.Errorf("100 scrapes opened %d read transactions over %d mailboxes, want 0", n, len(boxes))
	}
	if tot != (Totals{Mailboxes: 500, Messages: 50, Bytes: 250}) {
		t.Errorf("totals %+v", tot)
	}
	checkInvariants(t, s)
}

// TestTotalsSurviveReopenAndRollback: the running totals are what the
// records sum to after every kind of write, after a failed transaction
// (which must change nothing) and after a reopen.
func TestTotalsSurviveReopenAndRollback(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "qpc.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := mkMailbox(t, s), mkMailbox(t, s)
	ids := [][MessageIDSize]byte{mid(), mid(), mid()}
	for i, id := range ids {
		mustPut(t, s, a, id, bytes.Repeat([]byte{'a'}, 10*(i+1)), Quota{}, t0.Add(time.Duration(i)*time.Hour))
	}
	mustPut(t, s, b, mid(), []byte("bb"), Quota{}, t0)
	if _, err := s.Ack(ctx, a.ReceiveID, ids[:1]); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
	// A transaction that fails after its writes changes no total.
	want, _ := s.Totals(ctx)
	boom := errors.New("boom")
	err = s.update(func(tx *txn) error {
		if err := s.putOp(a.SendID, mid(), []byte("lost"), Quota{}, t0, nil, new(PutResult))(tx); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update: %v", err)
	}
	if got, _ := s.Totals(ctx); got != want {
		t.Errorf("a rolled back put changed the totals: %+v, want %+v", got, want)
	}
	if _, err := s.PurgeExpired(ctx, t0.Add(90*time.Minute), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMailbox(ctx, b.ReceiveID); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
	want, _ = s.Totals(ctx)
	if want != (Totals{Mailboxes: 1, Messages: 2, Bytes: 50}) {
		t.Errorf("totals %+v", want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, Options{})
	if got, _ := s.Totals(ctx); got != want {
		t.Errorf("totals after reopen %+v, want %+v", got, want)
	}
	checkInvariants(t, s)
}

// TestIdleIndexStrays: an idle index entry that names no mailbox, or a
// day other than its mailbox's, is removed by the purge without touching
// any mailbox; a mailbox missing from the index is a corrupt file.
func TestIdleIndexStrays(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "", Options{})
	m := mkMailbox(t, s)
	ghost := rid(t)
	day0 := dayOf(t0.Unix())
	if err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIdle)
		if err := b.Put(idleKey(day0-day, ghost), nil); err != nil {
			return err
		}
		return b.Put(idleKey(day0-2*day, m.ReceiveID), nil)
	}); err != nil {
		t.Fatal(err)
	}
	// Cutoff day 0: both strays are older, the mailbox (day 0) is not.
	if n, err := s.PurgeIdle(ctx, fromUnix(day0).Add(24*time.Hour), 24*time.Hour, nil, nil); err != nil || n != 0 {
		t.Fatalf("purge with strays: %d, %v", n, err)
	}
	checkInvariants(t, s)
	// Without its own entry, the mailbox is refused as corrupt.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIdle)
		if err := b.Delete(idleKey(day0, m.ReceiveID)); err != nil {
			return err
		}
		return b.Put(idleKey(day0-day, m.ReceiveID), nil)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PurgeIdle(ctx, fromUnix(day0).Add(24*time.Hour), 24*time.Hour, nil, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("purge with the mailbox's entry at another day: %v, want ErrCorrupt", err)
	}
	if _, err := s.Mailbox(ctx, m.ReceiveID); err != nil {
		t.Fatalf("the mailbox was harmed: %v", err)
	}
}

// TestDayOf: days start at 00:00 UTC, before 1970 too.
func TestDayOf(t *testing.T) {
	for _, c := range []struct{ in, want int64 }{
		{0, 0}, {1, 0}, {day - 1, 0}, {day, day}, {-1, -day}, {-day, -day}, {-day - 1, -2 * day},
	} {
		if got := dayOf(c.in); got != c.want {
			t.Errorf("dayOf(%d) = %d, want %d", c.in, got, c.want)
		}
	}
	if got := fromUnix(dayOf(t0.Unix())); got != time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) {
		t.Errorf("day of t0: %v", got)
	}
}

// TestUpgradeFromSchema3 opens testdata/schema3.db (and its key-slot
// file), written by the schema 3 store (commit 9d7d4e2): mailbox a
// (IDs 0xa3.., send 0xb3.., owner 0xc3..) created 2026-12-01 12:00 with
// messages a1, a2 (acked) and a3 an hour apart, mailbox b (0xb4.., 0xc4..,
// 0xd4..) created a day later with b1. The upgrade keeps every message
// and key, gives both mailboxes the day of the upgrade as their last use
// (so none is deleted for an idleness the old server never measured),
// and leaves a file that works.
func TestUpgradeFromSchema3(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "qpc.db")
	for _, suf := range []string{"", KeyFileSuffix} {
		src, err := os.ReadFile(filepath.Join("testdata", "schema3.db"+suf))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+suf, src, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fill := func(b byte) (x [32]byte) {
		for i := range x {
			x[i] = b
		}
		return
	}
	a := Mailbox{ReceiveID: fill(0xa3), SendID: fill(0xb3), OwnerKey: fill(0xc3)}
	b := Mailbox{ReceiveID: fill(0xb4), SendID: fill(0xc4), OwnerKey: fill(0xd4)}
	today := fromUnix(dayOf(time.Now().Unix()))
	var logs lockedBuffer
	s := openTest(t, path, Options{Logger: slogTo(&logs)})
	if !bytes.Contains([]byte(logs.String()), []byte("schema 3 to 4")) || !bytes.Contains([]byte(logs.String()), []byte("mailboxes=2")) {
		t.Errorf("upgrade not logged: %q", logs.String())
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySchema); !bytes.Equal(v, []byte{4}) {
			t.Errorf("schema after upgrade: %v", v)
		}
		return nil
	})
	checkInvariants(t, s)
	ctx := context.Background()
	for _, m := range []Mailbox{a, b} {
		got, err := s.Mailbox(ctx, m.ReceiveID)
		if err != nil || got.SendID != m.SendID || got.OwnerKey != m.OwnerKey || !got.LastUsed.Equal(today) {
			t.Fatalf("mailbox after upgrade: %+v, %v (last use want %v)", got, err, today)
		}
	}
	var got []string
	for _, m := range []Mailbox{a, b} {
		for _, msg := range mustFetch(t, s, m) {
			got = append(got, fmt.Sprintf("%s@%d", msg.Envelope, msg.Seq))
		}
	}
	if want := "a1@1 a3@3 b1@1"; fmt.Sprint(got) != "["+want+"]" {
		t.Fatalf("messages after upgrade: %v, want %s", got, want)
	}
	if tot, _ := s.Totals(ctx); tot != (Totals{Mailboxes: 2, Messages: 3, Bytes: 6}) {
		t.Errorf("totals after upgrade: %+v", tot)
	}
	// The acked message's retry is still a duplicate.
	var id2 [MessageIDSize]byte
	copy(id2[:], bytes.Repeat([]byte{2}, MessageIDSize))
	if r := mustPut(t, s, a, id2, []byte("retry"), Quota{}, time.Now()); !r.Duplicate || r.Seq != 2 {
		t.Errorf("retry of a2: %+v", r)
	}
	// Idle time starts at the upgrade: not gone a TTL after creation,
	// gone a TTL after the upgrade day.
	const ttl = 30 * 24 * time.Hour
	if n, err := s.PurgeIdle(ctx, today.Add(ttl), ttl, nil, nil); err != nil || n != 0 {
		t.Fatalf("purge a TTL after the upgrade day began: %d, %v", n, err)
	}
	if n, err := s.PurgeIdle(ctx, today.Add(ttl+24*time.Hour), ttl, nil, nil); err != nil || n != 2 {
		t.Fatalf("purge a TTL after the upgrade day ended: %d, %v", n, err)
	}
	checkInvariants(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs = lockedBuffer{}
	s = openTest(t, path, Options{Logger: slogTo(&logs)})
	if bytes.Contains([]byte(logs.String()), []byte("upgraded")) {
		t.Errorf("second open upgraded again: %q", logs.String())
	}
	checkInvariants(t, s)
}

func fillRandom(bs ...[]byte) {
	for _, b := range bs {
		rand.Read(b)
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
