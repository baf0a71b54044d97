package hostile_test

import (
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
)

// TestConcurrentCommitJoinerOnLosingBranch: alice adds dave while bob,
// another admin, removes carol on the same epoch. A removal ranks first
// in the fork choice (docs/protocol.md §11.6), so alice's add loses and
// dave's Welcome is of a branch nobody stays on. Alice makes her add
// again on the winning epoch; dave must end up in the group with the
// others, in their epoch, and read what they write after, and they what
// he writes.
func TestConcurrentCommitJoinerOnLosingBranch(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := u[0], u[1], u[2], u[3]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol)
	if err := alice.SetAdmins(ctx, "#g", []string{"alice", "bob"}); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, carol)
	e0 := sameEpoch(t, ctx, "#g", alice, bob, carol)

	// Both commit on epoch e0, neither having read the other's commit.
	if err := alice.AddMember(ctx, "#g", "dave"); err != nil {
		t.Fatal(err)
	}
	if err := bob.RemoveMember(ctx, "#g", "carol"); err != nil {
		t.Fatal(err)
	}
	// Dave reads his Welcome (of alice's branch) before anyone reads
	// the competing commits.
	memberEvents(t, ctx, dave, client.AlarmMemberPolicy)
	for range 3 {
		settle(t, ctx, alice, bob, dave, carol)
	}
	e := sameEpoch(t, ctx, "#g", alice, bob, dave)
	if e <= e0+1 {
		t.Fatalf("the group is at epoch %d, want past %d (bob's removal, then alice's add made again)", e, e0+1)
	}
	for _, c := range []*client.Client{alice, bob, dave} {
		if m := membersOf(t, ctx, c, "g"); !slices.Equal(m, []string{"alice", "bob", "dave"}) {
			t.Fatalf("%s sees the members %v, want alice, bob, dave", c.Handle(), m)
		}
	}
	if err := alice.Send(ctx, "#g", "welcome, dave"); err != nil {
		t.Fatal(err)
	}
	if err := dave.Send(ctx, "#g", "hi all"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, dave, client.AlarmMemberPolicy)); !slices.Contains(got, "alice: welcome, dave") {
		t.Fatalf("dave read %v", got)
	}
	for _, c := range []*client.Client{alice, bob} {
		if got := textsIn(memberEvents(t, ctx, c, client.AlarmMemberPolicy)); !slices.Contains(got, "dave: hi all") {
			t.Fatalf("%s read %v", c.Handle(), got)
		}
	}
	if got := textsIn(memberEvents(t, ctx, carol, client.AlarmMemberPolicy)); len(got) > 0 {
		t.Fatalf("carol, removed, read %v", got)
	}
}
