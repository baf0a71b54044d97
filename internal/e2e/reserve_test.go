package e2e

import (
	"context"
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

// TestMessengerRestartNoGap: after a restart alice's first message skips
// the number her record names as the next (a text sent early before a
// crash may have used it) and says so (docs/adr/0045-restart-numbers.md);
// bob excuses that one number. Neither an ordinary restart (alice closes
// and opens her state) nor a crash in the early send's window whose text
// bob received shows him a gap, and nothing is shown twice.
func TestMessengerRestartNoGap(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "ordinary restart"
		if crash {
			name = "crash after the early text was delivered"
		}
		t.Run(name, func(t *testing.T) {
			ms := startMessengerServer(t)
			// One context for the whole run, generous: a loaded CI
			// machine took over 20 s for it.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			alice := newUserWith(t, ms, "alice", func(o *client.Options) { o.RetireAfter = -1 })
			bob := newUser(t, ms, "bob")
			connect(t, alice, bob)
			if err := alice.Send(ctx, "bob", "one"); err != nil {
				t.Fatal(err)
			}
			img := crashImage(t, alice)
			if err := alice.Send(ctx, "bob", "two"); err != nil {
				t.Fatal(err)
			}
			home := alice.Home()
			if err := alice.Close(); err != nil {
				t.Fatal(err)
			}
			if crash {
				home = img // her state before "two"'s transaction
			}
			again, err := client.Open(messengerOptions(home))
			if err != nil {
				t.Fatal(err)
			}
			defer again.Close()
			for _, text := range []string{"three", "four"} {
				if err := again.Send(ctx, "bob", text); err != nil {
					t.Fatal(err)
				}
			}
			ev, err := bob.Sync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			seq := map[string]uint64{}
			for _, e := range ev {
				switch e.Kind {
				case client.EventMessage:
					got = append(got, e.Text)
					seq[e.Text] = e.Seq
				case client.EventGap:
					t.Errorf("bob shows a gap: %s (missed %v)", e.Text, e.Missed)
				case client.EventAlarm:
					t.Errorf("bob: alarm %v", e.Alarm)
				}
			}
			want := []string{"one", "two", "three", "four"}
			if !slices.Equal(got, want) {
				t.Fatalf("bob got %q, want %q", got, want)
			}
			// "three" skipped the number after her record's: after an
			// ordinary restart one no text used (the gap bob excuses),
			// after the crash the one "two" used.
			skip := uint64(2)
			if crash {
				skip = 1
			}
			if seq["three"] != seq["two"]+skip || seq["four"] != seq["three"]+1 {
				t.Errorf("alice numbered two, three, four %d, %d, %d", seq["two"], seq["three"], seq["four"])
			}
			for _, text := range want {
				if n := countText(t, bob, "alice", text); n != 1 {
					t.Errorf("bob's history shows %q %d times, want once", text, n)
				}
			}
		})
	}
}
