package pgstore_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/server/store"
)

// TestAttackRefusedSendsWakeNoOtherNode plays a stranger flooding one
// node with sends that store nothing to make every other node work: a
// replayed send (a duplicate: free, the token is not spent and the
// allowance refunds it), a send over the mailbox's quota, and a send
// with a token already spent. None stores a message, so none may reach
// the other nodes as a wake-up: each would wake every subscription to the
// mailbox on every node, and each subscriber would read its mailbox
// again. A stored send through A after them is the marker: PostgreSQL
// delivers notifications in commit order, so once B hears it, B has
// heard everything the refused sends notified.
func TestAttackRefusedSendsWakeNoOtherNode(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	a, b := open(t, url), open(t, url)
	wb := wakes(t, b)
	ctx := context.Background()

	m := newBox(t, a)
	var id [store.MessageIDSize]byte
	rand.Read(id[:])
	quota := store.Quota{MaxMessages: 1}
	if _, err := a.Put(ctx, m.SendID, id, []byte("envelope"), quota, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	expectWake(t, wb, store.WakeStored, m.ReceiveID)

	const replays = 20
	for range replays {
		res, err := a.Put(ctx, m.SendID, id, []byte("envelope"), quota, time.Now(), nil)
		if err != nil || !res.Duplicate {
			t.Fatalf("replayed send: %+v, %v; want a duplicate", res, err)
		}
		var other [store.MessageIDSize]byte
		rand.Read(other[:])
		if _, err := a.Put(ctx, m.SendID, other, []byte("envelope"), quota, time.Now(), nil); err == nil {
			t.Fatal("a send over the count quota was stored")
		}
	}
	n := newBox(t, a)
	spend := &store.Spend{Until: time.Now().Add(time.Hour)}
	rand.Read(spend.Key[:])
	rand.Read(id[:])
	if _, err := a.Put(ctx, n.SendID, id, []byte("envelope"), store.Quota{}, time.Now(), spend); err != nil {
		t.Fatal(err)
	}
	expectWake(t, wb, store.WakeStored, n.ReceiveID)
	for range replays {
		rand.Read(id[:])
		if _, err := a.Put(ctx, n.SendID, id, []byte("envelope"), store.Quota{}, time.Now(), spend); err == nil {
			t.Fatal("a send with a spent token was stored")
		}
	}

	marker := newBox(t, a)
	put(t, a, marker)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case w := <-wb:
			if w.Kind == store.WakeStored && w.Tag == tagOf(marker.ReceiveID) {
				return
			}
			if w.Tag == tagOf(m.ReceiveID) || w.Tag == tagOf(n.ReceiveID) {
				t.Fatalf("a send that stored nothing woke another node: %+v", w)
			}
		case <-deadline:
			t.Fatal("B did not hear the marker send within 30 s")
		}
	}
}

// TestHostileIdleSessionTimeoutKeepsListener plays a careless operator
// who sets idle_session_timeout (PostgreSQL 14+) on the database or the
// server's role, here one second, below the listener's 30 s ping: the
// listener waits for notifications idle, so the database ended its
// session at every timeout; each reconnect lost the wake-ups sent
// meanwhile and made the node wake every subscription it holds, a
// storm every second. The listener must keep one session: it stays
// idle for three timeouts without a WakeLost, and hears the next send.
func TestHostileIdleSessionTimeoutKeepsListener(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t) + "&idle_session_timeout=1000"
	a, b := open(t, url), open(t, url+"&application_name=qpc-idle-b")
	wb := wakes(t, b)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// Poll the listener's session until it has been idle for three
	// timeouts (it passes) or B reports its loss (it fails).
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case w := <-wb:
			if w.Kind == store.WakeLost || w.Kind == store.WakeListening {
				t.Fatalf("the listener lost its session to idle_session_timeout (reported %d)", w.Kind)
			}
		default:
		}
		var idle float64
		err := admin.QueryRow(ctx, `SELECT coalesce(max(extract(epoch FROM clock_timestamp() - state_change)), 0)
			FROM pg_stat_activity WHERE application_name = 'qpc-idle-b listener' AND datname = current_database() AND state = 'idle'`).Scan(&idle)
		if err != nil {
			t.Fatal(err)
		}
		if idle >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the listener's session was never idle for 3 s within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := newBox(t, a)
	put(t, a, m)
	for {
		select {
		case w := <-wb:
			if w.Kind == store.WakeLost || w.Kind == store.WakeListening {
				t.Fatalf("the listener lost its session to idle_session_timeout (reported %d)", w.Kind)
			}
			if w.Kind == store.WakeStored && w.Tag == tagOf(m.ReceiveID) {
				return
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the listener did not hear the next send within 30 s")
		}
	}
}

// TestHostileFlappingListenerBacksOff plays whoever can end the
// listener's session over and over (a middlebox resetting connections,
// a pooler, an operator's script terminating backends): every reconnect
// makes the node wake every subscription it holds, so a listener that
// reconnects at once after a session that did not last would turn each
// kill into a storm of mailbox reads. A session ended right after it
// began must not reset the backoff: the waits before reconnecting
// double (100 ms, 200 ms, ... 5 s), so the fifth reconnect comes at
// least 1.6 s after its loss (a lower bound: load only lengthens it).
func TestHostileFlappingListenerBacksOff(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	b := open(t, url+"&application_name=qpc-flap-b")
	wb := wakes(t, b)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	next := func(kind store.WakeKind) time.Time {
		t.Helper()
		for {
			select {
			case w := <-wb:
				if w.Kind == kind {
					return time.Now()
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no wake of kind %d within 30 s", kind)
			}
		}
	}
	var gap time.Duration
	for range 5 {
		var killed int
		if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = 'qpc-flap-b listener' AND datname = current_database()`).Scan(&killed); err != nil || killed < 1 {
			t.Fatalf("terminating B's listener: %d terminated, %v", killed, err)
		}
		lost := next(store.WakeLost)
		gap = next(store.WakeListening).Sub(lost)
	}
	if gap < 1600*time.Millisecond {
		t.Fatalf("the fifth reconnect of a listener killed as soon as it listened came %v after its loss, want at least 1.6 s (backoff)", gap)
	}
}
