package hostile_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/wire"
)

// orderRounds is how many rounds TestConcurrentCommitOneOrder plays
// (go test -run TestConcurrentCommit -args -order-rounds=30 for a long
// run); the default keeps it a few seconds past the users' set-up.
var orderRounds = flag.Int("order-rounds", 3, "rounds of TestConcurrentCommitOneOrder")

// TestConcurrentCommitOneOrder: four members of a group all commit (an
// update of their leaf) at once and each writes a message in the epoch
// it then stands in, round after round; the members read their mailboxes
// in a random order, a random subset at a time, and the server holds
// back a third of the envelopes to a later fetch, so each applies the
// commits in another order and some read a losing branch's messages
// first. The fork choice (docs/protocol.md §11.6) must bring every member
// to the same epoch with the same epoch authenticator, and every message
// must be read by every other member exactly once.
//
// Each envelope is held back once at most, and a round ends only when
// everything sent was delivered (converge): a server that withholds an
// envelope while the group moves more than the 4 kept epochs past it
// (maxChain, ADR 0015) makes it unreadable, which its reader sees as a
// gap in the sender's numbers; that is not what this test plays. Before,
// an envelope left deferred was held back again at each of its
// redeliveries, one of them sometimes five fetches in a row, across a
// round's commits, and was then read too late (issue 20).
func TestConcurrentCommitOneOrder(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	// Commit echoes (§11.6) the members send: in this race, only for
	// messages read before the commit that makes them readable.
	var echoes, sentAll atomic.Int64
	u := newCountedMembers(t, h, func(_ string, e client.SentEnvelope) {
		sentAll.Add(1)
		if e.Echo {
			echoes.Add(1)
		}
	}, "alice", "bob", "carol", "dave")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	groupG(t, ctx, u[0], u[1:]...)
	// Sends never refill a wallet; long-lived clients run the refill
	// schedule, as these do for long runs (-order-rounds).
	for _, c := range u {
		defer c.StartRefills(ctx)()
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	// The server holds back a third of the envelopes, at random, to a
	// later fetch: each member reads the commits and messages in an order
	// of its own.
	var delaying atomic.Bool
	delayRng := rand.New(rand.NewPCG(seed, 2))
	ds := &deliveries{held: map[string]bool{}, shown: map[string]bool{}}
	h.Rewrite(func(x *hostile.Exchange) {
		d, ok := x.Response.(*wire.Delivery)
		if !ok {
			return
		}
		ds.mu.Lock()
		defer ds.mu.Unlock()
		k := x.Tag + "/" + string(d.MessageID[:])
		if delaying.Load() && !ds.shown[k] && !ds.held[k] && delayRng.IntN(3) == 0 {
			// Once: an envelope left on the server (deferred) is
			// delivered again at every fetch.
			x.Drop = true
			ds.held[k] = true
			ds.delayed++
			return
		}
		if !ds.shown[k] {
			ds.shown[k] = true
			ds.fresh++
		}
	})
	delaying.Store(true)
	// read[reader][text] counts the texts each member was shown.
	read := map[string]map[string]int{}
	for _, c := range u {
		read[c.Handle()] = map[string]int{}
	}
	var sent []string
	reads := 0 // texts read, by everyone
	syncOne := func(c *client.Client) {
		ev, err := c.Sync(ctx)
		if err != nil {
			t.Fatalf("%s sync: %v", c.Handle(), err)
		}
		for _, e := range ev {
			if e.Kind == client.EventMessage && e.From != c.Handle() {
				read[c.Handle()][e.From+": "+e.Text]++
				reads++
			}
			if e.Kind == client.EventAlarm && e.Alarm != nil && e.Alarm.Kind == client.AlarmDropped {
				t.Logf("%s: %v", c.Handle(), e.Alarm.Detail)
			} else if e.Kind == client.EventAlarm {
				t.Errorf("%s: alarm %v", c.Handle(), e.Alarm)
			}
		}
	}
	for round := range *orderRounds {
		for _, i := range rng.Perm(len(u)) {
			if err := u[i].Update(ctx, "#g"); err != nil {
				t.Fatalf("round %d: %s commits: %v", round, u[i].Handle(), err)
			}
		}
		// Some read part of what came (a commit or two), then write in
		// the epoch they stand in: a losing one, for all but one.
		for _, i := range rng.Perm(len(u)) {
			if rng.IntN(2) == 0 {
				syncOne(u[i])
			}
			text := fmt.Sprintf("round %d from %s", round, u[i].Handle())
			if err := u[i].Send(ctx, "#g", text); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, u[i].Handle()+": "+text)
		}
		converge(t, ctx, u, rng, syncOne, ds, &reads, round)
	}
	// Everything held back is delivered at last.
	delaying.Store(false)
	converge(t, ctx, u, rng, syncOne, ds, &reads, *orderRounds)
	ds.mu.Lock()
	t.Logf("%d envelopes were held back to a later fetch; %d commit echoes of %d envelopes sent (set-up included)", ds.delayed, echoes.Load(), sentAll.Load())
	ds.mu.Unlock()
	for _, c := range u {
		for _, s := range sent {
			if bytes.HasPrefix([]byte(s), []byte(c.Handle()+": ")) {
				continue
			}
			if n := read[c.Handle()][s]; n != 1 {
				t.Errorf("%s read %q %d times, want once", c.Handle(), s, n)
			}
		}
	}
}

