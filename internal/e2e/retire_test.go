package e2e

import (
	"os"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
)

// crashImage copies c's state directory as it is on disk now: what a
// crash at this moment would leave (every committed transaction is on
// disk; c runs no operation while the test copies).
func crashImage(t *testing.T, c *client.Client) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(c.Home())); err != nil {
		t.Fatalf("copying %s's state: %v", c.Handle(), err)
	}
	return dir
}

// countText counts the events of c's history with target that carry text.
func countText(t *testing.T, c *client.Client, target, text string) int {
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

// TestMessengerRetireCrash: a sent outbox entry is deleted later, with
// the next transaction or on a short timer (client/retire.go, ADR 0042),
// not in a transaction of its own after the server's acknowledgement.
// The test plays a crash in that window: alice sends a text, the server
// acknowledges it, and her state directory is copied before the deletion
// is written (RetireAfter < 0 holds it until her next transaction). The
// text counts as sent (Pending 0, Status.Outbox 0, no QueuedSince); a
// client opened on the copy, as after a restart, finds the entry and
// sends it again under the same message ID, and bob, who already showed
// the text, does not show it twice. With the default timer the deletion
// reaches the disk without any further operation.
func TestMessengerRetireCrash(t *testing.T) {
	ms := startMessengerServer(t)
	ctx := ctxT(t)
	alice := newUserWith(t, ms, "alice", func(o *client.Options) { o.RetireAfter = -1 })
	bob := newUser(t, ms, "bob")
	connect(t, alice, bob)

	if err := alice.Send(ctx, "bob", "once"); err != nil {
		t.Fatal(err)
	}
	if n, err := alice.Pending(); err != nil || n != 0 {
		t.Fatalf("alice: %d pending (%v) after the server acknowledged, want 0", n, err)
	}
	st, err := alice.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Outbox != 0 {
		t.Fatalf("alice's status: outbox %d after the server acknowledged, want 0", st.Outbox)
	}
	if q, err := alice.QueuedSince(); err != nil || len(q) != 0 {
		t.Fatalf("alice: queued since %v (%v), want nothing", q, err)
	}
	img := crashImage(t, alice)
	if got := texts(t, bob); len(got) != 1 || got[0] != "alice: once" {
		t.Fatalf("bob got %q", got)
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}

	// The restart on the crash image.
	again, err := client.Open(messengerOptions(img))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if n, err := again.Pending(); err != nil || n != 1 {
		t.Fatalf("the crash image holds %d pending (%v), want the acknowledged entry whose deletion was not written", n, err)
	}
	if err := again.Flush(ctx); err != nil {
		t.Fatalf("alice resends after the restart: %v", err)
	}
	if n, err := again.Pending(); err != nil || n != 0 {
		t.Fatalf("alice after resending: %d pending (%v)", n, err)
	}
	if got := texts(t, bob); len(got) != 0 {
		t.Fatalf("bob got %q again after alice's restart", got)
	}
	if n := countText(t, bob, "alice", "once"); n != 1 {
		t.Fatalf("bob's history shows %q %d times", "once", n)
	}
	if err := again.Send(ctx, "bob", "after"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); len(got) != 1 || got[0] != "alice: after" {
		t.Fatalf("bob got %q after the restart", got)
	}

	// The default timer writes the deletion with no further operation:
	// a crash image taken a little later holds nothing pending.
	carol := newUser(t, ms, "carol")
	if err := carol.Send(ctx, "bob", "timed"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// An image copied while a transaction was being written may not
		// open: the next one is taken.
		n, err := -1, error(nil)
		if c, oerr := client.Open(messengerOptions(crashImage(t, carol))); oerr == nil {
			n, err = c.Pending()
			c.Close()
		} else {
			err = oerr
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("carol's acknowledged entry still on disk after 30 s (%d pending, %v)", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
