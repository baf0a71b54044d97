package hostile_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
)

// healN is the update schedule's message bound in the healing tests.
const healN = 3

// healBound is the healing bound in texts of the member at leaf position
// p of n with the schedule's bound N: its update is staggered by
// ⌊p·N/n⌋ texts (docs/protocol.md §11.7).
func healBound(N, p, n int) int { return N + p*N/n }

// healUsers makes alice, carol and a bob whose updates follow opts'
// schedule, each a contact of the others.
func healUsers(t *testing.T, h *hostile.Server, after int, every time.Duration) (alice, bob, carol *client.Client) {
	o := h.ClientOptions(t)
	o.UpdateAfter, o.UpdateEvery, o.Now = after, every, h.Clock.Now
	// Only bob's clock is moved on (TestHealGroupAfterT): the
	// directory's epochs stay in real time.
	o.KTMaxEpochAge = 3 * time.Hour
	bob = h.NewUserWith(t, "bob", "bob", o)
	alice, carol = h.NewUser(t, "alice", "alice"), h.NewUser(t, "carol", "carol")
	ctx := memberCtx(t)
	for _, u := range []*client.Client{alice, bob, carol} {
		for _, hd := range []string{"alice", "bob", "carol"} {
			if hd != u.Handle() {
				addContacts(t, ctx, hd, u)
			}
		}
	}
	return alice, bob, carol
}

// heal plays the thief: it copies bob's state of target, then alice
// writes msgs messages, one at a time, each read by the copy (from bob's
// mailbox, before bob) and by bob, who then may commit his scheduled
// update, which alice applies before writing again. It returns the
// number of alice's messages the copy read.
func heal(t *testing.T, ctx context.Context, h *hostile.Server, alice, bob *client.Client, others []*client.Client, target, aliceTarget string, msgs int, between func()) int {
	t.Helper()
	thief, err := bob.Steal(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := protocol.Dial(ctx, h.Addr("thief"), protocol.Options{Policy: h.Policy()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	read, lastRead := 0, -1
	for i := range msgs {
		if between != nil {
			between()
		}
		text := fmt.Sprintf("secret %d", i)
		if err := alice.Send(ctx, aliceTarget, text); err != nil {
			t.Fatal(err)
		}
		got, err := thief.Read(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(got, text) {
			read++
			lastRead = i
		}
		ev := memberEvents(t, ctx, bob, client.AlarmMemberPolicy)
		if !slices.Contains(textsIn(ev), "alice: "+text) {
			t.Fatalf("bob did not read %q", text)
		}
		for _, u := range append([]*client.Client{alice}, others...) {
			memberEvents(t, ctx, u, client.AlarmMemberPolicy)
		}
	}
	t.Logf("the copy of bob's state read %d of %d messages (the last: #%d)", read, msgs, lastRead)
	return lastRead + 1
}

// TestHealGroupAfterN: a thief copies bob's whole state of a group once;
// bob goes on using the group. After at most healN messages received
// (and his stagger: he is at leaf 1 of 3, so healN + 1),
// bob's scheduled update (docs/protocol.md §11.7) locks the copy out: it
// reads nothing alice writes after. Before, no member ever updated its
// leaf, and the copy read the group for good.
func TestHealGroupAfterN(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	alice, bob, carol := healUsers(t, h, healN, -1)
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol)
	if n, b := heal(t, ctx, h, alice, bob, []*client.Client{carol}, "#g", "#g", 3*healN, nil), healBound(healN, 1, 3); n > b {
		t.Fatalf("the copy of bob's state read alice's messages up to #%d, past the bound of %d", n, b)
	}
}

// TestHealDirectAfterN is TestHealGroupAfterN for a direct chat.
func TestHealDirectAfterN(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	alice, bob, _ := healUsers(t, h, healN, -1)
	ctx := memberCtx(t)
	if err := alice.Send(ctx, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob)
	if n, b := heal(t, ctx, h, alice, bob, nil, "alice", "bob", 3*healN, nil), healBound(healN, 1, 2); n > b {
		t.Fatalf("the copy of bob's state read alice's messages up to #%d, past the bound of %d", n, b)
	}
}

// TestHealGroupAfterT: as TestHealGroupAfterN with the time bound alone:
// once UpdateEvery has passed, the first message bob receives makes him
// update, and the copy reads nothing after it.
func TestHealGroupAfterT(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	alice, bob, carol := healUsers(t, h, -1, time.Hour)
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol)
	i := 0
	n := heal(t, ctx, h, alice, bob, []*client.Client{carol}, "#g", "#g", 4, func() {
		if i == 1 {
			h.Clock.Advance(61 * time.Minute)
		}
		i++
	})
	if n > 2 {
		t.Fatalf("the copy of bob's state read alice's messages up to #%d, past the hour", n)
	}
}
