package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/server/store"
)

// Opener returns a fresh, empty store for one subtest and arranges its
// cleanup (see the package documentation).
type Opener func(t *testing.T) store.Store

// t0 is a whole hour, so any granularity dividing an hour keeps it exact.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Run runs every conformance subtest against stores made by open.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"CreateAndGetMailbox", testCreateAndGet},
		{"CreateExists", testCreateExists},
		{"PutFetchOrder", testPutFetchOrder},
		{"FetchPaging", testFetchPaging},
		{"UnknownMailbox", testUnknownMailbox},
		{"PutIdempotent", testPutIdempotent},
		{"PutIdempotentAfterAck", testPutIdempotentAfterAck},
		{"AckIdempotent", testAckIdempotent},
		{"AckScopedToMailbox", testAckScoped},
		{"QuotaCount", testQuotaCount},
		{"QuotaBytes", testQuotaBytes},
		{"DeleteMailbox", testDeleteMailbox},
		{"PurgeExpired", testPurgeExpired},
		{"PurgeIdle", testPurgeIdle},
		{"ConcurrentPuts", testConcurrentPuts},
		{"CancelledContext", testCancelledContext},
		{"Closed", testClosed},
		{"SpendOnce", testSpendOnce},
		{"SpendNotConsumedByRefusal", testSpendNotConsumedByRefusal},
		{"SpendPurge", testSpendPurge},
		{"SpendAlone", testSpendAlone},
		{"SpendAloneConcurrent", testSpendAloneConcurrent},
		{"SpendRefusedWritesNothing", testSpendRefusedWritesNothing},
		{"SpendConcurrentWrites", testSpendConcurrentWrites},
		{"SpendPutConcurrent", testSpendPutConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// ---- helpers ----

// random returns a random ID of type T ([16]byte or [32]byte); crypto/rand
// never fails (it panics instead), so there is no error to report.
func random[T [16]byte | [32]byte](*testing.T) T {
	var v T
	switch p := any(&v).(type) {
	case *[16]byte:
		rand.Read(p[:])
	case *[32]byte:
		rand.Read(p[:])
	}
	return v
}

func newMailbox(t *testing.T, s store.Store) store.Mailbox {
	t.Helper()
	m := store.Mailbox{
		ReceiveID: random[[store.MailboxIDSize]byte](t),
		SendID:    random[[store.MailboxIDSize]byte](t),
		OwnerKey:  random[[store.OwnerKeySize]byte](t),
		Created:   t0,
	}
	if err := s.CreateMailbox(context.Background(), m, nil); err != nil {
		t.Fatalf("CreateMailbox: %v", err)
	}
	return m
}

// envelope is deterministic content of the given size, distinct per n.
func envelope(n, size int) []byte {
	b := bytes.Repeat([]byte{byte(n), byte(n >> 8), 0xA5}, size/3+1)
	return b[:size]
}

func put(t *testing.T, s store.Store, m store.Mailbox, id [store.MessageIDSize]byte, env []byte, q store.Quota, now time.Time) store.PutResult {
	t.Helper()
	r, err := s.Put(context.Background(), m.SendID, id, env, q, now, nil)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if r.ReceiveID != m.ReceiveID {
		t.Fatalf("Put resolved to another mailbox")
	}
	return r
}

func fetchAll(t *testing.T, s store.Store, m store.Mailbox) []store.Message {
	t.Helper()
	msgs, more, err := s.Fetch(context.Background(), m.ReceiveID, 0, 1<<20, t0)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if more {
		t.Fatalf("Fetch with a huge limit reported more")
	}
	return msgs
}

func ack(t *testing.T, s store.Store, m store.Mailbox, ids ...[store.MessageIDSize]byte) int {
	t.Helper()
	n, err := s.Ack(context.Background(), m.ReceiveID, ids)
	if err != nil {
		t.Fatalf("Ack: %v", err)
	}
	return n
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// ---- subtests ----

func testCreateAndGet(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := newMailbox(t, s)
	got, err := s.Mailbox(ctx, m.ReceiveID)
	if err != nil {
		t.Fatalf("Mailbox: %v", err)
	}
	if got.ReceiveID != m.ReceiveID || got.SendID != m.SendID || got.OwnerKey != m.OwnerKey {
		t.Fatalf("Mailbox returned other IDs or key")
	}
	if !got.Created.Equal(t0) {
		t.Fatalf("Created = %v, want %v", got.Created, t0)
	}
	other := newMailbox(t, s)
	if got, err := s.Mailbox(ctx, other.ReceiveID); err != nil || got.SendID != other.SendID {
		t.Fatalf("second mailbox: %v", err)
	}
	_, err = s.Mailbox(ctx, random[[store.MailboxIDSize]byte](t))
	wantErr(t, "Mailbox(unknown)", err, store.ErrNotFound)
}

func testCreateExists(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := newMailbox(t, s)
	sameReceive := m
	sameReceive.SendID = random[[store.MailboxIDSize]byte](t)
	wantErr(t, "same receive ID", s.CreateMailbox(ctx, sameReceive, nil), store.ErrExists)
	sameSend := m
	sameSend.ReceiveID = random[[store.MailboxIDSize]byte](t)
	wantErr(t, "same send ID", s.CreateMailbox(ctx, sameSend, nil), store.ErrExists)

	// The refusals changed nothing: the original still works end to end
	// and the refused receive ID does not exist.
	got, err := s.Mailbox(ctx, m.ReceiveID)
	if err != nil || got.SendID != m.SendID || got.OwnerKey != m.OwnerKey {
		t.Fatalf("original mailbox changed: %v", err)
	}
	_, err = s.Mailbox(ctx, sameSend.ReceiveID)
	wantErr(t, "refused mailbox", err, store.ErrNotFound)
	_, err = s.Put(ctx, sameReceive.SendID, random[[16]byte](t), []byte("x"), store.Quota{}, t0, nil)
	wantErr(t, "Put to refused send ID", err, store.ErrNotFound)
	put(t, s, m, random[[16]byte](t), []byte("x"), store.Quota{}, t0)
}

func testPutFetchOrder(t *testing.T, s store.Store) {
	m := newMailbox(t, s)
	other := newMailbox(t, s)
	const n = 10
	ids := make([][store.MessageIDSize]byte, n)
	for i := range n {
		ids[i] = random[[16]byte](t)
		r := put(t, s, m, ids[i], envelope(i, 100+i), store.Quota{}, t0.Add(time.Duration(i)*time.Hour))
		if r.Duplicate {
			t.Fatalf("fresh message %d reported Duplicate", i)
		}
		if r.Seq != uint64(i+1) {
			t.Fatalf("message %d got seq %d, want %d (seqs start at 1)", i, r.Seq, i+1)
		}
		// Interleave another mailbox: its seqs are its own.
		if r := put(t, s, other, random[[16]byte](t), []byte("o"), store.Quota{}, t0); r.Seq != uint64(i+1) {
			t.Fatalf("other mailbox seq %d, want %d", r.Seq, i+1)
		}
	}
	msgs := fetchAll(t, s, m)
	if len(msgs) != n {
		t.Fatalf("fetched %d messages, want %d", len(msgs), n)
	}
	for i, msg := range msgs {
		if msg.Seq != uint64(i+1) || msg.ID != ids[i] || !bytes.Equal(msg.Envelope, envelope(i, 100+i)) {
			t.Fatalf("message %d: seq %d, id/envelope mismatch", i, msg.Seq)
		}
		at := t0.Add(time.Duration(i) * time.Hour)
		if !msg.ReceivedAt.Equal(at) {
			t.Fatalf("message %d ReceivedAt %v, want %v", i, msg.ReceivedAt, at)
		}
	}
	if got := fetchAll(t, s, other); len(got) != n {
		t.Fatalf("other mailbox has %d messages, want %d", len(got), n)
	}
}

func testFetchPaging(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := newMailbox(t, s)
	empty, more, err := s.Fetch(ctx, m.ReceiveID, 0, 10, t0)
	if err != nil || len(empty) != 0 || more {
		t.Fatalf("empty mailbox: %d msgs, more=%v, err=%v", len(empty), more, err)
	}
	const n = 10
	for i := range n {
		put(t, s, m, random[[16]byte](t), envelope(i, 50), store.Quota{}, t0)
	}
	var seqs []uint64
	after := uint64(0)
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatalf("paging does not terminate")
		}
		msgs, more, err := s.Fetch(ctx, m.ReceiveID, after, 3, t0)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if len(msgs) > 3 {
			t.Fatalf("Fetch returned %d messages with limit 3", len(msgs))
		}
		for _, msg := range msgs {
			if msg.Seq <= after {
				t.Fatalf("Fetch after %d returned seq %d", after, msg.Seq)
			}
			seqs = append(seqs, msg.Seq)
			after = msg.Seq
		}
		wantMore := len(seqs) < n
		if more != wantMore {
			t.Fatalf("after %d messages more=%v, want %v", len(seqs), more, wantMore)
		}
		if !more {
			break
		}
	}
	if len(seqs) != n {
		t.Fatalf("paged %d messages, want %d", len(seqs), n)
	}
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("page order: position %d has seq %d", i, seq)
		}
	}
	// Exactly at the end, and past it.
	for _, a := range []uint64{n, n + 100} {
		msgs, more, err := s.Fetch(ctx, m.ReceiveID, a, 3, t0)
		if err != nil || len(msgs) != 0 || more {
			t.Fatalf("Fetch after %d: %d msgs, more=%v, err=%v", a, len(msgs), more, err)
		}
	}
	// A page that ends exactly at the last message reports no more.
	msgs, more, err := s.Fetch(ctx, m.ReceiveID, n-2, 2, t0)
	if err != nil || len(msgs) != 2 || more {
		t.Fatalf("last full page: %d msgs, more=%v, err=%v", len(msgs), more, err)
	}
}

