package hostile_test

import (
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
)

// TestCreatorGoneReAdd: alice creates a group, makes bob an admin too and
// leaves. Her leaf 0 is now blank, and an add fills the leftmost blank
// leaf (RFC 9420 §7.7): dave, added by bob, takes leaf 0 and must not
// take himself for the group's creator; carol, removed and added again
// by bob, gets a Welcome whose leaf 0 is no longer alice. Before, dave's
// `qpc group` said he had created the group, and carol's client refused
// bob's Welcome ("for the group ID of g, which alice created"): an admin
// could not re-add anyone once the creator had gone. Every view names bob
// the admin and says the creator left.
func TestCreatorGoneReAdd(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := u[0], u[1], u[2], u[3]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol)
	if err := alice.SetAdmins(ctx, "#g", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, carol)
	if err := alice.Leave(ctx, "#g"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, bob, carol, alice)
	if err := bob.AddMember(ctx, "#g", "dave"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, bob, carol, dave)
	if err := bob.RemoveMember(ctx, "#g", "carol"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, bob, carol, dave)
	if err := bob.AddMember(ctx, "#g", "carol"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, bob, carol, dave)
	sameEpoch(t, ctx, "#g", bob, carol, dave)
	for _, c := range []*client.Client{bob, carol, dave} {
		v := groupOf(t, ctx, c, "#g")
		if !slices.Equal(handlesOf(v), []string{"bob", "carol", "dave"}) {
			t.Errorf("%s sees the members %v", c.Handle(), handlesOf(v))
		}
		if !slices.Equal(v.Admins, []string{"bob"}) || !v.CreatorLeft || v.Creator == c.Handle() {
			t.Errorf("%s's view: created by %q (left: %v), admins %v; want someone else who left, and bob", c.Handle(), v.Creator, v.CreatorLeft, v.Admins)
		}
	}
	if err := bob.Send(ctx, "#g", "carol, welcome back"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{carol, dave} {
		if got := textsIn(memberEvents(t, ctx, c, client.AlarmMemberPolicy)); !slices.Contains(got, "bob: carol, welcome back") {
			t.Fatalf("%s read %v", c.Handle(), got)
		}
	}
}
