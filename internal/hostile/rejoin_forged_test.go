package hostile_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/mls"
)

// TestHostileMemberForgedGroupInfo: bob fell behind alice's group (the
// commit he missed was purged) and asks eve, whose message showed him the
// gap, for the group's state (docs/protocol.md §11.8). Eve, a member,
// answers from a branch of her own: she applied a commit she never sent
// anyone, so her GroupInfo is signed by her, of the group's ID, every
// leaf a real member, and of a later epoch than the group's. Bob rejoins
// her branch, where nobody else is: what alice and carol write is of an
// epoch before his, which he holds no state of, and was dropped without
// a word, for good. Now a rejoiner that reads, past the rejoin window, a
// message of another member than the one that answered, that it cannot
// place, asks that member; an answer of another state than its own (and
// than the one it rejoined from) makes it rejoin again: bob is back in
// the group's epoch and reads what alice writes.
func TestHostileMemberForgedGroupInfo(t *testing.T) {
	forgedGroupInfo(t)
}

// forgedGroupInfo plays TestHostileMemberForgedGroupInfo and returns its
// users, bob back in the group's epoch, eve on her branch.
func forgedGroupInfo(t *testing.T) (alice, bob, carol, eve *client.Client, eveOpts client.Options) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	eveOpts = h.ClientOptions(t)
	bobOpts := h.ClientOptions(t)
	bobOpts.RejoinAfter = -1 // asks at the first message of a later epoch
	alice, bob, carol = h.NewUser(t, "alice", "alice"), h.NewUserWith(t, "bob", "bob", bobOpts), h.NewUser(t, "carol", "carol")
	eve = h.NewUserWith(t, "eve", "eve", eveOpts)
	ctx := memberCtx(t)
	all := []*client.Client{alice, bob, carol, eve}
	for _, u := range all {
		for _, v := range all {
			if u != v {
				addContacts(t, ctx, v.Handle(), u)
			}
		}
	}
	groupG(t, ctx, alice, bob, carol, eve)

	// Bob is away while alice commits; the commit is purged before he
	// fetches it.
	if err := alice.Update(ctx, "#g"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, carol, eve)
	if n, err := h.Store().PurgeExpired(ctx, time.Now().Add(22*24*time.Hour), 21*24*time.Hour); err != nil || n == 0 {
		t.Fatalf("purge: %d messages, %v", n, err)
	}
	real := sameEpoch(t, ctx, "#g", alice, carol, eve)
	// Eve moves her state onto a branch of her own: two commits she
	// sends no one.
	eve = patchEve(t, eve, eveOpts, "g", func(_ map[string]json.RawMessage, group []byte) []byte {
		g, err := mls.UnmarshalGroup(group, &mls.Config{})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := g.Commit(&mls.CommitOptions{SkipPending: true}); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := g.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	})
	if err := eve.Send(ctx, "#g", "bob, ask me"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, c := range []*client.Client{bob, eve, bob} {
			memberEvents(t, ctx, c, client.AlarmDropped)
		}
	}
	if e, _, err := bob.EpochAuthenticator(ctx, "#g"); err != nil || e <= real {
		t.Fatalf("bob did not rejoin from eve's answer: epoch %d (the group's %d), %v", e, real, err)
	}
	// Alice and carol write in the group's epoch; bob, on eve's branch,
	// must find his way back.
	for range 3 {
		if err := alice.Send(ctx, "#g", "from alice"); err != nil {
			t.Fatal(err)
		}
		if err := carol.Send(ctx, "#g", "from carol"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*client.Client{bob, alice, carol, bob} {
			memberEvents(t, ctx, c, client.AlarmDropped)
		}
	}
	sameEpoch(t, ctx, "#g", alice, bob, carol)
	if err := alice.Send(ctx, "#g", "bob, are you back?"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, bob, client.AlarmDropped)); !slices.Contains(got, "alice: bob, are you back?") {
		t.Fatalf("bob read %q", got)
	}
	return alice, bob, carol, eve, eveOpts
}

// TestHostileMemberForgedGroupInfoAgain: after TestHostileMemberForgedGroupInfo,
// bob is back in the group's epoch and eve, whose answer nobody else
// shared, is still a member. She moves her branch on past bob's epoch
// and writes to him again: a message of a later epoch, which makes him
// ask its sender for the group's state. Before, bob asked eve again and
// rejoined her branch again from her answer, cut off once more, and the
// two could go on for good, each round a rejoin (an external commit to
// every member) and a window of the group's texts lost to bob. Now a
// member whose answer no other member shared is neither asked nor
// believed again in that conversation: bob stays in the group's epoch
// and reads what alice writes.
func TestHostileMemberForgedGroupInfoAgain(t *testing.T) {
	alice, bob, carol, eve, eveOpts := forgedGroupInfo(t)
	ctx := memberCtx(t)
	settle(t, ctx, alice, bob, carol)
	real := sameEpoch(t, ctx, "#g", alice, bob, carol)
	eve = patchEve(t, eve, eveOpts, "g", func(_ map[string]json.RawMessage, group []byte) []byte {
		g, err := mls.UnmarshalGroup(group, &mls.Config{})
		if err != nil {
			t.Fatal(err)
		}
		for g.Epoch() <= real+1 {
			if _, err := g.Commit(&mls.CommitOptions{SkipPending: true}); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := g.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	})
	if err := eve.Send(ctx, "#g", "bob, ask me again"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, c := range []*client.Client{bob, eve, alice, carol, bob} {
			memberEvents(t, ctx, c, client.AlarmDropped)
		}
	}
	sameEpoch(t, ctx, "#g", alice, bob, carol)
	if err := alice.Send(ctx, "#g", "bob, still with us?"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, bob, client.AlarmDropped)); !slices.Contains(got, "alice: bob, still with us?") {
		t.Fatalf("bob read %q", got)
	}
}
