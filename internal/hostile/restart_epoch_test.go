package hostile_test

import (
	"os"
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client"
)

// TestHostileWithheldAfterTwoRestarts: ADR 0045 says the message that
// skips a number after a restart is never sent early, so its own number
// is on disk before it leaves. That holds only while the epoch is the one
// of the reservation read at the restart: a commit after it (here alice's
// own update; a scheduled one or bob's does the same) stores a
// reservation of the new epoch, and the next text, the one that skips,
// left early. The test plays a crash in that text's window too (her
// state is copied before it): the restarted alice numbered her next text,
// "four", as the record's next but one, the number the early "three"
// took, which bob has, and a server that withheld "four" hid it: her
// "five" followed the number bob saw last. Bob must report "four"'s
// number missing. Now the skipping message waits for its transaction; if
// it did not leave early, the crash that follows it leaves its number on
// disk, and the test restarts from that state.
func TestHostileWithheldAfterTwoRestarts(t *testing.T) {
	r := startRestartRun(t)
	sw, parts, o, alice, bob, ctx := r.sw, r.parts, r.o, r.alice, r.bob, r.ctx
	// send sends text and reports whether it left before its transaction.
	send := func(c *client.Client, text string) bool {
		t.Helper()
		parts.take()
		if err := c.Send(ctx, "bob", text); err != nil {
			t.Fatal(err)
		}
		p := parts.take()
		wire, tokens := slices.Index(p, client.TimeSendWire), slices.Index(p, client.TimeSendTokens)
		if got := texts(t, bob); !slices.Equal(got, []string{"alice: " + text}) {
			t.Fatalf("bob got %q", got)
		}
		return wire >= 0 && tokens >= 0 && wire < tokens
	}
	image := func(c *client.Client) string {
		t.Helper()
		img := t.TempDir()
		if err := os.CopyFS(img, os.DirFS(c.Home())); err != nil {
			t.Fatal(err)
		}
		return img
	}
	reopen := func(c *client.Client, img string) *client.Client {
		t.Helper()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		o.Home = img
		again, err := client.Open(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { again.Close() })
		return again
	}

	// The first crash: "two" left early, its transaction never reached
	// the disk.
	img := image(alice)
	if !send(alice, "two") {
		t.Fatal("\"two\" did not leave before its transaction")
	}
	again := reopen(alice, img)
	// A commit after the restart: a reservation of the new epoch.
	if err := again.Update(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// The second crash, in "three"'s window: the first text after the
	// restart, which skips a number. If it left before its transaction,
	// the crash can leave the state from before it; if it did not (as it
	// must not), a crash after it left leaves its number on disk.
	img = image(again)
	wasEarly := send(again, "three")
	three := sentSeq(t, again, "bob", "three")
	if !wasEarly {
		img = again.Home()
	}
	again = reopen(again, img)

	sw.armed.Store(true)
	if err := again.Send(ctx, "bob", "four"); err != nil {
		t.Fatalf("alice after the second restart: %v", err)
	}
	sw.armed.Store(false)
	if sw.dropped.Load() == 0 {
		t.Fatal("the server threw nothing away")
	}
	if err := again.Send(ctx, "bob", "five"); err != nil {
		t.Fatal(err)
	}
	four := sentSeq(t, again, "bob", "four")

	got, missed := syncGaps(ctx, t, bob, "alice")
	if !slices.Equal(got, []string{"five"}) {
		t.Fatalf("bob got %q, want \"five\" alone (\"four\" was withheld)", got)
	}
	if !slices.Contains(missed, four) {
		t.Fatalf("bob reports %v missing from alice: not the withheld \"four\" (alice numbered \"three\" %d (sent early: %t), \"four\" %d)",
			missed, three, wasEarly, four)
	}
	for _, text := range []string{"one", "two", "three", "five"} {
		if n := countTextOf(t, bob, "alice", text); n != 1 {
			t.Errorf("bob's history shows %q %d times, want once", text, n)
		}
	}
}
