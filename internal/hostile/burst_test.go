package hostile_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/wire"
)

// TestHealUpdateBurstStaggered: alice writes a burst of texts to a group
// of five with a small update schedule (N = 5 texts). Each text reaches
// the four others at once: the server holds back the handshake messages
// they send while reading it until all four have read it (as when all are
// online and read the text as it comes), then everyone reads everything.
// Each of the four must update (healing), and the burst must cost about
// one update commit per epoch: the members' thresholds are staggered,
// N + ⌊p·N/n⌋ texts for the member at leaf position p (docs/protocol.md
// §11.7). Before, the N-th text made all four due at once: four commits
// on one epoch, of which three lost the fork choice and were made again
// on the next, where they competed again.
func TestHealUpdateBurstStaggered(t *testing.T) {
	const n, N, texts = 5, 5, 2 * 5
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	var mu sync.Mutex
	counting, holding := false, false
	sent := map[string]int{} // handshake envelopes sent, per member
	held := map[wire.MessageID]bool{}
	handles := []string{"alice", "bob", "carol", "dave", "erin"}
	var u []*client.Client
	for _, hd := range handles {
		o := h.ClientOptions(t)
		o.UpdateAfter, o.UpdateEvery = N, -1
		o.SentEnvelope = func(e client.SentEnvelope) {
			mu.Lock()
			defer mu.Unlock()
			if counting && e.Kind == 0 && !e.Intro {
				sent[hd]++
				if holding {
					held[e.ID] = true
				}
			}
		}
		u = append(u, h.NewUserWith(t, hd, hd, o))
	}
	h.Rewrite(func(x *hostile.Exchange) {
		d, ok := x.Response.(*wire.Delivery)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if holding && held[d.MessageID] {
			x.Drop = true // read at a later fetch
		}
	})
	ctx := memberCtx(t)
	for _, c := range u {
		for _, hd := range handles {
			if hd != c.Handle() {
				addContacts(t, ctx, hd, c)
			}
		}
	}
	alice, others := u[0], u[1:]
	groupG(t, ctx, alice, others...)
	e0 := sameEpoch(t, ctx, "#g", u...)
	mu.Lock()
	counting = true
	mu.Unlock()
	most := 0 // the most update commits made on one epoch
	for i := range texts {
		ep := sameEpoch(t, ctx, "#g", u...)
		if err := alice.Send(ctx, "#g", fmt.Sprint("burst ", i)); err != nil {
			t.Fatal(err)
		}
		// Every other member reads the text before any commit made
		// upon it reaches another: each commits, if due, on the epoch
		// all stand in.
		mu.Lock()
		holding = true
		before := map[string]int{}
		for hd, k := range sent {
			before[hd] = k
		}
		mu.Unlock()
		for _, c := range others {
			memberEvents(t, ctx, c, client.AlarmMemberPolicy)
		}
		mu.Lock()
		holding = false
		clear(held)
		made := 0
		for _, c := range others {
			if sent[c.Handle()] > before[c.Handle()] {
				made++
			}
		}
		mu.Unlock()
		if made > 0 {
			t.Logf("text %d: %d update commit(s) on epoch %d", i+1, made, ep)
		}
		most = max(most, made)
		settle(t, ctx, u...)
	}
	e1 := sameEpoch(t, ctx, "#g", u...)
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, c := range others {
		if sent[c.Handle()] == 0 {
			t.Errorf("%s made no update in %d texts: its leaf was never refreshed", c.Handle(), texts)
		}
		total += sent[c.Handle()]
	}
	made := total / (n - 1) // each commit is sent to the n-1 others
	lost := made - int(e1-e0)
	t.Logf("%d update commits for %d epochs (%d lost the fork choice); at most %d on one epoch", made, e1-e0, lost, most)
	if most > 1 || lost > 1 {
		t.Fatalf("the burst made %d update commits on one epoch and %d that lost, want about one per epoch", most, lost)
	}
}
