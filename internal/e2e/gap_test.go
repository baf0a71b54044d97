package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// TestMessengerGapDetected: a server that silently drops one of alice's
// messages to bob cannot hide it: the sequence numbers inside the
// encryption show bob exactly which message is missing.
func TestMessengerGapDetected(t *testing.T) {
	ms := startMessengerServer(t)
	ctx := ctxT(t)
	alice := newUser(t, ms, "alice")
	bobLog := &roleLog{}
	opts := messengerOptions(t.TempDir())
	opts.Tap = bobLog.tap
	bob, err := client.Init(ctx, ms.addr, ms.pin(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if err := bob.Register(ctx, "bob", []byte("password of bob")); err != nil {
		t.Fatal(err)
	}
	if err := alice.Send(ctx, "bob", "one"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: one"}) {
		t.Fatalf("bob got %q", got)
	}
	texts(t, alice) // bob's mailbox announcement
	// bob's conversation mailbox, as his own fetches name it.
	var convBox wire.ID
	for role, reqs := range bobLog.requests(t, dial(t, ms.testServer, protocol.Options{}).Policy()) {
		for _, m := range reqs {
			if f, ok := m.(*wire.Fetch); ok && strings.HasPrefix(role, "conv:") {
				convBox = f.ReceiveID
			}
		}
	}
	if convBox == (wire.ID{}) {
		t.Fatal("bob never fetched a conversation mailbox")
	}
	for _, text := range []string{"two", "three", "four"} {
		if err := alice.Send(ctx, "bob", text); err != nil {
			t.Fatal(err)
		}
	}
	// The server drops "three".
	msgs, _, err := ms.store.Fetch(ctx, convBox, 0, 10, time.Now())
	if err != nil || len(msgs) != 3 {
		t.Fatalf("stored: %d messages, %v", len(msgs), err)
	}
	if n, err := ms.store.Ack(ctx, convBox, [][store.MessageIDSize]byte{msgs[1].ID}); n != 1 || err != nil {
		t.Fatalf("drop: %d %v", n, err)
	}
	ev, err := bob.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var gap *client.Event
	for i, e := range ev {
		switch e.Kind {
		case client.EventMessage:
			got = append(got, e.Text)
		case client.EventGap:
			gap = &ev[i]
		}
	}
	if !slices.Equal(got, []string{"two", "four"}) {
		t.Fatalf("bob got %q", got)
	}
	if gap == nil || gap.From != "alice" || !slices.Equal(gap.Missed, []uint64{3}) {
		t.Fatalf("gap not reported as alice's message 3: %+v", gap)
	}
	// The history keeps the gap.
	hist, err := bob.History("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(hist, func(e client.Event) bool { return e.Kind == client.EventGap }) {
		t.Fatal("the gap is not in the history")
	}
}
