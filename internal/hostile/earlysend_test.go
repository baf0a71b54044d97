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
// The server stores alice's Sends and withholds every answer while she
// sends a text: the early Send and the outbox's retries all time out,
// and her connection is left without a session. The text must be neither
// lost nor shown twice: once answers come again, the entry her
// transaction recorded goes out again under the same message ID (the
// server stores it once), her outbox empties, and bob shows the text
// once. Before, the retry sealed with the policy of the lost session
// (none), failed before its Send, never opened a session again, and the
// entry stayed queued for good.
func TestHostileEarlySendAnswerLost(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	o := h.ClientOptions(t)
	registered := h.NewUserWith(t, "alice", "alice", o)
	if err := registered.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened with short waits: what a withheld answer costs.
	o.Dial.RequestTimeout = time.Second
	o.Dial.MaxAttempts = 2
	alice, err := client.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
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

	var withhold atomic.Bool
	var dropped, early atomic.Int32
	withhold.Store(true)
	h.Rewrite(func(x *hostile.Exchange) {
		s, ok := x.Request.(*wire.Send)
		if x.Tag != "alice" || !ok || !withhold.Load() {
			return
		}
		if _, ok := x.Response.(*wire.Sent); ok {
			x.Drop = true
			if dropped.Add(1) == 1 && len(s.Auth) == 0 {
				early.Store(1) // the first went on the allowance
			}
		}
	})
	if err := alice.Send(ctx, "bob", "two"); !errors.Is(err, client.ErrQueued) {
		t.Fatalf("alice's Send with every answer withheld: %v, want ErrQueued", err)
	}
	withhold.Store(false)
	if dropped.Load() == 0 || early.Load() != 1 {
		t.Fatalf("%d answers withheld, the first to a Send without a token: %v", dropped.Load(), early.Load() == 1)
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
