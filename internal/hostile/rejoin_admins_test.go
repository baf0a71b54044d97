package hostile_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
)

// TestHostileMemberRejoinForgedAdmins: eve, a member but not an admin of
// alice's group, is the member bob asks for the group's state when he
// has fallen behind (her message showed him the gap, docs/protocol.md
// §11.8). Her answer is a true GroupInfo, but its admin list names eve
// alone. Before, bob took that list as the group's: eve's commit removing
// alice, which alice and carol refuse, was applied by bob (his view lost
// alice and left the group's epoch for good), and alice's own commits
// would have been refused by him. Now a rejoiner keeps its own admin
// list unless the answer comes from one of its admins: bob refuses eve's
// commit with an alarm, stays in the group's epoch with alice in it, and
// reads what alice writes next.
func TestHostileMemberRejoinForgedAdmins(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	eveOpts := h.ClientOptions(t)
	bobOpts := h.ClientOptions(t)
	bobOpts.RejoinAfter = -1 // asks at the first message of a later epoch
	alice, bob, carol := h.NewUser(t, "alice", "alice"), h.NewUserWith(t, "bob", "bob", bobOpts), h.NewUser(t, "carol", "carol")
	eve := h.NewUserWith(t, "eve", "eve", eveOpts)
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
	// Eve's state says she is the one admin; her client answers with it.
	eve = patchEve(t, eve, eveOpts, "g", func(rec map[string]json.RawMessage, _ []byte) []byte {
		rec["Admins"], _ = json.Marshal([]string{"eve"})
		return nil
	})
	if err := eve.Send(ctx, "#g", "bob, ask me"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		for _, c := range []*client.Client{bob, eve, alice, carol} {
			memberEvents(t, ctx, c, client.AlarmDropped)
		}
	}
	sameEpoch(t, ctx, "#g", alice, bob, carol, eve)
	if got, err := bob.Admins(ctx, "#g"); err != nil || !slices.Equal(got, []string{"alice"}) {
		t.Errorf("bob's admins after rejoining from eve's answer: %v %v", got, err)
	}

	// Eve, an admin in her own view, removes alice.
	if err := eve.RemoveMember(ctx, "#g", "alice"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, carol, bob} {
		memberEvents(t, ctx, c, client.AlarmMemberPolicy, client.AlarmDropped)
	}
	for _, c := range []*client.Client{alice, bob, carol} {
		if got := handlesOf(groupOf(t, ctx, c, "#g")); !slices.Equal(got, []string{"alice", "bob", "carol", "eve"}) {
			t.Errorf("%s's members after eve's removal of alice: %v", c.Handle(), got)
		}
	}
	sameEpoch(t, ctx, "#g", alice, bob, carol)
	if err := alice.Send(ctx, "#g", "still here"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, bob, client.AlarmDropped)); !slices.Equal(got, []string{"alice: still here"}) {
		t.Fatalf("bob read %q", got)
	}
}