// deliveries is what the server of TestConcurrentCommitOneOrder
// delivered, by listener tag and message ID.
type deliveries struct {
	mu      sync.Mutex
	held    map[string]bool // held back once
	shown   map[string]bool // delivered at least once
	fresh   int             // envelopes delivered for the first time
	delayed int
}

// state returns how many envelopes were held back and not delivered
// since, and how many envelopes were delivered for a first time so far.
func (d *deliveries) state() (pending, fresh int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range d.held {
		if !d.shown[k] {
			pending++
		}
	}
	return pending, d.fresh
}

// converge syncs random subsets of users in random orders until every
// one stands in the same epoch with the same authenticator, then syncs
// every user until the group is quiet: two whole passes in a row in
// which every outbox ends empty, no envelope is held back, no envelope
// is delivered for the first time, no text is read and no member's
// epoch authenticator changes. Then everything any member sent (a
// message sent again after a fork choice, a commit retried) was read
// by everyone it was for: equal authenticators alone can come a pass
// before a re-sent message is delivered, and the next round's commits
// then take its epoch out of the states kept.
func converge(t *testing.T, ctx context.Context, u []*client.Client, rng *rand.Rand, syncOne func(*client.Client), ds *deliveries, reads *int, round int) {
	t.Helper()
	quiet := 0
	same := false
	var lastAuth []byte
	for pass := 0; pass < 80; pass++ {
		_, fresh := ds.state()
		readsBefore := *reads
		whole := true
		for _, i := range rng.Perm(len(u)) {
			if same || rng.IntN(3) > 0 {
				syncOne(u[i])
			} else {
				whole = false
			}
		}
		var epoch uint64
		var auth []byte
		same = true
		empty := true
		for k, c := range u {
			e, a, err := c.EpochAuthenticator(ctx, "#g")
			if err != nil {
				t.Fatal(err)
			}
			if k == 0 {
				epoch, auth = e, a
			} else if e != epoch || !bytes.Equal(a, auth) {
				same = false
			}
			n, err := c.Pending()
			if err != nil {
				t.Fatal(err)
			}
			empty = empty && n == 0
		}
		pending, freshAfter := ds.state()
		if whole && same && empty && pending == 0 && freshAfter == fresh && *reads == readsBefore && bytes.Equal(auth, lastAuth) {
			quiet++
			if quiet == 2 {
				t.Logf("round %d: every member at epoch %d, all quiet, after %d passes", round, epoch, pass+1)
				return
			}
		} else {
			quiet = 0
		}
		lastAuth = auth
	}
	for _, c := range u {
		e, a, _ := c.EpochAuthenticator(ctx, "#g")
		st, _ := c.Status(ctx)
		t.Logf("%s: epoch %d authenticator %x; outbox %d, tokens %d", c.Handle(), e, a[:8], st.Outbox, st.Tokens)
	}
	pending, _ := ds.state()
	t.Logf("%d envelopes held back and not delivered since", pending)
	t.Fatalf("round %d: the members did not converge", round)
}
