package e2e

import (
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client"
)

// TestMessengerMessageFromPastEpoch: bob writes to the group while alice,
// the creator, adds dave without having read bob's message first. Bob's
// message is of the epoch before alice's commit; alice still reads it (the
// previous epoch's state is kept for a while), and bob and carol move on
// to the new epoch with dave.
func TestMessengerMessageFromPastEpoch(t *testing.T) {
	ms := startMessengerServer(t)
	ctx := ctxT(t)
	alice, bob, carol, dave := newUser(t, ms, "alice"), newUser(t, ms, "bob"), newUser(t, ms, "carol"), newUser(t, ms, "dave")
	addContacts(t, ctx, "alice", bob, carol, dave)
	if err := alice.CreateGroup(ctx, "team", []string{"bob", "carol"}); err != nil {
		t.Fatal(err)
	}
	texts(t, bob)
	texts(t, carol)
	texts(t, alice)
	if err := bob.Send(ctx, "#team", "written before dave"); err != nil {
		t.Fatal(err)
	}
	// alice commits before reading it.
	if err := alice.AddMember(ctx, "team", "dave"); err != nil {
		t.Fatal(err)
	}
	ev, err := alice.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ev {
		switch e.Kind {
		case client.EventMessage:
			got = append(got, e.From+": "+e.Text)
		case client.EventAlarm:
			t.Fatalf("alice: alarm %v", e.Alarm)
		}
	}
	if !slices.Equal(got, []string{"bob: written before dave"}) {
		t.Fatalf("alice got %q", got)
	}
	if got := texts(t, carol); !slices.Equal(got, []string{"bob: written before dave"}) {
		t.Fatalf("carol got %q", got)
	}
	texts(t, dave)
	texts(t, bob)
	texts(t, alice)
	if err := bob.Send(ctx, "#team", "hello dave"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*client.Client{alice, carol, dave} {
		if got := texts(t, u); !slices.Equal(got, []string{"bob: hello dave"}) {
			t.Fatalf("%s got %q", u.Handle(), got)
		}
	}
}
