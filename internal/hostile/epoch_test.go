package hostile_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// Sizes of TestAttackFutureEpochFlood.
const (
	epochFlood     = 80 // future-epoch messages eve writes to the group, past clientMaxDeferred
	epochReachTime = 10 * time.Second
)

// epochStore is the server's mailbox store with two switches for the
// test: while swallow is set every Put is answered as stored and thrown
// away (what eve's client would do if it kept a commit to itself), and
// while counting is set the Puts are counted by send ID.
type epochStore struct {
	store.Store
	swallow  atomic.Bool
	counting atomic.Bool
	mu       sync.Mutex
	puts     map[[store.MailboxIDSize]byte]int
}

func (s *epochStore) Put(ctx context.Context, sendID [store.MailboxIDSize]byte, id [store.MessageIDSize]byte, env []byte, q store.Quota, now time.Time, spend *store.Spend) (store.PutResult, error) {
	if s.swallow.Load() {
		return store.PutResult{Seq: 1 << 40}, nil
	}
	res, err := s.Store.Put(ctx, sendID, id, env, q, now, spend)
	if err == nil && s.counting.Load() {
		s.mu.Lock()
		s.puts[sendID]++
		s.mu.Unlock()
	}
	return res, err
}

// messagesOf syncs c and returns the texts it received, as "from:
// text"; unlike texts, alarms are expected (the dropped envelopes).
func messagesOf(t *testing.T, ctx context.Context, c *client.Client) []string {
	t.Helper()
	ev, err := c.Sync(ctx)
	if err != nil {
		t.Fatalf("%s sync: %v", c.Handle(), err)
	}
	var out []string
	for _, e := range ev {
		if e.Kind == client.EventMessage {
			out = append(out, e.From+": "+e.Text)
		}
	}
	return out
}

