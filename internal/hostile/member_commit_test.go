package hostile_test

import (
	"bytes"
	"context"
	"os"
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/mls"
)

// sameEpoch fails unless every user stands in the same epoch of group
// with the same epoch authenticator.
func sameEpoch(t *testing.T, ctx context.Context, group string, users ...*client.Client) uint64 {
	t.Helper()
	var epoch uint64
	var auth []byte
	for i, u := range users {
		e, a, err := u.EpochAuthenticator(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			epoch, auth = e, a
		} else if e != epoch || !bytes.Equal(a, auth) {
			t.Fatalf("%s is at epoch %d (%x), %s at %d (%x)", users[0].Handle(), epoch, auth[:8], u.Handle(), e, a[:8])
		}
	}
	return epoch
}

// commitAside has c send a commit made by craft on a copy of its state of
// group: c's own state stays where it is, as a hostile client may keep it.
func commitAside(t *testing.T, ctx context.Context, c *client.Client, group string, craft func(*mls.Group) (*mls.CommitResult, error)) {
	t.Helper()
	err := c.SendMLS(ctx, group, nil, func(g *mls.Group) ([]byte, error) {
		raw, err := g.Marshal()
		if err != nil {
			return nil, err
		}
		cp, err := mls.UnmarshalGroup(raw, &mls.Config{})
		if err != nil {
			return nil, err
		}
		res, err := craft(cp)
		if err != nil {
			return nil, err
		}
		return res.Commit, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHostileMemberUnauthorisedCommit: eve, a member but not an admin of
// alice's group, commits. Her update of her own leaf is applied by every
// member (new: before, only the creator's commits were); her commit
// removing carol and her commit making herself the only admin
// (docs/protocol.md §11.6) are refused by every member, who raises a
// member-policy alarm: carol stays, alice stays the admin, and what alice
// writes next reaches bob and carol.
func TestHostileMemberUnauthorisedCommit(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "eve", "carol")
	alice, bob, eve, carol := u[0], u[1], u[2], u[3]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, eve, carol)

	e0 := sameEpoch(t, ctx, "#g", alice, bob, eve, carol)
	if err := eve.Update(ctx, "#g"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, carol, eve)
	if e := sameEpoch(t, ctx, "#g", alice, bob, eve, carol); e != e0+1 {
		t.Fatalf("eve's update was not applied: epoch %d, want %d", e, e0+1)
	}

	commitAside(t, ctx, eve, "#g", func(g *mls.Group) (*mls.CommitResult, error) {
		return g.Commit(&mls.CommitOptions{SkipPending: true, Proposals: []*mls.Proposal{{Type: mls.ProposalTypeRemove, Remove: &mls.Remove{Removed: leafOf(t, g, "carol")}}}})
	})
	commitAside(t, ctx, eve, "#g", func(g *mls.Group) (*mls.CommitResult, error) {
		return g.Commit(&mls.CommitOptions{SkipPending: true, AuthenticatedData: []byte(`qpc-policy/1 {"admins":["eve"]}`)})
	})
	for _, c := range []*client.Client{alice, bob, carol} {
		ev := memberEvents(t, ctx, c, client.AlarmMemberPolicy)
		n := 0
		for _, e := range ev {
			if e.Kind == client.EventAlarm && e.Alarm.Kind == client.AlarmMemberPolicy {
				n++
			}
		}
		if n < 2 {
			t.Errorf("%s raised %d member-policy alarms for eve's two commits, want 2", c.Handle(), n)
		}
	}
	settle(t, ctx, alice, bob, carol, eve)
	sameEpoch(t, ctx, "#g", alice, bob, carol, eve)
	for _, c := range []*client.Client{alice, bob, carol} {
		if m := membersOf(t, ctx, c, "g"); !slices.Equal(m, []string{"alice", "bob", "carol", "eve"}) {
			t.Fatalf("%s sees the members %v after eve's commits", c.Handle(), m)
		}
		if a, err := c.Admins(ctx, "#g"); err != nil || !slices.Equal(a, []string{"alice"}) {
			t.Fatalf("%s sees the admins %v (%v), want alice alone", c.Handle(), a, err)
		}
	}
	if err := alice.Send(ctx, "#g", "still here, carol?"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, carol} {
		if got := textsIn(memberEvents(t, ctx, c)); !slices.Contains(got, "alice: still here, carol?") {
			t.Fatalf("%s read %v", c.Handle(), got)
		}
	}
	if err := eve.AddMember(ctx, "#g", "dave"); err == nil {
		t.Fatal("eve's client let her add a member")
	}
}

// TestCreatorGoneAdminsCarryOn: alice creates a group, hands the admin
// role on to bob too, and her device is gone for good (its state
// deleted). Bob adds dave and removes carol; dave and erin, the members
// left, read each other, and carol reads nothing more. Before, only a
// group's creator could add or remove, so the group's members were
// frozen with her device.
func TestCreatorGoneAdminsCarryOn(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "carol", "dave", "erin")
	alice, bob, carol, dave, erin := u[0], u[1], u[2], u[3], u[4]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol, erin)
	if err := alice.SetAdmins(ctx, "#g", []string{"alice", "bob"}); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, carol, erin)
	for _, c := range []*client.Client{bob, carol, erin} {
		if a, err := c.Admins(ctx, "#g"); err != nil || !slices.Equal(a, []string{"alice", "bob"}) {
			t.Fatalf("%s sees the admins %v (%v)", c.Handle(), a, err)
		}
	}
	deleteState(t, alice)

	if err := bob.AddMember(ctx, "#g", "dave"); err != nil {
		t.Fatalf("bob, an admin, cannot add dave: %v", err)
	}
	settle(t, ctx, bob, carol, dave, erin)
	if err := bob.RemoveMember(ctx, "#g", "carol"); err != nil {
		t.Fatalf("bob, an admin, cannot remove carol: %v", err)
	}
	settle(t, ctx, bob, carol, dave, erin)
	sameEpoch(t, ctx, "#g", bob, dave, erin)
	for _, c := range []*client.Client{bob, dave, erin} {
		if m := membersOf(t, ctx, c, "g"); !slices.Equal(m, []string{"alice", "bob", "dave", "erin"}) {
			t.Fatalf("%s sees the members %v", c.Handle(), m)
		}
	}
	if err := dave.Send(ctx, "#g", "hi from dave"); err != nil {
		t.Fatal(err)
	}
	if err := erin.Send(ctx, "#g", "hi from erin"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, dave)); !slices.Contains(got, "erin: hi from erin") {
		t.Fatalf("dave read %v", got)
	}
	if got := textsIn(memberEvents(t, ctx, erin)); !slices.Contains(got, "dave: hi from dave") {
		t.Fatalf("erin read %v", got)
	}
	if got := textsIn(memberEvents(t, ctx, carol)); len(got) > 0 {
		t.Fatalf("carol, removed, read %v", got)
	}
	// And the one who left cannot be counted on: bob removes alice too.
	if err := bob.RemoveMember(ctx, "#g", "alice"); err != nil {
		t.Fatalf("bob cannot remove alice, whose device is gone: %v", err)
	}
	settle(t, ctx, bob, dave, erin)
	sameEpoch(t, ctx, "#g", bob, dave, erin)
}

// deleteState closes c and deletes its state directory: the device is
// gone.
func deleteState(t *testing.T, c *client.Client) {
	t.Helper()
	home := c.Home()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(home); err != nil {
		t.Fatal(err)
	}
}
