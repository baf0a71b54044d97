package e2e

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
)

// partLog records the order of a client's Timing parts.
type partLog struct {
	mu    sync.Mutex
	parts []string
}

func (p *partLog) record(part string, _ time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parts = append(p.parts, part)
}

func (p *partLog) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.parts
	p.parts = nil
	return out
}

// TestMessengerEarlySendCrash: a direct text leaves while the
// transaction that records it is written (client/reserve.go, ADR 0042).
// The test plays a crash in that window: alice's state directory is copied
// after her text "one" (its transaction wrote the reservation that covers
// the next generation), then "two" goes out early and bob shows it, and a
// client is opened on the copy: the state on disk as a crash before
// "two"'s transaction reached it leaves it, naming "two"'s generation as
// the next. The restarted alice must not use that generation again (RFC
// 9420 §9.1: the same key and nonce for another text): her "three" is
// shown by bob, who consumed "two"'s key (he would refuse a second message
// under it), and nothing is shown twice. Without the skip to the
// reservation, "three" reuses the generation and bob never shows it.
func TestMessengerEarlySendCrash(t *testing.T) {
	ms := startMessengerServer(t)
	ctx := ctxT(t)
	var parts partLog
	// RetireAfter < 0: no transaction of alice's runs in the background
	// (the sent entry's deletion waits for her next one), so the copy of
	// her state is never taken halfway through one.
	alice := newUserWith(t, ms, "alice", func(o *client.Options) {
		o.Timing = parts.record
		o.RetireAfter = -1
	})
	bob := newUser(t, ms, "bob")
	connect(t, alice, bob)

	if err := alice.Send(ctx, "bob", "one"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: one"}) {
		t.Fatalf("bob got %q", got)
	}
	img := crashImage(t, alice)

	parts.take()
	if err := alice.Send(ctx, "bob", "two"); err != nil {
		t.Fatal(err)
	}
	// "two" left before its transaction was written: its Send went out
	// from Send itself, ahead of the outbox pass (whose token check comes
	// before any Send it makes).
	p := parts.take()
	wire, tokens := slices.Index(p, client.TimeSendWire), slices.Index(p, client.TimeSendTokens)
	if wire < 0 || tokens < 0 || wire > tokens {
		t.Fatalf("\"two\" did not leave before its transaction: parts %q", p)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: two"}) {
		t.Fatalf("bob got %q", got)
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}

	again, err := client.Open(messengerOptions(img))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.Send(ctx, "bob", "three"); err != nil {
		t.Fatalf("alice after the restart: %v", err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: three"}) {
		t.Fatalf("bob got %q after alice's restart, want her new text (bob refuses a reused generation, and drops a reused number as a duplicate)", got)
	}
	if err := again.Send(ctx, "bob", "four"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: four"}) {
		t.Fatalf("bob got %q", got)
	}
	for _, text := range []string{"one", "two", "three", "four"} {
		if n := countText(t, bob, "alice", text); n != 1 {
			t.Errorf("bob's history shows %q %d times, want once", text, n)
		}
	}
}