func testUnknownMailbox(t *testing.T, s store.Store) {
	ctx := context.Background()
	newMailbox(t, s)
	unknown := random[[store.MailboxIDSize]byte](t)
	_, err := s.Put(ctx, unknown, random[[16]byte](t), []byte("x"), store.Quota{}, t0, nil)
	wantErr(t, "Put(unknown send ID)", err, store.ErrNotFound)
	_, _, err = s.Fetch(ctx, unknown, 0, 10, t0)
	wantErr(t, "Fetch(unknown)", err, store.ErrNotFound)
	_, err = s.Ack(ctx, unknown, [][16]byte{random[[16]byte](t)})
	wantErr(t, "Ack(unknown)", err, store.ErrNotFound)
	wantErr(t, "DeleteMailbox(unknown)", s.DeleteMailbox(ctx, unknown), store.ErrNotFound)
}

func testPutIdempotent(t *testing.T, s store.Store) {
	m := newMailbox(t, s)
	id := random[[16]byte](t)
	first := put(t, s, m, id, []byte("original"), store.Quota{}, t0)
	put(t, s, m, random[[16]byte](t), []byte("next"), store.Quota{}, t0)
	// A retry may even carry different bytes; the first stored copy wins.
	again := put(t, s, m, id, []byte("retry"), store.Quota{}, t0.Add(time.Hour))
	if !again.Duplicate || again.Seq != first.Seq || first.Duplicate {
		t.Fatalf("retry: %+v after %+v, want Duplicate with the same seq", again, first)
	}
	msgs := fetchAll(t, s, m)
	if len(msgs) != 2 || !bytes.Equal(msgs[0].Envelope, []byte("original")) {
		t.Fatalf("after retry: %d messages", len(msgs))
	}
	// The same message ID in another mailbox is another message.
	other := newMailbox(t, s)
	if r := put(t, s, other, id, []byte("elsewhere"), store.Quota{}, t0); r.Duplicate {
		t.Fatalf("message ID of another mailbox reported Duplicate")
	}
}

