package hostile_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
)

// TestUpdateScheduleEnvelopes checks the update schedule's cost
// (docs/protocol.md §11.7) against a run: in a group of n = 4 where each
// member writes m messages, a member receives (n-1)·m of them and so
// commits floor((n-1)·m / (N + ⌊p·N/n⌋)) updates (p its leaf position:
// the schedule's stagger), each sent to the n-1 others. The
// handshake envelopes the members send must be that many, plus at most
// half again for commits that lost a fork choice and were retried, less
// at most each member's last update: an update falls due only at a text
// written in the member's current epoch (update.go), and after the last
// round none may come.
func TestUpdateScheduleEnvelopes(t *testing.T) {
	const n, m, N = 4, 4, 4
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	var mu sync.Mutex
	counting := false
	handshakes := map[string]int{}
	var u []*client.Client
	handles := []string{"alice", "bob", "carol", "dave"}
	for _, hd := range handles {
		o := h.ClientOptions(t)
		o.UpdateAfter, o.UpdateEvery = N, -1
		o.SentEnvelope = func(e client.SentEnvelope) {
			mu.Lock()
			defer mu.Unlock()
			if counting && e.Kind == 0 && !e.Intro {
				handshakes[hd]++
			}
		}
		u = append(u, h.NewUserWith(t, hd, hd, o))
	}
	ctx := memberCtx(t)
	for _, c := range u {
		for _, hd := range handles {
			if hd != c.Handle() {
				addContacts(t, ctx, hd, c)
			}
		}
	}
	groupG(t, ctx, u[0], u[1:]...)
	// Every member's count starts at 0: each commits once, and the
	// retries of those that lose are settled.
	for _, c := range u {
		if err := c.Update(ctx, "#g"); err != nil {
			t.Fatal(err)
		}
	}
	settle(t, ctx, u...)
	mu.Lock()
	counting = true
	mu.Unlock()
	for i := range m {
		for _, c := range u {
			if err := c.Send(ctx, "#g", fmt.Sprintf("%d from %s", i, c.Handle())); err != nil {
				t.Fatal(err)
			}
			for _, r := range u {
				memberEvents(t, ctx, r, client.AlarmMemberPolicy)
			}
		}
	}
	settle(t, ctx, u...)
	sameEpoch(t, ctx, "#g", u...)
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, hd := range handles {
		total += handshakes[hd]
	}
	want := 0
	for p := range n {
		want += (n - 1) * m / (N + p*N/n) * (n - 1)
	}
	t.Logf("handshake envelopes sent: %d (per member %v); the schedule predicts %d; ratio %.2f", total, handshakes, want, float64(total)/float64(want))
	if low := want - n*(n-1); total < low || total > want*3/2 {
		t.Fatalf("%d handshake envelopes, want %d to %d", total, low, want*3/2)
	}
}
