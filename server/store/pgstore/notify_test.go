package pgstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/server/store/pgstore"
)

// wakes runs s.Wakes until the test ends and returns what it reports,
// after the first WakeListening.
func wakes(t *testing.T, s *pgstore.Store) <-chan store.Wake {
	t.Helper()
	ch := make(chan store.Wake, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Wakes(ctx, func(w store.Wake) { ch <- w }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Wakes: %v", err)
		}
	})
	expectWake(t, ch, store.WakeListening, [32]byte{})
	return ch
}

// expectWake waits (generously) for a wake of kind for id, skipping
// others of other mailboxes.
func expectWake(t *testing.T, ch <-chan store.Wake, kind store.WakeKind, id [32]byte) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case w := <-ch:
			if w.Kind == kind && (kind == store.WakeListening || kind == store.WakeLost || w.Tag == tagOf(id)) {
				return
			}
		case <-deadline:
			t.Fatalf("no wake of kind %d for %x within 30 s", kind, id[:4])
		}
	}
}

func newBox(t *testing.T, s store.Store) store.Mailbox {
	t.Helper()
	m := store.Mailbox{Created: time.Now()}
	rand.Read(m.ReceiveID[:])
	rand.Read(m.SendID[:])
	if err := s.CreateMailbox(context.Background(), m, nil); err != nil {
		t.Fatal(err)
	}
	return m
}

func put(t *testing.T, s store.Store, m store.Mailbox) {
	t.Helper()
	var id [store.MessageIDSize]byte
	rand.Read(id[:])
	if _, err := s.Put(context.Background(), m.SendID, id, []byte("envelope"), store.Quota{}, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
}

// TestWakesAcrossStores: two Stores (nodes) on one database. A send
// through A wakes B's listener with the mailbox, not A's own; so do a
// deletion and an idle purge through A. After B's listener connection is
// killed (pg_terminate_backend), B reports the loss, listens again (a
// WakeListening: the server wakes every subscription) and hears later
// sends.
func TestWakesAcrossStores(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	a, b := open(t, url), open(t, url+"&application_name=qpc-node-b")
	wa, wb := wakes(t, a), wakes(t, b)
	ctx := context.Background()

	m := newBox(t, a)
	put(t, a, m)
	expectWake(t, wb, store.WakeStored, m.ReceiveID)
	// A hears B's send, and has not heard its own before it.
	n := newBox(t, b)
	put(t, b, n)
	select {
	case w := <-wa:
		if w.Kind != store.WakeStored || w.Tag != tagOf(n.ReceiveID) {
			t.Fatalf("A's listener reported %+v first, want B's send to %x (its own sends are not reported)", w, n.ReceiveID[:4])
		}
	case <-time.After(30 * time.Second):
		t.Fatal("A's listener heard nothing of B's send")
	}

	if err := a.DeleteMailbox(ctx, m.ReceiveID); err != nil {
		t.Fatal(err)
	}
	expectWake(t, wb, store.WakeDeleted, m.ReceiveID)
	idle := newBox(t, b)
	if _, err := a.PurgeIdle(ctx, time.Now().Add(3*24*time.Hour), 24*time.Hour, nil, nil); err != nil {
		t.Fatal(err)
	}
	expectWake(t, wb, store.WakeDeleted, idle.ReceiveID)

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var killed int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'qpc-node-b listener' AND datname = current_database()`).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminating B's listener: %d terminated, %v", killed, err)
	}
	expectWake(t, wb, store.WakeLost, [32]byte{})
	expectWake(t, wb, store.WakeListening, [32]byte{})
	o := newBox(t, a)
	put(t, a, o)
	expectWake(t, wb, store.WakeStored, o.ReceiveID)
}

// TestKeepInUse: a mailbox kept in use on a day is not purged idle on a
// later day within the idle time, and is once the idle time passed.
func TestKeepInUse(t *testing.T) {
	t.Parallel()
	s := open(t, pgtest.DB(t))
	ctx := context.Background()
	m := newBox(t, s)
	now := time.Now()
	later := now.Add(10 * 24 * time.Hour)
	if err := s.KeepInUse(ctx, [][32]byte{m.ReceiveID}, later); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PurgeIdle(ctx, later.Add(24*time.Hour), 2*24*time.Hour, nil, nil); err != nil || n != 0 {
		t.Fatalf("PurgeIdle a day after the mailbox was kept in use: %d deleted, %v", n, err)
	}
	if n, err := s.PurgeIdle(ctx, later.Add(4*24*time.Hour), 2*24*time.Hour, nil, nil); err != nil || n != 1 {
		t.Fatalf("PurgeIdle four days after: %d deleted, %v; want 1", n, err)
	}
}

// TestWakesIdlePing: a listener that hears nothing for its idle time
// pings its connection and keeps it (no WakeLost, no reconnect), and
// still hears the next send.
func TestWakesIdlePing(t *testing.T) {
	old := pgstore.SetListenIdle(50 * time.Millisecond)
	t.Cleanup(func() { pgstore.SetListenIdle(old) }) // after the listener stopped
	url := pgtest.DB(t)
	a, b := open(t, url), open(t, url)
	wb := wakes(t, b)
	// Some twenty idle periods, each ending in a ping.
	time.Sleep(time.Second)
	m := newBox(t, a)
	put(t, a, m)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case w := <-wb:
			if w.Kind == store.WakeLost || w.Kind == store.WakeListening {
				t.Fatalf("an idle listener reported %d: it lost its connection", w.Kind)
			}
			if w.Kind == store.WakeStored && w.Tag == tagOf(m.ReceiveID) {
				return
			}
		case <-deadline:
			t.Fatal("an idle listener did not hear the next send")
		}
	}
}

// testWakeKey is the wake key of the tests' stores: the nodes of one
// deployment share theirs.
var testWakeKey = bytes.Repeat([]byte{0x77}, store.WakeKeySize)

// tagOf is the mailbox's tag in the tests' wakes.
func tagOf(id [store.MailboxIDSize]byte) [store.WakeTagSize]byte {
	return store.WakeTagOf(testWakeKey, id)
}

// TestOpenNeedsWakeKey: a store without the wake key its nodes share
// would name mailboxes in tags no other node finds: Open refuses it.
func TestOpenNeedsWakeKey(t *testing.T) {
	_, err := pgstore.Open(context.Background(), "postgres://qpc@127.0.0.1:1/qpc", store.Options{})
	if err == nil || !strings.Contains(err.Error(), "wake key") {
		t.Fatalf("Open without a wake key: %v", err)
	}
}
