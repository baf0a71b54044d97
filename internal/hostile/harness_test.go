package hostile_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/wire"
)

func ctxT(t *testing.T) context.Context {
	d := time.Minute // a loaded 2-core CI machine took 78 s for one test once
	if raceDetector {
		d = 3 * time.Minute // everything runs several times slower
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// texts syncs c and returns the texts it received, as "from: text"; an
// alarm fails the test.
func texts(t *testing.T, c *client.Client) []string {
	t.Helper()
	ev, err := c.Sync(ctxT(t))
	if err != nil {
		t.Fatalf("%s sync: %v", c.Handle(), err)
	}
	var out []string
	for _, e := range ev {
		if e.Kind == client.EventAlarm {
			t.Errorf("%s: alarm %v", c.Handle(), e.Alarm)
		}
		if e.Kind == client.EventMessage {
			out = append(out, e.From+": "+e.Text)
		}
	}
	return out
}

// TestHarnessHonest: untouched, the hostile server is the real server:
// two users on two tagged listeners talk, and the recorded view holds
// their requests, each tagged and bucket-sized.
func TestHarnessHonest(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice, bob := h.NewUser(t, "alice", "alice"), h.NewUser(t, "bob", "bob")
	ctx := ctxT(t)
	if _, err := alice.AddContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.AddContact(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Send(ctx, "bob", "hello bob"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: hello bob"}) {
		t.Fatalf("bob got %q", got)
	}
	sends := map[string]int{}
	for _, e := range h.Events() {
		if !h.Policy().IsBucket(e.Size) && e.Stream != 0 {
			t.Errorf("record of kind %#x and %d bytes is not a bucket", uint8(e.Kind), e.Size)
		}
		if e.FromClient && e.Kind == wire.KindSend {
			sends[e.Tag]++
		}
	}
	if sends["alice"] == 0 || sends["bob"] == 0 {
		t.Fatalf("sends by tag: %v", sends)
	}
}

// TestHarnessLies: a rewrite reaches only the tagged client, and an
// answer from a forked directory is what the client checks.
func TestHarnessLies(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	ctx := ctxT(t)
	h.Rewrite(func(x *hostile.Exchange) {
		if x.Tag == "victim" && x.Response.Kind() == wire.KindHealthStatus {
			x.Response = &wire.HealthStatus{Status: wire.StatusDraining}
		}
	})
	health := func(tag string) uint8 {
		c, err := protocol.Dial(ctx, h.Addr(tag), protocol.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := c.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := health("victim"); got != wire.StatusDraining {
		t.Fatalf("victim saw health %d", got)
	}
	if got := health("other"); got != wire.StatusServing {
		t.Fatalf("other saw health %d", got)
	}

	// A fork that diverges: a client answered from the fork verifies its
	// answer, then holds a split view once it sees the honest log.
	fork := h.ForkKT(t)
	if _, err := fork.Enqueue("mallory", []byte("rogue")); err != nil {
		t.Fatal(err)
	}
	forkSize, err := fork.Tick(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h.Rewrite(func(x *hostile.Exchange) {
		if x.Tag != "kt-victim" {
			return
		}
		if q, ok := x.Request.(*wire.KTLookup); ok {
			p, err := fork.Lookup(context.Background(), q.Label, q.KnownSize)
			if err != nil {
				t.Errorf("fork lookup: %v", err)
				return
			}
			x.Response = &wire.KTProof{Proof: p.Marshal()}
		}
	})
	v, err := kt.NewVerifierFromConfig(h.KTKeys.VKey, h.KT().Config())
	if err != nil {
		t.Fatal(err)
	}
	victim, err := protocol.Dial(ctx, h.Addr("kt-victim"), protocol.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	res, _, err := victim.KTLookup(ctx, v, "mallory")
	if err == nil || res != nil {
		// The value is not a binding, so KTLookup reports it; the proof
		// itself verified, which KnownSize shows.
		t.Logf("lookup: %v", err)
	}
	if v.KnownSize() != forkSize+1 {
		t.Fatalf("verifier at size %d, the fork's checkpoint is %d", v.KnownSize(), forkSize+1)
	}
	for {
		cp, err := h.KT().Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size > forkSize+1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	honest, err := protocol.Dial(ctx, h.Addr("honest"), protocol.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer honest.Close()
	_, err = honest.KTCheckpoint(ctx, v)
	var sv *kt.SplitViewError
	if !errors.As(err, &sv) {
		t.Fatalf("the honest log after the fork: %v", err)
	}
}

// readFrom is the receive IDs of the mailboxes the client tagged tag
// fetched from or subscribed to, each once, in the order it first did.
func readFrom(h *hostile.Server, tag string) []wire.ID {
	var out []wire.ID
	seen := map[wire.ID]bool{}
	for _, e := range h.Events() {
		if e.Tag != tag || !e.FromClient {
			continue
		}
		var rid wire.ID
		switch m := e.Message.(type) {
		case *wire.Fetch:
			rid = m.ReceiveID
		case *wire.Subscribe:
			rid = m.ReceiveID
		default:
			continue
		}
		if !seen[rid] {
			seen[rid] = true
			out = append(out, rid)
		}
	}
	return out
}