func testPutIdempotentAfterAck(t *testing.T, s store.Store) {
	m := newMailbox(t, s)
	id := random[[16]byte](t)
	first := put(t, s, m, id, []byte("once"), store.Quota{}, t0)
	if n := ack(t, s, m, id); n != 1 {
		t.Fatalf("Ack deleted %d, want 1", n)
	}
	again := put(t, s, m, id, []byte("once"), store.Quota{}, t0)
	if !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("retry after ack: %+v, want Duplicate with seq %d", again, first.Seq)
	}
	if msgs := fetchAll(t, s, m); len(msgs) != 0 {
		t.Fatalf("retry after ack was stored again: %d messages", len(msgs))
	}
	if r := put(t, s, m, random[[16]byte](t), []byte("new"), store.Quota{}, t0); r.Seq != first.Seq+1 {
		t.Fatalf("next seq after ack %d, want %d (seqs are not reused)", r.Seq, first.Seq+1)
	}
}

func testAckIdempotent(t *testing.T, s store.Store) {
	m := newMailbox(t, s)
	a, b, c := random[[16]byte](t), random[[16]byte](t), random[[16]byte](t)
	for _, id := range [][16]byte{a, b, c} {
		put(t, s, m, id, []byte("m"), store.Quota{}, t0)
	}
	unknown := random[[16]byte](t)
	if n := ack(t, s, m, a, unknown, a); n != 1 {
		t.Fatalf("Ack(a, unknown, a) deleted %d, want 1", n)
	}
	if n := ack(t, s, m, a); n != 0 {
		t.Fatalf("second Ack(a) deleted %d, want 0", n)
	}
	if n := ack(t, s, m, unknown); n != 0 {
		t.Fatalf("Ack(unknown) deleted %d, want 0", n)
	}
	if n := ack(t, s, m); n != 0 {
		t.Fatalf("empty Ack deleted %d", n)
	}
	if n := ack(t, s, m, a, b, c); n != 2 {
		t.Fatalf("Ack(a, b, c) deleted %d, want 2", n)
	}
	if msgs := fetchAll(t, s, m); len(msgs) != 0 {
		t.Fatalf("%d messages left after acking all", len(msgs))
	}
}

func testAckScoped(t *testing.T, s store.Store) {
	m, other := newMailbox(t, s), newMailbox(t, s)
	id := random[[16]byte](t)
	put(t, s, other, id, []byte("not yours"), store.Quota{}, t0)
	if n := ack(t, s, m, id); n != 0 {
		t.Fatalf("Ack on one mailbox deleted %d message(s) of another", n)
	}
	if msgs := fetchAll(t, s, other); len(msgs) != 1 {
		t.Fatalf("other mailbox lost its message")
	}
}

func testQuotaCount(t *testing.T, s store.Store) {
	m := newMailbox(t, s)
	q := store.Quota{MaxMessages: 3}
	ids := [][16]byte{random[[16]byte](t), random[[16]byte](t), random[[16]byte](t)}
	for _, id := range ids {
		put(t, s, m, id, []byte("m"), q, t0)
	}
	_, err := s.Put(context.Background(), m.SendID, random[[16]byte](t), []byte("m"), q, t0, nil)
	wantErr(t, "Put over count quota", err, store.ErrQuotaCount)
	// A retry of an accepted message is no new message: it must not be
	// refused by a full mailbox.
	if r := put(t, s, m, ids[0], []byte("m"), q, t0); !r.Duplicate {
		t.Fatalf("retry into a full mailbox not reported as Duplicate")
	}
	// No limit means no limit.
	put(t, s, m, random[[16]byte](t), []byte("m"), store.Quota{}, t0)
	if n := ack(t, s, m, ids[0], ids[1]); n != 2 {
		t.Fatalf("Ack deleted %d, want 2", n)
	}
	// 2 stored now: exactly one more fits.
	put(t, s, m, random[[16]byte](t), []byte("m"), q, t0)
	_, err = s.Put(context.Background(), m.SendID, random[[16]byte](t), []byte("m"), q, t0, nil)
	wantErr(t, "Put over count quota after ack", err, store.ErrQuotaCount)
	if msgs := fetchAll(t, s, m); len(msgs) != 3 {
		t.Fatalf("%d messages stored, want 3", len(msgs))
	}
}

func testQuotaBytes(t *testing.T, s store.Store) {
	m := newMailbox(t, s)
	q := store.Quota{MaxBytes: 100}
	a, b := random[[16]byte](t), random[[16]byte](t)
	put(t, s, m, a, envelope(1, 40), q, t0)
	put(t, s, m, b, envelope(2, 40), q, t0)
	_, err := s.Put(context.Background(), m.SendID, random[[16]byte](t), envelope(3, 21), q, t0, nil)
	wantErr(t, "Put over byte quota", err, store.ErrQuotaBytes)
	put(t, s, m, random[[16]byte](t), envelope(4, 20), q, t0) // exactly 100
	_, err = s.Put(context.Background(), m.SendID, random[[16]byte](t), envelope(5, 1), q, t0, nil)
	wantErr(t, "Put over full byte quota", err, store.ErrQuotaBytes)
	// An envelope larger than the whole quota never fits.
	other := newMailbox(t, s)
	_, err = s.Put(context.Background(), other.SendID, random[[16]byte](t), envelope(6, 101), q, t0, nil)
	wantErr(t, "Put larger than quota", err, store.ErrQuotaBytes)

	if n := ack(t, s, m, a); n != 1 {
		t.Fatalf("Ack deleted %d, want 1", n)
	}
	put(t, s, m, random[[16]byte](t), envelope(7, 40), q, t0) // 100 again
	_, err = s.Put(context.Background(), m.SendID, random[[16]byte](t), envelope(8, 1), q, t0, nil)
	wantErr(t, "Put over byte quota after ack", err, store.ErrQuotaBytes)
	// Both limits: the count is checked too.
	_, err = s.Put(context.Background(), m.SendID, random[[16]byte](t), envelope(9, 1), store.Quota{MaxMessages: 3, MaxBytes: 1000}, t0, nil)
	wantErr(t, "Put over count with bytes to spare", err, store.ErrQuotaCount)
}

