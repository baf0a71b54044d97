package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/tokens"
)

// TestWalletRefillsUnderSyncLoop: a client whose wallet ran dry while it
// still has first-contact envelopes to send (a group's Welcomes, the
// first messages to a person), and which then calls Sync every 100 ms (an
// app polling), still refills on its schedule and sends them within a
// bound. No hostile party is needed: the client used to starve itself.
//
// A refill is an account exchange kept a random 2–4 s quiet gap away
// from every anonymous dial (client/linking.go), in both directions.
//   - "sync": each Sync dialled a fresh first-contact connection for the
//     waiting envelope before finding no token to pay with, so a dial came
//     every 100 ms, the gap never came and the refill never ran (a
//     24-member group's creator was seen stuck for over 5 minutes). Now
//     an envelope with no token dials nothing.
//   - "sync and lookups": the client also looks a contact up every
//     100 ms (each lookup an anonymous connection of its own, rightly).
//     Now an exchange that found no gap within 2 × the shortest gap makes
//     one: new anonymous dials wait, as they do around every exchange.
func TestWalletRefillsUnderSyncLoop(t *testing.T) {
	ms := startMessengerServer(t)
	for _, tc := range []struct {
		name    string
		lookups bool
	}{{"sync", false}, {"sync and lookups", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			prefix := "starve"
			if tc.lookups {
				prefix = "starvel"
			}
			owner := newUserWith(t, ms, prefix+"-owner", func(o *client.Options) { o.RefillMean = 100 * time.Millisecond })
			peer := prefix + "-peer"
			newUser(t, ms, peer)
			// Registration filled the wallet (before any anonymous dial);
			// spend it on messages to the peer until one waits for a
			// token. From now on no one-shot refill comes (the run has
			// dialled anonymous connections): only the schedule can pay.
			for i := 0; ; i++ {
				if i > 2*tokens.MaxBatch {
					t.Fatal("the wallet never ran dry")
				}
				owner.Send(ctx, peer, "spending")
				if p, err := owner.Pending(); err != nil {
					t.Fatal(err)
				} else if p > 0 {
					break
				}
			}
			stop := owner.StartRefills(ctx)
			defer stop()
			// The bound: the wait for a gap (at most 2 × 2 s, then one of
			// at most 4 s), the exchange, a gap after it (< 4 s) and a few
			// polls, with room for two busy cores.
			const bound = 25 * time.Second
			start := time.Now()
			for {
				owner.Sync(ctx) // "kept in the outbox" until the refill
				if tc.lookups {
					if _, err := owner.AddContact(ctx, peer); err != nil {
						t.Fatal(err)
					}
				}
				p, err := owner.Pending()
				if err != nil {
					t.Fatal(err)
				}
				if p == 0 {
					break
				}
				if time.Since(start) > bound {
					t.Fatalf("a client syncing every 100 ms still had %d envelopes in its outbox after %v: its wallet never refilled", p, bound)
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("the outbox emptied %v after the loop started", time.Since(start).Round(time.Millisecond))
		})
	}
}
