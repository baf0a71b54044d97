package hostile_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/wire"
)

// follower runs c.Follow until the test ends and passes on the texts it
// is shown, as "from: text"; alarms other than allowed fail the test.
func follower(t *testing.T, ctx context.Context, c *client.Client, allowed ...client.AlarmKind) <-chan string {
	t.Helper()
	texts := make(chan string, 64)
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Follow(fctx, func(e client.Event) {
			switch {
			case e.Kind == client.EventMessage && e.From != c.Handle():
				texts <- e.From + ": " + e.Text
			case e.Kind == client.EventAlarm:
				for _, k := range allowed {
					if e.Alarm != nil && e.Alarm.Kind == k {
						return
					}
				}
				t.Errorf("%s: alarm %v", c.Handle(), e.Alarm)
			}
		})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("%s follow: %v", c.Handle(), err)
		}
	})
	return texts
}

// subscribed counts the subscriptions the server has answered (their
// backlog's end) on the connections tagged tag, so that a test knows when
// a follower reads by push.
func subscribed(h *hostile.Server, tag string) func() int {
	var mu sync.Mutex
	n := 0
	h.Rewrite(func(x *hostile.Exchange) {
		if _, ok := x.Request.(*wire.Subscribe); !ok || x.Tag != tag {
			return
		}
		if _, ok := x.Response.(*wire.FetchEnd); ok {
			mu.Lock()
			n++
			mu.Unlock()
		}
	})
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// waitFor polls cond every 20 ms until it holds or 30 s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expectText waits (30 s at most) until want is among the texts shown,
// and fails if it was shown twice by then.
func expectText(t *testing.T, texts <-chan string, want string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case got := <-texts:
			if got == want {
				return
			}
			t.Logf("shown %q", got)
		case <-timeout:
			t.Fatalf("%q was not shown within 30 s while following, without a sync", want)
		}
	}
}

// TestFollowRetriesDeferred: bob follows a group (push delivery, what
// `qpc chat` does) and never syncs. The server delivers alice's text of
// epoch e+1 before her commit into e+1 (it swaps the two on bob's
// subscription), so bob must leave the text for later (docs/protocol.md
// §11.4). Once the commit is applied, the text must be shown while bob
// follows, within seconds: Follow retries a conversation's deferred
// envelopes when its epoch moves. Before, the subscription delivered
// each envelope once and nothing read the text again until a sync.
func TestFollowRetriesDeferred(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	u := newMembers(t, h, "alice", "bob")
	alice, bob := u[0], u[1]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob)
	e0 := sameEpoch(t, ctx, "#g", alice, bob)

	// The server holds back the first envelope pushed to bob once armed
	// (alice's commit) and sends it after the next (her text), each
	// under the other's sequence number so that bob takes both.
	var mu sync.Mutex
	armed, swapped := false, false
	var held *wire.Delivery
	h.Rewrite(func(x *hostile.Exchange) {
		d, ok := x.Response.(*wire.Delivery)
		if _, sub := x.Request.(*wire.Subscribe); !ok || !sub || x.Tag != "bob" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case !armed:
		case held == nil:
			held, x.Drop = d, true
		default:
			first := *d
			first.Seq = held.Seq
			later := *held
			later.Seq = d.Seq
			x.Response, x.Extra = &first, []wire.Message{&later}
			armed, swapped = false, true
		}
	})
	subs := subscribed(h, "bob")
	texts := follower(t, ctx, bob)
	// Bob reads two mailboxes by push: his intro mailbox and the group's.
	waitFor(t, "bob subscribed to his two mailboxes", func() bool { return subs() >= 2 })
	mu.Lock()
	armed = true
	mu.Unlock()
	mark := time.Now()

	if err := alice.Update(ctx, "#g"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Send(ctx, "#g", "written in the next epoch"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server delivered the text before the commit", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return swapped
	})
	expectText(t, texts, "alice: written in the next epoch")
	// The retry follows the move, not every envelope: a text of the
	// epoch bob stands in reads nothing again.
	if err := alice.Send(ctx, "#g", "and one more"); err != nil {
		t.Fatal(err)
	}
	expectText(t, texts, "alice: and one more")
	fetches := 0
	for _, e := range h.Events() {
		if _, ok := e.Message.(*wire.Fetch); ok && e.FromClient && e.Tag == "bob" && e.Time.After(mark) {
			fetches++
		}
	}
	if fetches != 1 {
		t.Errorf("bob fetched %d times while following, want once (the retry after the commit)", fetches)
	}
	if e := sameEpoch(t, ctx, "#g", alice, bob); e != e0+1 {
		t.Fatalf("at epoch %d, want %d", e, e0+1)
	}
}

// TestFollowRetriesDeferredAfterSwitch: eve, a member, equivocates
// (docs/protocol.md §11.6): the better of her two commits goes to alice,
// the other to bob, who follows and never syncs. Alice's next text is of
// a branch bob is not on, so he leaves it for later and echoes his commit
// to alice; her echo of the better commit back makes him switch. The
// text deferred must then be shown while bob follows, within seconds,
// without a sync.
func TestFollowRetriesDeferredAfterSwitch(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	u := newMembers(t, h, "alice", "bob", "eve")
	alice, bob, eve := u[0], u[1], u[2]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, eve)
	e0 := sameEpoch(t, ctx, "#g", alice, bob, eve)

	subs := subscribed(h, "bob")
	// eve sent two commits for one epoch: said, as it should be.
	texts := follower(t, ctx, bob, client.AlarmMemberPolicy)
	waitFor(t, "bob subscribed to his two mailboxes", func() bool { return subs() >= 2 })

	equivocate(t, ctx, eve, "#g", []string{"alice"}, []string{"bob"})
	memberEvents(t, ctx, alice, client.AlarmMemberPolicy)
	waitFor(t, "bob applied eve's commit", func() bool {
		e, _, err := bob.EpochAuthenticator(ctx, "#g")
		return err == nil && e == e0+1
	})
	epochs, auths := authenticators(t, ctx, "#g", alice, bob)
	if epochs[0] != e0+1 || bytes.Equal(auths[0], auths[1]) {
		t.Fatalf("eve's commits did not split alice and bob: epochs %v", epochs)
	}

	if err := alice.Send(ctx, "#g", "on the better branch"); err != nil {
		t.Fatal(err)
	}
	// Alice syncs (she reads bob's echo and echoes hers back); bob only
	// follows.
	const want = "alice: on the better branch"
	deadline := time.After(30 * time.Second)
	for shown := false; !shown; {
		memberEvents(t, ctx, alice, client.AlarmMemberPolicy)
		select {
		case got := <-texts:
			shown = got == want
			if !shown {
				t.Logf("shown %q", got)
			}
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%q was not shown within 30 s while following, without a sync", want)
		}
	}
	sameEpoch(t, ctx, "#g", alice, bob)
}