func testDeleteMailbox(t *testing.T, s store.Store) {
	ctx := context.Background()
	m, keep := newMailbox(t, s), newMailbox(t, s)
	id := random[[16]byte](t)
	put(t, s, m, id, []byte("gone"), store.Quota{}, t0)
	acked := random[[16]byte](t)
	put(t, s, m, acked, []byte("acked"), store.Quota{}, t0)
	ack(t, s, m, acked)
	keepID := random[[16]byte](t)
	put(t, s, keep, keepID, []byte("kept"), store.Quota{}, t0)

	if err := s.DeleteMailbox(ctx, m.ReceiveID); err != nil {
		t.Fatalf("DeleteMailbox: %v", err)
	}
	_, err := s.Mailbox(ctx, m.ReceiveID)
	wantErr(t, "Mailbox after delete", err, store.ErrNotFound)
	_, _, err = s.Fetch(ctx, m.ReceiveID, 0, 10, t0)
	wantErr(t, "Fetch after delete", err, store.ErrNotFound)
	_, err = s.Put(ctx, m.SendID, random[[16]byte](t), []byte("x"), store.Quota{}, t0, nil)
	wantErr(t, "Put after delete", err, store.ErrNotFound)
	wantErr(t, "second DeleteMailbox", s.DeleteMailbox(ctx, m.ReceiveID), store.ErrNotFound)

	// Both IDs are free again, and nothing of the old mailbox is left:
	// no messages, and its message IDs are no longer duplicates.
	if err := s.CreateMailbox(ctx, m, nil); err != nil {
		t.Fatalf("recreate: %v", err)
	}
	if msgs := fetchAll(t, s, m); len(msgs) != 0 {
		t.Fatalf("recreated mailbox has %d old messages", len(msgs))
	}
	for _, old := range [][16]byte{id, acked} {
		if r := put(t, s, m, old, []byte("new"), store.Quota{MaxMessages: 2, MaxBytes: 6}, t0); r.Duplicate {
			t.Fatalf("old idempotency key survived the delete")
		}
	}
	// Quota counters restarted from zero too (2 messages of 3 bytes fit
	// the quota above exactly), and seqs restart.
	if msgs := fetchAll(t, s, m); len(msgs) != 2 || msgs[0].Seq != 1 {
		t.Fatalf("recreated mailbox: %d messages", len(msgs))
	}
	msgs := fetchAll(t, s, keep)
	if len(msgs) != 1 || msgs[0].ID != keepID {
		t.Fatalf("deleting one mailbox touched another")
	}
}

func testPurgeExpired(t *testing.T, s store.Store) {
	ctx := context.Background()
	m, other := newMailbox(t, s), newMailbox(t, s)
	q := store.Quota{MaxMessages: 3}
	oldA, oldB, fresh := random[[16]byte](t), random[[16]byte](t), random[[16]byte](t)
	put(t, s, m, oldA, []byte("old a"), q, t0)
	put(t, s, m, oldB, []byte("old b"), q, t0)
	put(t, s, m, fresh, []byte("fresh"), q, t0.Add(2*time.Hour))
	ack(t, s, m, oldB) // acked: only its idempotency key is left
	otherOld := random[[16]byte](t)
	put(t, s, other, otherOld, []byte("other old"), store.Quota{}, t0)

	// Nothing is older than now-ttl yet.
	if n, err := s.PurgeExpired(ctx, t0.Add(3*time.Hour), 4*time.Hour); err != nil || n != 0 {
		t.Fatalf("early purge: %d, %v", n, err)
	}
	if msgs := fetchAll(t, s, m); len(msgs) != 2 {
		t.Fatalf("early purge removed messages: %d left", len(msgs))
	}
	// Cutoff t0+1h: the t0 messages go, the t0+2h one stays.
	n, err := s.PurgeExpired(ctx, t0.Add(3*time.Hour), 2*time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("purge: %d, %v; want 2 (one per mailbox)", n, err)
	}
	msgs := fetchAll(t, s, m)
	if len(msgs) != 1 || msgs[0].ID != fresh {
		t.Fatalf("after purge: %d messages, want only the fresh one", len(msgs))
	}
	if msgs := fetchAll(t, s, other); len(msgs) != 0 {
		t.Fatalf("other mailbox kept an expired message")
	}
	if n, err := s.PurgeExpired(ctx, t0.Add(3*time.Hour), 2*time.Hour); err != nil || n != 0 {
		t.Fatalf("repeated purge: %d, %v", n, err)
	}
	// The expired idempotency keys went too: those IDs are new messages
	// now. The fresh one's key stayed.
	now := t0.Add(3 * time.Hour)
	for _, id := range [][16]byte{oldA, oldB} {
		if r := put(t, s, m, id, []byte("again"), q, now); r.Duplicate {
			t.Fatalf("expired idempotency key still present")
		}
	}
	if r := put(t, s, m, fresh, []byte("fresh"), q, now); !r.Duplicate {
		t.Fatalf("unexpired idempotency key was purged")
	}
	// The purge kept the count exact: 1 fresh + 2 re-sent = quota of 3.
	_, err = s.Put(ctx, m.SendID, random[[16]byte](t), []byte("x"), q, now, nil)
	wantErr(t, "Put after purge into a full mailbox", err, store.ErrQuotaCount)
}

