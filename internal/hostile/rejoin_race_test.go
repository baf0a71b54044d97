package hostile_test

import (
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
)

// TestConcurrentCommitResyncRace: bob, behind, rejoins by external commit
// (a resync, docs/protocol.md §11.8) on the epoch at which carol, who has
// not read it yet, commits an update. Alice and dave read bob's resync
// first, carol her own update first; the fork choice (§11.6) ranks a
// resync with removals, so it wins. Before, a resync for an epoch a member
// had already left was refused outright: carol stayed on her update's
// branch for good and alice, bob and dave on bob's, each side unable to
// read the other. Now carol switches to bob's resync, as with any commit
// that ranks lower, and retries her update: all four end in one epoch with
// one epoch authenticator and read each other.
func TestConcurrentCommitResyncRace(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newRejoiningMembers(t, h, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := u[0], u[1], u[2], u[3]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol, dave)

	// Bob is away while alice commits; the commit is purged.
	if err := alice.Update(ctx, "#g"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, carol, dave)
	if n, err := h.Store().PurgeExpired(ctx, time.Now().Add(22*24*time.Hour), 21*24*time.Hour); err != nil || n == 0 {
		t.Fatalf("purge: %d messages, %v", n, err)
	}
	if err := alice.Send(ctx, "#g", "bob, ask me"); err != nil {
		t.Fatal(err)
	}
	memberEvents(t, ctx, bob, client.AlarmDropped)   // asks alice
	memberEvents(t, ctx, alice, client.AlarmDropped) // answers
	memberEvents(t, ctx, bob, client.AlarmDropped)   // rejoins: his resync goes out
	// Carol, who has not read the resync, commits on the same epoch.
	if err := carol.Update(ctx, "#g"); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		for _, c := range []*client.Client{alice, dave, carol, bob} {
			memberEvents(t, ctx, c, client.AlarmDropped)
		}
	}
	sameEpoch(t, ctx, "#g", alice, bob, carol, dave)
	for _, c := range []*client.Client{alice, bob, carol, dave} {
		if got := handlesOf(groupOf(t, ctx, c, "#g")); !slices.Equal(got, []string{"alice", "bob", "carol", "dave"}) {
			t.Errorf("%s's members: %v", c.Handle(), got)
		}
	}
	if err := carol.Send(ctx, "#g", "one group"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, bob, dave} {
		if got := textsIn(memberEvents(t, ctx, c, client.AlarmDropped)); !slices.Equal(got, []string{"carol: one group"}) {
			t.Errorf("%s read %q", c.Handle(), got)
		}
	}
}
