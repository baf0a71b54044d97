package pgstore_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

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
			if w.Kind == store.WakeStored && w.ReceiveID == marker.ReceiveID {
				return
			}
			if w.ReceiveID == m.ReceiveID || w.ReceiveID == n.ReceiveID {
				t.Fatalf("a send that stored nothing woke another node: %+v", w)
			}
		case <-deadline:
			t.Fatal("B did not hear the marker send within 30 s")
		}
	}
}