// testPurgeIdle: a mailbox its owner has not fetched from goes between
// idle and idle + 1 day after the day of its last use (UTC days), with
// its messages and idempotency keys; a fetch moves its last use, sends do
// not; keep spares a mailbox and counts as its use; gone hears of each
// deletion.
func testPurgeIdle(t *testing.T, s store.Store) {
	ctx := context.Background()
	const idle = 30 * 24 * time.Hour
	day0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) // t0's day
	used, unused, kept := newMailbox(t, s), newMailbox(t, s), newMailbox(t, s)
	if m, err := s.Mailbox(ctx, unused.ReceiveID); err != nil || !m.LastUsed.Equal(day0) {
		t.Fatalf("a new mailbox's last use: %v, %v; want its creation day %v", m.LastUsed, err, day0)
	}
	id := random[[16]byte](t)
	put(t, s, unused, id, []byte("never read"), store.Quota{}, t0)
	// Sends on day 10 are no use of the mailbox; a fetch on day 5 is.
	put(t, s, unused, random[[16]byte](t), []byte("never read either"), store.Quota{}, t0.Add(10*24*time.Hour))
	if _, _, err := s.Fetch(ctx, used.ReceiveID, 0, 10, t0.Add(5*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A fetch with an earlier time does not move it back.
	if _, _, err := s.Fetch(ctx, used.ReceiveID, 0, 10, t0); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Mailbox(ctx, used.ReceiveID); !m.LastUsed.Equal(day0.Add(5 * 24 * time.Hour)) {
		t.Fatalf("last use after a fetch on day 5: %v", m.LastUsed)
	}
	if m, _ := s.Mailbox(ctx, unused.ReceiveID); !m.LastUsed.Equal(day0) {
		t.Fatalf("sends moved the last use to %v", m.LastUsed)
	}
	keep := func(rid [store.MailboxIDSize]byte) bool { return rid == kept.ReceiveID }
	var gone [][store.MailboxIDSize]byte
	goneFn := func(rid [store.MailboxIDSize]byte) { gone = append(gone, rid) }
	if n, err := s.PurgeIdle(ctx, day0.Add(1000*24*time.Hour), 0, keep, goneFn); err != nil || n != 0 {
		t.Fatalf("idle 0 purged %d, %v", n, err)
	}
	// One second before day 0 has been over for idle: nothing goes.
	if n, err := s.PurgeIdle(ctx, day0.Add(idle+24*time.Hour-time.Second), idle, keep, goneFn); err != nil || n != 0 || len(gone) != 0 {
		t.Fatalf("early idle purge: %d, %v, gone %d", n, err, len(gone))
	}
	now := day0.Add(idle + 24*time.Hour)
	n, err := s.PurgeIdle(ctx, now, idle, keep, goneFn)
	if err != nil || n != 1 || len(gone) != 1 || gone[0] != unused.ReceiveID {
		t.Fatalf("idle purge: %d, %v, gone %x; want the unused mailbox alone", n, err, gone)
	}
	_, err = s.Mailbox(ctx, unused.ReceiveID)
	wantErr(t, "Mailbox(purged)", err, store.ErrNotFound)
	_, _, err = s.Fetch(ctx, unused.ReceiveID, 0, 10, now)
	wantErr(t, "Fetch(purged)", err, store.ErrNotFound)
	_, err = s.Put(ctx, unused.SendID, id, []byte("x"), store.Quota{}, now, nil)
	wantErr(t, "Put(purged)", err, store.ErrNotFound)
	wantErr(t, "DeleteMailbox(purged)", s.DeleteMailbox(ctx, unused.ReceiveID), store.ErrNotFound)
	// Its messages went with it: the message purge finds none of them.
	if n, err := s.PurgeExpired(ctx, now.Add(1000*24*time.Hour), time.Hour); err != nil || n != 0 {
		t.Fatalf("messages of the purged mailbox outlived it: %d, %v", n, err)
	}
	// Its IDs are free again: nothing of it is left.
	unused.Created = now
	if err := s.CreateMailbox(ctx, unused, nil); err != nil {
		t.Fatalf("recreating the purged mailbox's IDs: %v", err)
	}
	if r := put(t, s, unused, id, []byte("new"), store.Quota{}, now); r.Duplicate || r.Seq != 1 {
		t.Fatalf("a send to the recreated mailbox: %+v", r)
	}
	if m, _ := s.Mailbox(ctx, kept.ReceiveID); !m.LastUsed.Equal(now) {
		t.Fatalf("a kept mailbox's last use: %v, want %v", m.LastUsed, now)
	}
	// The used mailbox goes once idle has passed after day 5.
	if n, err := s.PurgeIdle(ctx, day0.Add(6*24*time.Hour+idle), idle, nil, nil); err != nil || n != 1 {
		t.Fatalf("purge of the mailbox last used on day 5: %d, %v", n, err)
	}
	_, err = s.Mailbox(ctx, used.ReceiveID)
	wantErr(t, "Mailbox(used, later)", err, store.ErrNotFound)
}

func testConcurrentPuts(t *testing.T, s store.Store) {
	const (
		writers = 64
		each    = 50
	)
	ctx := context.Background()
	m := newMailbox(t, s)
	// Writer w and w+writers/2 send the same IDs: every message races its
	// own retry, as a client's retry would race a slow first attempt.
	ids := make([][each][16]byte, writers/2)
	for i := range ids {
		for j := range each {
			ids[i][j] = random[[16]byte](t)
		}
	}
	type outcome struct {
		seq uint64
		dup bool
	}
	results := make([][each]outcome, writers)
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for j := range each {
				id := ids[w%(writers/2)][j]
				r, err := s.Put(ctx, m.SendID, id, id[:], store.Quota{}, t0, nil)
				if err != nil {
					errs <- fmt.Errorf("writer %d put %d: %w", w, j, err)
					return
				}
				results[w][j] = outcome{r.Seq, r.Duplicate}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const unique = writers / 2 * each
	seqs := make(map[uint64][16]byte, unique)
	for w := range writers / 2 {
		for j := range each {
			a, b := results[w][j], results[w+writers/2][j]
			if a.seq != b.seq || a.dup == b.dup {
				t.Fatalf("racing retries got %+v and %+v, want one fresh and one Duplicate with the same seq", a, b)
			}
			if _, dup := seqs[a.seq]; dup {
				t.Fatalf("seq %d assigned twice", a.seq)
			}
			seqs[a.seq] = ids[w][j]
		}
	}
	msgs := fetchAll(t, s, m)
	if len(msgs) != unique {
		t.Fatalf("stored %d messages, want %d", len(msgs), unique)
	}
	for i, msg := range msgs {
		if msg.Seq != uint64(i+1) {
			t.Fatalf("seqs not dense: position %d has seq %d", i, msg.Seq)
		}
		if seqs[msg.Seq] != msg.ID || !bytes.Equal(msg.Envelope, msg.ID[:]) {
			t.Fatalf("seq %d holds another message than Put reported", msg.Seq)
		}
	}
}

func testCancelledContext(t *testing.T, s store.Store) {
	m := newMailbox(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	id := random[[16]byte](t)
	_, err := s.Put(ctx, m.SendID, id, []byte("x"), store.Quota{}, t0, nil)
	wantErr(t, "Put", err, context.Canceled)
	wantErr(t, "CreateMailbox", s.CreateMailbox(ctx, store.Mailbox{ReceiveID: random[[32]byte](t), SendID: random[[32]byte](t)}, nil), context.Canceled)
	_, err = s.Ack(ctx, m.ReceiveID, [][16]byte{id})
	wantErr(t, "Ack", err, context.Canceled)
	wantErr(t, "DeleteMailbox", s.DeleteMailbox(ctx, m.ReceiveID), context.Canceled)
	_, err = s.PurgeExpired(ctx, t0, 0)
	wantErr(t, "PurgeExpired", err, context.Canceled)
	// Nothing of it happened.
	if msgs := fetchAll(t, s, m); len(msgs) != 0 {
		t.Fatalf("a cancelled Put was stored")
	}
	if r := put(t, s, m, id, []byte("x"), store.Quota{}, t0); r.Duplicate || r.Seq != 1 {
		t.Fatalf("a cancelled Put left an idempotency key: %+v", r)
	}
}

func testClosed(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := newMailbox(t, s)
	id := random[[16]byte](t)
	put(t, s, m, id, []byte("x"), store.Quota{}, t0)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	wantErr(t, "CreateMailbox", s.CreateMailbox(ctx, store.Mailbox{ReceiveID: random[[32]byte](t), SendID: random[[32]byte](t)}, nil), store.ErrClosed)
	_, err := s.Mailbox(ctx, m.ReceiveID)
	wantErr(t, "Mailbox", err, store.ErrClosed)
	_, err = s.Put(ctx, m.SendID, random[[16]byte](t), []byte("x"), store.Quota{}, t0, nil)
	wantErr(t, "Put", err, store.ErrClosed)
	_, _, err = s.Fetch(ctx, m.ReceiveID, 0, 10, t0)
	wantErr(t, "Fetch", err, store.ErrClosed)
	_, err = s.Ack(ctx, m.ReceiveID, [][16]byte{id})
	wantErr(t, "Ack", err, store.ErrClosed)
	wantErr(t, "DeleteMailbox", s.DeleteMailbox(ctx, m.ReceiveID), store.ErrClosed)
	_, err = s.PurgeExpired(ctx, t0, time.Hour)
	wantErr(t, "PurgeExpired", err, store.ErrClosed)
	wantErr(t, "Spend", s.Spend(ctx, &store.Spend{Key: random[[32]byte](t), Until: t0}), store.ErrClosed)
}

// testSpendOnce: a spend key pays for exactly one write, whether it was
// first spent on a mailbox or on a message; a retry of the same message
// with the same key is a duplicate, not a double spend.
func testSpendOnce(t *testing.T, s store.Store) {
	ctx := context.Background()
	spend := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(48 * time.Hour)}
	m := store.Mailbox{ReceiveID: random[[32]byte](t), SendID: random[[32]byte](t), Created: t0}
	if err := s.CreateMailbox(ctx, m, spend); err != nil {
		t.Fatalf("CreateMailbox with a fresh spend: %v", err)
	}
	other := store.Mailbox{ReceiveID: random[[32]byte](t), SendID: random[[32]byte](t), Created: t0}
	wantErr(t, "mailbox with a spent key", s.CreateMailbox(ctx, other, spend), store.ErrSpent)
	if _, err := s.Mailbox(ctx, other.ReceiveID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused mailbox exists: %v", err)
	}
	_, err := s.Put(ctx, m.SendID, random[[16]byte](t), []byte("x"), store.Quota{}, t0, spend)
	wantErr(t, "message with a key spent on a mailbox", err, store.ErrSpent)

	pay := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(48 * time.Hour)}
	id := random[[16]byte](t)
	r1, err := s.Put(ctx, m.SendID, id, []byte("paid"), store.Quota{}, t0, pay)
	if err != nil {
		t.Fatalf("Put with a fresh spend: %v", err)
	}
	r2, err := s.Put(ctx, m.SendID, id, []byte("paid"), store.Quota{}, t0, pay)
	if err != nil || !r2.Duplicate || r2.Seq != r1.Seq {
		t.Fatalf("retry with the same key: %+v, %v; want the duplicate", r2, err)
	}
	_, err = s.Put(ctx, m.SendID, random[[16]byte](t), []byte("again"), store.Quota{}, t0, pay)
	wantErr(t, "second message with the same key", err, store.ErrSpent)
	if msgs := fetchAll(t, s, m); len(msgs) != 1 {
		t.Fatalf("%d messages stored, want 1", len(msgs))
	}
}

// testSpendNotConsumedByRefusal: a write refused for another reason (quota,
// unknown mailbox) leaves its token unspent.
func testSpendNotConsumedByRefusal(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := newMailbox(t, s)
	spend := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(time.Hour)}
	put(t, s, m, random[[16]byte](t), []byte("fill"), store.Quota{}, t0)
	_, err := s.Put(ctx, m.SendID, random[[16]byte](t), []byte("x"), store.Quota{MaxMessages: 1}, t0, spend)
	wantErr(t, "over quota", err, store.ErrQuotaCount)
	_, err = s.Put(ctx, random[[32]byte](t), random[[16]byte](t), []byte("x"), store.Quota{}, t0, spend)
	wantErr(t, "unknown mailbox", err, store.ErrNotFound)
	if _, err := s.Put(ctx, m.SendID, random[[16]byte](t), []byte("x"), store.Quota{}, t0, spend); err != nil {
		t.Fatalf("token refused after writes that did not happen: %v", err)
	}
	// A mailbox refused as existing leaves its token unspent too.
	spend = &store.Spend{Key: random[[32]byte](t), Until: t0.Add(time.Hour)}
	wantErr(t, "existing mailbox", s.CreateMailbox(ctx, m, spend), store.ErrExists)
	if err := s.Spend(ctx, spend); err != nil {
		t.Fatalf("token refused after a mailbox that was not created: %v", err)
	}
}

