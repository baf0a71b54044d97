package hostile_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/quicprochat/qpc/internal/hostile"
)

// TestHealOneWayPeerKeepsUp: a peer who only sends and never reads falls
// behind nothing. Bob's scheduled updates (a commit every few texts) are
// made only once alice, who never syncs, writes in bob's current epoch,
// so her texts stay readable for good; before, each update left her one
// epoch further behind, and past the epochs bob keeps (4) her texts were
// lost without an alarm.
func TestHealOneWayPeerKeepsUp(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	o := h.ClientOptions(t)
	o.UpdateAfter = 3
	alice, bob := h.NewUser(t, "alice", "alice"), h.NewUserWith(t, "bob", "bob", o)
	ctx := ctxT(t)
	if err := alice.Send(ctx, "bob", "hello bob"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); len(got) != 1 {
		t.Fatalf("bob got %q", got)
	}
	if err := bob.Send(ctx, "alice", "hello alice"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, alice); len(got) != 1 {
		t.Fatalf("alice got %q", got)
	}
	defer alice.StartRefills(context.Background())()
	defer bob.StartRefills(context.Background())()
	for i := range 24 {
		waitTokens(t, alice)
		text := fmt.Sprint("m", i)
		if err := alice.Send(ctxT(t), "bob", text); err != nil {
			t.Fatal(err)
		}
		if got := texts(t, bob); len(got) != 1 || got[0] != "alice: "+text {
			t.Fatalf("text %d: bob got %q", i, got)
		}
	}
}
