package hostile_test

import (
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/wire"
)

// TestHostileEarlySendAnswerLost: a direct text leaves while the
// transaction that records it is written (client/reserve.go, ADR 0042).
// The server stores such an early Send and withholds its answer. The
// text must be neither lost nor shown twice: alice's Send gives up on the
// answer, the entry her transaction recorded goes out again under the same
// message ID (the server stores it once), her outbox empties, and bob
// shows the text once; her next texts go on as before.
func TestHostileEarlySendAnswerLost(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	o := h.ClientOptions(t)
	o.Dial.RequestTimeout = time.Second // the withheld answer's cost
	alice := h.NewUserWith(t, "alice", "alice", o)
	bob := h.NewUser(t, "bob", "bob")
	ctx := ctxT(t)
	if err := alice.Send(ctx, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); len(got) != 1 {
		t.Fatalf("bob got %q", got)
	}
	texts(t, alice) // alice learns bob's mailbox
	// The first text on the conversation's connection pays with a token;
	// the next ones go on its allowance, early.
	if err := alice.Send(ctx, "bob", "one"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: one"}) {
		t.Fatalf("bob got %q", got)
	}

	var dropped atomic.Int32
	h.Rewrite(func(x *hostile.Exchange) {
		s, ok := x.Request.(*wire.Send)
		if x.Tag != "alice" || !ok || len(s.Auth) != 0 {
			return
		}
		if _, ok := x.Response.(*wire.Sent); ok && dropped.CompareAndSwap(0, 1) {
			x.Drop = true
		}
	})
	if err := alice.Send(ctx, "bob", "two"); err != nil && !errors.Is(err, client.ErrQueued) {
		t.Fatal(err)
	}
	if dropped.Load() != 1 {
		t.Fatal("alice's early Send was not seen")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := alice.Pending()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice still has %d pending after 30 s", n)
		}
		// A failed attempt is kept for the next (ErrQueued); what
		// matters is that one goes through.
		if err := alice.Flush(ctx); err != nil && !errors.Is(err, client.ErrQueued) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: two"}) {
		t.Fatalf("bob got %q, want the text once", got)
	}
	if err := alice.Send(ctx, "bob", "three"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: three"}) {
		t.Fatalf("bob got %q", got)
	}
	for _, c := range []*client.Client{alice, bob} {
		ev, err := c.History("", 0)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range ev {
			if e.Kind == client.EventMessage && e.Text == "two" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s's history shows \"two\" %d times, want once", c.Handle(), n)
		}
	}
}