// testSpendRefusedWritesNothing: the spend and the write it pays for are
// one transaction, so a write refused because its token is spent leaves
// nothing behind: no message, no idempotency key (a later send of the same
// message ID with a good token is stored, not answered as a duplicate), no
// quota used, no mailbox.
func testSpendRefusedWritesNothing(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := newMailbox(t, s)
	spent := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(time.Hour)}
	if err := s.Spend(ctx, spent); err != nil {
		t.Fatal(err)
	}
	id := random[[16]byte](t)
	_, err := s.Put(ctx, m.SendID, id, []byte("refused"), store.Quota{MaxMessages: 1}, t0, spent)
	wantErr(t, "Put with a spent token", err, store.ErrSpent)
	if msgs := fetchAll(t, s, m); len(msgs) != 0 {
		t.Fatalf("a Put refused for its spent token stored %d messages", len(msgs))
	}
	fresh := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(time.Hour)}
	r, err := s.Put(ctx, m.SendID, id, []byte("paid"), store.Quota{MaxMessages: 1}, t0, fresh)
	if err != nil {
		t.Fatalf("Put of the refused message ID with a fresh token (quota 1): %v", err)
	}
	if r.Duplicate {
		t.Fatal("the refused Put left an idempotency key: a later Put of its ID was answered as a duplicate")
	}
	msgs := fetchAll(t, s, m)
	if len(msgs) != 1 || string(msgs[0].Envelope) != "paid" {
		t.Fatalf("messages after the paid Put: %d", len(msgs))
	}
	other := store.Mailbox{ReceiveID: random[[32]byte](t), SendID: random[[32]byte](t), Created: t0}
	wantErr(t, "CreateMailbox with a spent token", s.CreateMailbox(ctx, other, spent), store.ErrSpent)
	if _, err := s.Mailbox(ctx, other.ReceiveID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a mailbox refused for its spent token exists: %v", err)
	}
	_, err = s.Put(ctx, other.SendID, random[[16]byte](t), []byte("x"), store.Quota{}, t0, nil)
	wantErr(t, "Put to the refused mailbox's send ID", err, store.ErrNotFound)
}

