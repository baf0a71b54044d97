package hostile_test

import (
	"context"
	"encoding/hex"
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/mls"
)

// A group's ID is its creator's choice (RFC 9420 §8.1 leaves it to the
// application), so a hostile creator chooses it: the ID of a group the
// victim is in already, or bytes whose hex spells a handle. These tests
// play that creator through the real client (client.StartMLS).

// convID is the hex ID of c's group called name, active or not.
func convID(t *testing.T, ctx context.Context, c *client.Client, name string) string {
	t.Helper()
	convs, err := c.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range convs {
		if cv.Group && cv.Name == name {
			return cv.ID
		}
	}
	t.Fatalf("%s has no group %s", c.Handle(), name)
	return ""
}

// TestHostileMemberGroupIDTakeover: eve, removed from bob's group "team"
// (alice, carol and she were in it), keeps its group ID. She makes a
// group of her own with that ID, commits it past the team's epoch and
// adds alice, who has her as a contact, so the Welcome is joined without
// asking. Alice's team must stay bob's: what she writes to #team reaches
// bob and carol, never eve. Before, a Welcome at a later epoch for a
// group ID alice had counted as a re-admission whoever sent it: eve's
// group replaced bob's in alice's state (same name, same ID), and
// alice's next message to #team went to eve alone.
func TestHostileMemberGroupIDTakeover(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "carol", "eve", "dave")
	alice, bob, carol, eve, dave := u[0], u[1], u[2], u[3], u[4]
	ctx := memberCtx(t)
	if err := bob.CreateGroup(ctx, "team", []string{"alice", "carol", "eve"}); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, carol, eve)
	if err := bob.RemoveMember(ctx, "#team", "eve"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, carol, eve)
	id := convID(t, ctx, eve, "team")
	gid, err := hex.DecodeString(id)
	if err != nil {
		t.Fatal(err)
	}

	// Eve's own group with the team's ID: epoch 1 with dave, an empty
	// commit (epoch 2, sent to nobody), then alice's add (epoch 3, past
	// the team's 2).
	if err := eve.StartMLS(ctx, false, "team", []string{"dave"}, &mls.CreateOptions{GroupID: gid}); err != nil {
		t.Fatal(err)
	}
	if err := eve.SendMLS(ctx, id, []string{}, func(g *mls.Group) ([]byte, error) {
		res, err := g.Commit(&mls.CommitOptions{SkipPending: true})
		if err != nil {
			return nil, err
		}
		return res.Commit, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := eve.AddMember(ctx, id, "alice"); err != nil {
		t.Fatal(err)
	}
	var told bool
	for range 2 {
		ev, err := alice.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		told = told || slices.ContainsFunc(ev, func(e client.Event) bool { return e.Kind == client.EventAlarm })
		// Eve's and dave's group is not alice's: her mailbox
		// announcement in it is dropped, with an alarm.
		memberEvents(t, ctx, eve, client.AlarmDropped)
		memberEvents(t, ctx, dave, client.AlarmDropped)
	}

	if !told {
		t.Errorf("alice was not told of eve's Welcome")
	}
	convs, err := alice.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range convs {
		if cv.ID == id && (cv.Creator != "bob" || !slices.Equal(cv.Members, []string{"alice", "bob", "carol"})) {
			t.Errorf("alice's team is now %s's, members %q", cv.Creator, cv.Members)
		}
	}
	if err := alice.Send(ctx, "#team", "for the team only"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, eve)); len(got) != 0 {
		t.Errorf("eve, removed from the team, read %q", got)
	}
	for _, c := range []*client.Client{bob, carol} {
		if got := textsIn(memberEvents(t, ctx, c)); !slices.Equal(got, []string{"alice: for the team only"}) {
			t.Errorf("%s got %q", c.Handle(), got)
		}
	}
}

// TestHostileMemberGroupIDSpellsHandle: eve, a stranger to alice, starts
// a direct chat with her (joined at once from anyone) whose group ID is
// the two bytes 0xca 0xfe, so that its hex ID is "cafe": the handle of
// alice's friend. What alice sends to cafe must reach cafe, never eve.
// Before, a conversation's hex ID was matched before the handle, and
// alice's "secret meant for cafe" went to eve.
func TestHostileMemberGroupIDSpellsHandle(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	alice, eve, cafe := h.NewUser(t, "alice", "alice"), h.NewUser(t, "eve", "eve"), h.NewUser(t, "cafe", "cafe")
	ctx := memberCtx(t)
	addContacts(t, ctx, "cafe", alice)
	if err := eve.StartMLS(ctx, true, "", []string{"alice"}, &mls.CreateOptions{GroupID: []byte{0xca, 0xfe}}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	memberEvents(t, ctx, eve) // alice's mailbox
	if err := alice.Send(ctx, "cafe", "secret meant for cafe"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, eve)); len(got) != 0 {
		t.Errorf("eve read what alice sent to cafe: %q", got)
	}
	for range 2 {
		if got := textsIn(memberEvents(t, ctx, cafe)); slices.Equal(got, []string{"alice: secret meant for cafe"}) {
			return
		}
	}
	t.Errorf("cafe never got alice's message")
}

// TestHostileMemberDirectChatFlood: eve, a stranger to alice, starts
// five direct chats with her. A direct chat is joined from anyone without
// asking, and each joined costs alice a conversation mailbox and an
// envelope announcing it, a token each; eve needs only alice's
// last-resort KeyPackage, again and again. Alice must join one, not
// five, until she writes in it. Before, she joined all five (five
// mailboxes, five tokens, five conversations stored), without bound.
func TestHostileMemberDirectChatFlood(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	alice, eve := h.NewUser(t, "alice", "alice"), h.NewUser(t, "eve", "eve")
	ctx := memberCtx(t)
	const chats = 5
	for range chats {
		if err := eve.StartMLS(ctx, true, "", []string{"alice"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mbs, err := alice.Mailboxes()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range mbs {
		if m.Conv != "" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("a stranger's %d direct chats cost alice %d conversation mailboxes, want 1", chats, n)
	}
	// Once alice writes in it, eve is a contact and may start another.
	if err := alice.Send(ctx, "eve", "hi eve"); err != nil {
		t.Fatal(err)
	}
	if err := eve.StartMLS(ctx, true, "", []string{"alice"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if mbs, err = alice.Mailboxes(); err != nil {
		t.Fatal(err)
	}
	if len(mbs) != 3 {
		t.Errorf("after alice wrote to eve, eve's new direct chat: alice has %d mailboxes, want 3", len(mbs))
	}
}