// TestAttackFutureEpochFlood (issue 18 item 7): eve, a real member of a
// group she created with alice and bob, adds carol with a commit she
// keeps from alice and bob, so her copy of the group is an epoch ahead of
// theirs, and writes epochFlood messages to the group from that epoch:
// every one of them reaches bob's conversation mailbox under eve's real
// sealed sender, and bob can only classify it as "from an epoch whose
// commit has not arrived". Then alice writes to the group. Bob gets
// alice's message in the same sync, the envelopes he leaves
// unacknowledged in his group mailbox stay at most clientMaxDeferred,
// and once the deferral window (24 h) has passed on bob's clock none of
// eve's is left. Before the bound, every future-epoch envelope was left
// on the server unacknowledged, without end, and read again at every
// sync: eve alone could keep bob's mailbox at its quota.
func TestAttackFutureEpochFlood(t *testing.T) {
	sw := &epochStore{puts: map[[store.MailboxIDSize]byte]int{}}
	h := hostile.Start(t, hostile.Options{
		WrapStore: func(s store.Store) store.Store { sw.Store = s; return sw },
		Accounts:  hostile.RoomyAccounts,
	})
	// Bob's clock is the test's to move.
	clock := &hostile.Clock{}
	bobOpts := h.ClientOptions(t)
	bobOpts.Now = clock.Now
	eve := h.NewUser(t, "eve", "eve")
	alice := h.NewUser(t, "alice", "alice")
	bob := h.NewUserWith(t, "bob", "bob", bobOpts)
	h.NewUser(t, "carol", "carol") // published, with KeyPackages
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	defer eve.StartRefills(ctx)() // eve's flood costs her tokens, well within an account's budget

	// Alice and bob take eve's group Welcomes without asking.
	addContacts(t, ctx, "eve", alice, bob)
	if err := eve.CreateGroup(ctx, "g", []string{"alice", "bob"}); err != nil {
		t.Fatal(err)
	}
	// Until every member knows every other's conversation mailbox.
	for range 3 {
		for _, u := range []*client.Client{alice, bob, eve} {
			texts(t, u)
		}
	}
	if err := alice.Send(ctx, "#g", "before"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: before"}) {
		t.Fatalf("bob got %q before the attack", got)
	}

	// Eve's commit reaches nobody: her epoch is one ahead of the others'.
	sw.swallow.Store(true)
	err := eve.AddMember(ctx, "g", "carol")
	sw.swallow.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	sw.counting.Store(true)
	for i := range epochFlood {
		sendRefilling(t, ctx, eve, "#g", fmt.Sprintf("flood %d", i))
	}
	sw.counting.Store(false)
	if n, err := eve.Pending(); err != nil || n != 0 {
		t.Fatalf("eve: %d envelopes still queued (%v)", n, err)
	}
	if got := messagesOf(t, ctx, bob); len(got) != 0 {
		t.Fatalf("bob read eve's future-epoch messages: %q", got)
	}

	// Alice, at bob's epoch, writes.
	if err := alice.Send(ctx, "#g", "after the flood"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got := messagesOf(t, ctx, bob)
	took := time.Since(start)
	if !slices.Equal(got, []string{"alice: after the flood"}) || took > epochReachTime {
		t.Fatalf("bob got %q in %v, want alice's message within %v", got, took, epochReachTime)
	}
	t.Logf("bob's sync with alice's message took %v", took)

	// Bob's mailboxes, found from his own fetches; the group's is the
	// one eve flooded.
	box := floodedMailbox(t, ctx, h, sw, "bob")
	left := unacked(t, ctx, h, box)
	sw.mu.Lock()
	wrote := sw.puts[sendIDOf(t, ctx, h, box)]
	sw.mu.Unlock()
	t.Logf("eve wrote %d envelopes to bob's group mailbox; %d are left unacknowledged", wrote, left)
	if left > clientMaxDeferred {
		t.Fatalf("bob leaves %d envelopes unacknowledged in his group mailbox, more than %d", left, clientMaxDeferred)
	}
	// Another sync reads them again and leaves no more behind.
	messagesOf(t, ctx, bob)
	if left := unacked(t, ctx, h, box); left > clientMaxDeferred {
		t.Fatalf("after another sync, bob leaves %d envelopes unacknowledged, more than %d", left, clientMaxDeferred)
	}

	// Past the deferral window on bob's clock nothing of eve's is left.
	clock.Advance(24*time.Hour + time.Minute)
	messagesOf(t, ctx, bob)
	if left := unacked(t, ctx, h, box); left != 0 {
		t.Fatalf("24 h on, bob still leaves %d envelopes unacknowledged", left)
	}
}

// sendRefilling sends text to target from c, whose wallet refills on its
// schedule: what a dry wallet keeps in the outbox is sent once it has
// tokens again.
func sendRefilling(t *testing.T, ctx context.Context, c *client.Client, target, text string) {
	t.Helper()
	if err := c.Send(ctx, target, text); err == nil {
		return
	}
	for {
		n, err := c.Pending()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		waitTokens(t, c)
		c.Flush(ctx)
	}
}

// floodedMailbox is the receive ID of the mailbox tag fetched from that
// got the most of the Puts sw counted; it fails unless that is more than
// clientMaxDeferred.
func floodedMailbox(t *testing.T, ctx context.Context, h *hostile.Server, sw *epochStore, tag string) wire.ID {
	t.Helper()
	var best wire.ID
	most := -1
	for _, rid := range readFrom(h, tag) {
		sw.mu.Lock()
		n := sw.puts[sendIDOf(t, ctx, h, rid)]
		sw.mu.Unlock()
		if n > most {
			best, most = rid, n
		}
	}
	if most <= clientMaxDeferred {
		t.Fatalf("eve wrote %d envelopes to a mailbox of %s's, not more than %d", most, tag, clientMaxDeferred)
	}
	return best
}

func sendIDOf(t *testing.T, ctx context.Context, h *hostile.Server, rid wire.ID) [store.MailboxIDSize]byte {
	t.Helper()
	mb, err := h.Store().Mailbox(ctx, rid)
	if err != nil {
		t.Fatal(err)
	}
	return mb.SendID
}

// unacked is how many envelopes the mailbox rid holds.
func unacked(t *testing.T, ctx context.Context, h *hostile.Server, rid wire.ID) int {
	t.Helper()
	n := 0
	var after uint64
	for {
		msgs, more, err := h.Store().Fetch(ctx, rid, after, 1000, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		n += len(msgs)
		if !more || len(msgs) == 0 {
			return n
		}
		after = msgs[len(msgs)-1].Seq
	}
}