// testSpendConcurrentWrites: of many writes paid with one token at once
// (which a group-commit backend may put in one transaction, and a
// multi-node backend may run on several nodes), exactly one is stored.
func testSpendConcurrentWrites(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 12
	m := newMailbox(t, s)
	run := func(write func(i int) error) (ok int) {
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			okN     atomic.Int32
			refused atomic.Int32
		)
		for i := range n {
			wg.Go(func() {
				<-start
				switch err := write(i); {
				case err == nil:
					okN.Add(1)
				case errors.Is(err, store.ErrSpent):
					refused.Add(1)
				default:
					t.Errorf("write: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if int(okN.Load()+refused.Load()) != n {
			t.Fatalf("%d writes succeeded and %d were refused of %d", okN.Load(), refused.Load(), n)
		}
		return int(okN.Load())
	}
	spend := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(time.Hour)}
	if ok := run(func(int) error {
		_, err := s.Put(ctx, m.SendID, random[[16]byte](t), []byte("x"), store.Quota{}, t0, spend)
		return err
	}); ok != 1 {
		t.Fatalf("%d Puts paid with one token succeeded, want 1", ok)
	}
	if msgs := fetchAll(t, s, m); len(msgs) != 1 {
		t.Fatalf("%d messages stored from one token, want 1", len(msgs))
	}
	spend = &store.Spend{Key: random[[32]byte](t), Until: t0.Add(time.Hour)}
	boxes := make([]store.Mailbox, n)
	if ok := run(func(i int) error {
		boxes[i] = store.Mailbox{ReceiveID: random[[32]byte](t), SendID: random[[32]byte](t), Created: t0}
		return s.CreateMailbox(ctx, boxes[i], spend)
	}); ok != 1 {
		t.Fatalf("%d mailboxes created with one token, want 1", ok)
	}
	exist := 0
	for _, b := range boxes {
		if _, err := s.Mailbox(ctx, b.ReceiveID); err == nil {
			exist++
		}
	}
	if exist != 1 {
		t.Fatalf("%d mailboxes exist from one token, want 1", exist)
	}
}

// testSpendPurge: spends are forgotten after their Until, not before.
func testSpendPurge(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := newMailbox(t, s)
	spend := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(2 * time.Hour)}
	if _, err := s.Put(ctx, m.SendID, random[[16]byte](t), []byte("x"), store.Quota{}, t0, spend); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PurgeExpired(ctx, t0.Add(time.Hour), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err := s.Put(ctx, m.SendID, random[[16]byte](t), []byte("y"), store.Quota{}, t0, spend)
	wantErr(t, "spend before its Until", err, store.ErrSpent)
	if _, err := s.PurgeExpired(ctx, t0.Add(3*time.Hour), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, m.SendID, random[[16]byte](t), []byte("z"), store.Quota{}, t0, spend); err != nil {
		t.Fatalf("spend record outlived its Until: %v", err)
	}
}

// testSpendAlone: Spend consumes a key once, without a write to pay for;
// the spent set is one set, whichever call spent a key first.
func testSpendAlone(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.Spend(ctx, nil); err != nil {
		t.Fatalf("Spend(nil): %v", err)
	}
	spend := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(2 * time.Hour)}
	if err := s.Spend(ctx, spend); err != nil {
		t.Fatalf("Spend of a fresh key: %v", err)
	}
	wantErr(t, "second Spend", s.Spend(ctx, spend), store.ErrSpent)
	m := newMailbox(t, s)
	_, err := s.Put(ctx, m.SendID, random[[16]byte](t), []byte("x"), store.Quota{}, t0, spend)
	wantErr(t, "Put with a key spent by Spend", err, store.ErrSpent)
	other := store.Mailbox{ReceiveID: random[[32]byte](t), SendID: random[[32]byte](t), Created: t0}
	wantErr(t, "CreateMailbox with a key spent by Spend", s.CreateMailbox(ctx, other, spend), store.ErrSpent)
	if msgs := fetchAll(t, s, m); len(msgs) != 0 {
		t.Fatalf("%d messages stored with a spent key", len(msgs))
	}

	// The other way round: a key a Put spent cannot be spent again.
	paid := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(2 * time.Hour)}
	put := func() error {
		_, err := s.Put(ctx, m.SendID, random[[16]byte](t), []byte("y"), store.Quota{}, t0, paid)
		return err
	}
	if err := put(); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Spend of a key a Put spent", s.Spend(ctx, paid), store.ErrSpent)

	// Spends expire like the others.
	if _, err := s.PurgeExpired(ctx, t0.Add(time.Hour), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Spend before its Until", s.Spend(ctx, spend), store.ErrSpent)
	if _, err := s.PurgeExpired(ctx, t0.Add(3*time.Hour), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Spend(ctx, spend); err != nil {
		t.Fatalf("spend record outlived its Until: %v", err)
	}
}

// testSpendAloneConcurrent: of many Spends of one key at once (which a
// group-commit backend may put in one transaction), exactly one succeeds.
func testSpendAloneConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 16
	for range 4 {
		spend := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(time.Hour)}
		var (
			wg          sync.WaitGroup
			start       = make(chan struct{})
			ok, refused atomic.Int32
		)
		for range n {
			wg.Go(func() {
				<-start
				switch err := s.Spend(ctx, spend); {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, store.ErrSpent):
					refused.Add(1)
				default:
					t.Errorf("Spend: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if ok.Load() != 1 || refused.Load() != n-1 {
			t.Fatalf("%d Spends of one key succeeded and %d were refused; want 1 and %d", ok.Load(), refused.Load(), n-1)
		}
	}
}

// testSpendPutConcurrent: of many Puts paying with one key at once, for
// different messages, exactly one stores its message and the others are
// ErrSpent; many Puts of one message with one key at once (a client's
// retries racing) all succeed, once fresh and otherwise Duplicate.
func testSpendPutConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 16
	m := newMailbox(t, s)
	for round := range 4 {
		spend := &store.Spend{Key: random[[32]byte](t), Until: t0.Add(time.Hour)}
		same := round%2 == 1 // odd rounds: retries of one message
		id := random[[16]byte](t)
		var (
			wg                  sync.WaitGroup
			start               = make(chan struct{})
			fresh, dup, refused atomic.Int32
		)
		for range n {
			wg.Go(func() {
				mid := id
				if !same {
					mid = random[[16]byte](t)
				}
				<-start
				r, err := s.Put(ctx, m.SendID, mid, mid[:], store.Quota{}, t0, spend)
				switch {
				case err == nil && r.Duplicate:
					dup.Add(1)
				case err == nil:
					fresh.Add(1)
				case errors.Is(err, store.ErrSpent):
					refused.Add(1)
				default:
					t.Errorf("Put: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if same && (fresh.Load() != 1 || dup.Load() != n-1) {
			t.Fatalf("%d racing retries of one message with one key: %d fresh, %d Duplicate, %d ErrSpent; want 1 fresh, the rest Duplicate",
				n, fresh.Load(), dup.Load(), refused.Load())
		}
		if !same && (fresh.Load() != 1 || refused.Load() != n-1) {
			t.Fatalf("%d Puts of different messages with one key: %d stored, %d Duplicate, %d ErrSpent; want 1 stored, the rest ErrSpent",
				n, fresh.Load(), dup.Load(), refused.Load())
		}
	}
	if msgs := fetchAll(t, s, m); len(msgs) != 4 {
		t.Fatalf("%d messages stored by 4 tokens, want 4", len(msgs))
	}
}
