package hostile_test

import (
	"context"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/server/store"
)

// dropping is a mailbox store that, while armed, answers every Put as
// stored and throws the envelope away.
type dropping struct {
	store.Store
	armed   atomic.Bool
	dropped atomic.Int32
}

func (s *dropping) Put(ctx context.Context, sendID [store.MailboxIDSize]byte, id [store.MessageIDSize]byte, env []byte, q store.Quota, now time.Time, spend *store.Spend) (store.PutResult, error) {
	if s.armed.Load() {
		s.dropped.Add(1)
		return store.PutResult{Seq: 1 << 40}, nil
	}
	return s.Store.Put(ctx, sendID, id, env, q, now, spend)
}

// partOrder records the order of a client's Timing parts.
type partOrder struct {
	mu    sync.Mutex
	parts []string
}

func (p *partOrder) record(part string, _ time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parts = append(p.parts, part)
}

func (p *partOrder) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.parts
	p.parts = nil
	return out
}

// sentSeq is the sequence number c's history gives its own text.
func sentSeq(t *testing.T, c *client.Client, target, text string) uint64 {
	t.Helper()
	ev, err := c.History(target, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ev {
		if e.Kind == client.EventMessage && e.From == c.Handle() && e.Text == text {
			return e.Seq
		}
	}
	t.Fatalf("%s's history has no text %q of its own", c.Handle(), text)
	return 0
}

// TestHostileWithheldAfterRestart: a direct text leaves while the
// transaction that records it is written (ADR 0042), so a crash in that
// window leaves alice's record of her sequence numbers behind the text
// bob has. The test plays that crash (her state directory is copied
// before her text "two" goes out early and bob shows it; a client is
// opened on the copy) and then a server that acknowledges her next text,
// "three", and throws it away; her "four" is delivered. Bob must report
// "three"'s number as missing (an EventGap from alice naming it). Before
// ADR 0045 the restarted alice numbered "three" as "two" (her record had
// not advanced) and bob, who had seen that number, saw no gap: the text
// vanished without a trace. Now her first message after the restart
// skips that number and says so, and only that one number is excused.
func TestHostileWithheldAfterRestart(t *testing.T) {
	r := startRestartRun(t)
	sw, parts, o, alice, bob, ctx := r.sw, r.parts, r.o, r.alice, r.bob, r.ctx

	img := t.TempDir()
	if err := os.CopyFS(img, os.DirFS(alice.Home())); err != nil {
		t.Fatal(err)
	}
	parts.take()
	if err := alice.Send(ctx, "bob", "two"); err != nil {
		t.Fatal(err)
	}
	p := parts.take()
	wire, tokens := slices.Index(p, client.TimeSendWire), slices.Index(p, client.TimeSendTokens)
	if wire < 0 || tokens < 0 || wire > tokens {
		t.Fatalf("\"two\" did not leave before its transaction: parts %q", p)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: two"}) {
		t.Fatalf("bob got %q", got)
	}
	two := sentSeq(t, alice, "bob", "two")
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}

	// The crash: alice's state as it was before "two"'s transaction.
	o.Home = img
	again, err := client.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	sw.armed.Store(true)
	if err := again.Send(ctx, "bob", "three"); err != nil {
		t.Fatalf("alice after the restart: %v", err)
	}
	sw.armed.Store(false)
	if sw.dropped.Load() == 0 {
		t.Fatal("the server threw nothing away")
	}
	if err := again.Send(ctx, "bob", "four"); err != nil {
		t.Fatal(err)
	}
	three := sentSeq(t, again, "bob", "three")

	got, missed := syncGaps(ctx, t, bob, "alice")
	if !slices.Equal(got, []string{"four"}) {
		t.Fatalf("bob got %q, want \"four\" alone (\"three\" was withheld)", got)
	}
	if !slices.Equal(missed, []uint64{three}) {
		t.Fatalf("bob reports %v missing from alice, want [%d]: the withheld \"three\" (alice numbered \"two\" %d, \"three\" %d)",
			missed, three, two, three)
	}
	for _, text := range []string{"one", "two", "four"} {
		if n := countTextOf(t, bob, "alice", text); n != 1 {
			t.Errorf("bob's history shows %q %d times, want once", text, n)
		}
	}
}

// countTextOf counts the events of c's history with target that carry
// text.
func countTextOf(t *testing.T, c *client.Client, target, text string) int {
	t.Helper()
	ev, err := c.History(target, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ev {
		if e.Kind == client.EventMessage && e.Text == text {
			n++
		}
	}
	return n
}

// syncGaps syncs c and returns the texts it showed and the numbers it
// reported missing from the contact from; an alarm fails the test.
func syncGaps(ctx context.Context, t *testing.T, c *client.Client, from string) (got []string, missed []uint64) {
	t.Helper()
	ev, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ev {
		switch e.Kind {
		case client.EventMessage:
			got = append(got, e.Text)
		case client.EventGap:
			if e.From == from {
				missed = append(missed, e.Missed...)
			}
		case client.EventAlarm:
			t.Errorf("%s: alarm %v", c.Handle(), e.Alarm)
		}
	}
	return got, missed
}

// restartRun is the set-up both restart tests share: a hostile server
// whose store can drop what it acknowledges, alice whose client reports
// the order of a send's parts, bob, and alice's "hello" and "one" shown
// to bob.
type restartRun struct {
	sw         *dropping
	parts      *partOrder
	o          client.Options
	alice, bob *client.Client
	ctx        context.Context
}

func startRestartRun(t *testing.T) *restartRun {
	t.Helper()
	r := &restartRun{sw: &dropping{}, parts: &partOrder{}}
	h := hostile.Start(t, hostile.Options{WrapStore: func(s store.Store) store.Store { r.sw.Store = s; return r.sw }})
	r.o = h.ClientOptions(t)
	r.o.Timing = r.parts.record
	// No transaction of alice's runs in the background (the sent entry's
	// deletion waits for her next one), so her state is never copied
	// halfway through one.
	r.o.RetireAfter = -1
	r.alice = h.NewUserWith(t, "alice", "alice", r.o)
	r.bob = h.NewUser(t, "bob", "bob")
	// One context for the whole run, generous: under load it takes far
	// longer than the second it takes on a quiet machine.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	r.ctx = ctx
	if err := r.alice.Send(ctx, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, r.bob); !slices.Equal(got, []string{"alice: hello"}) {
		t.Fatalf("bob got %q", got)
	}
	texts(t, r.alice) // alice learns bob's mailbox
	// The first text on the conversation's connection pays with a token;
	// the next ones go on its allowance, early.
	if err := r.alice.Send(ctx, "bob", "one"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, r.bob); !slices.Equal(got, []string{"alice: one"}) {
		t.Fatalf("bob got %q", got)
	}
	return r
}
