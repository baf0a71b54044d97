package hostile_test

import (
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
)

// TestRejoinTwoAtOnce: bob and carol both fell behind (the commit they
// missed was purged) and both rejoin from alice's answer of one epoch:
// their two resyncs compete on that epoch, and the fork choice keeps one
// (docs/protocol.md §11.6). Before, the one whose resync lost stayed on a
// branch nobody followed, reading nothing, until it asked again an hour
// later. Now the first message of its epoch that does not decrypt tells it
// its resync lost, and it asks again at once: all four end in one epoch,
// with one epoch authenticator, and read what alice writes next.
func TestRejoinTwoAtOnce(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newRejoiningMembers(t, h, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := u[0], u[1], u[2], u[3]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol, dave)

	if err := alice.Update(ctx, "#g"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, dave)
	if n, err := h.Store().PurgeExpired(ctx, time.Now().Add(22*24*time.Hour), 21*24*time.Hour); err != nil || n == 0 {
		t.Fatalf("purge: %d messages, %v", n, err)
	}
	if err := alice.Send(ctx, "#g", "you two, ask me"); err != nil {
		t.Fatal(err)
	}
	memberEvents(t, ctx, bob, client.AlarmDropped)
	memberEvents(t, ctx, carol, client.AlarmDropped)
	memberEvents(t, ctx, alice, client.AlarmDropped) // answers both, of one epoch
	memberEvents(t, ctx, bob, client.AlarmDropped)   // rejoins
	memberEvents(t, ctx, carol, client.AlarmDropped) // rejoins on the same epoch
	for range 2 {
		for _, c := range []*client.Client{alice, dave, bob, carol} {
			memberEvents(t, ctx, c, client.AlarmDropped)
		}
	}
	if err := alice.Send(ctx, "#g", "where is everyone"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		for _, c := range []*client.Client{bob, carol, alice, dave} {
			memberEvents(t, ctx, c, client.AlarmDropped)
		}
	}
	sameEpoch(t, ctx, "#g", alice, bob, carol, dave)
	for _, c := range []*client.Client{alice, bob, carol, dave} {
		if got := handlesOf(groupOf(t, ctx, c, "#g")); !slices.Equal(got, []string{"alice", "bob", "carol", "dave"}) {
			t.Errorf("%s's members: %v", c.Handle(), got)
		}
	}
	if err := alice.Send(ctx, "#g", "all here"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, carol, dave} {
		if got := textsIn(memberEvents(t, ctx, c, client.AlarmDropped)); !slices.Equal(got, []string{"alice: all here"}) {
			t.Errorf("%s read %q", c.Handle(), got)
		}
	}
}
