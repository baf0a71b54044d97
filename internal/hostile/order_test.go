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
// back a third of the deliveries to a later fetch, so each applies the
// commits in another order and some read a losing branch's messages
// first. The fork choice (docs/protocol.md §11.6) must bring every member
// to the same epoch with the same epoch authenticator, and every message
// must be read by every other member exactly once.
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
	// The server holds back a third of the deliveries, at random, to a
	// later fetch: each member reads the commits and messages in an order
	// of its own, and some a round late.
	var mu sync.Mutex
	var delaying atomic.Bool
	delayRng := rand.New(rand.NewPCG(seed, 2))
	delayed := 0
	h.Rewrite(func(x *hostile.Exchange) {
		if _, ok := x.Response.(*wire.Delivery); !ok || !delaying.Load() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if delayRng.IntN(3) == 0 {
			x.Drop = true
			delayed++
		}
	})
	delaying.Store(true)
	// read[reader][text] counts the texts each member was shown.
	read := map[string]map[string]int{}
	for _, c := range u {
		read[c.Handle()] = map[string]int{}
	}
	var sent []string
	syncOne := func(c *client.Client) {
		ev, err := c.Sync(ctx)
		if err != nil {
			t.Fatalf("%s sync: %v", c.Handle(), err)
		}
		for _, e := range ev {
			if e.Kind == client.EventMessage && e.From != c.Handle() {
				read[c.Handle()][e.From+": "+e.Text]++
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
		converge(t, ctx, u, rng, syncOne, round)
	}
	// Everything held back is delivered at last.
	delaying.Store(false)
	converge(t, ctx, u, rng, syncOne, *orderRounds)
	mu.Lock()
	t.Logf("%d deliveries were held back to a later fetch; %d commit echoes of %d envelopes sent (set-up included)", delayed, echoes.Load(), sentAll.Load())
	mu.Unlock()
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

// converge syncs random subsets of users in random orders until every
// one stands in the same epoch with the same authenticator through a
// whole pass.
func converge(t *testing.T, ctx context.Context, u []*client.Client, rng *rand.Rand, syncOne func(*client.Client), round int) {
	t.Helper()
	stable := 0
	for pass := 0; pass < 40; pass++ {
		for _, i := range rng.Perm(len(u)) {
			if stable > 0 || rng.IntN(3) > 0 {
				syncOne(u[i])
			}
		}
		var epoch uint64
		var auth []byte
		same := true
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
		}
		if same {
			stable++
			if stable == 2 {
				t.Logf("round %d: every member at epoch %d after %d passes", round, epoch, pass+1)
				return
			}
		} else {
			stable = 0
		}
	}
	for _, c := range u {
		e, a, _ := c.EpochAuthenticator(ctx, "#g")
		st, _ := c.Status(ctx)
		t.Logf("%s: epoch %d authenticator %x; outbox %d, tokens %d", c.Handle(), e, a[:8], st.Outbox, st.Tokens)
	}
	t.Fatalf("round %d: the members did not converge", round)
}
