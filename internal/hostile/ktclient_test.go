package hostile_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
)

// The tests of issue 17 items 3 and 7: checks the server answers must not
// be put off for ever, and the padding policy is the client's, not the
// server's. Each client here has a clock of its own (the bounds are
// CheckAttempts failures over CheckGrace).

// clockedUser registers handle through Addr(tag) with a clock the test
// moves, and returns its options too (to reopen its state).
func clockedUser(t *testing.T, h *hostile.Server, tag, handle string) (*client.Client, client.Options, *hostile.Clock) {
	t.Helper()
	clk := &hostile.Clock{}
	opts := h.ClientOptions(t)
	opts.Now = clk.Now
	return h.NewUserWith(t, tag, handle, opts), opts, clk
}

func alarmsOf(t *testing.T, c *client.Client, kind client.AlarmKind) []client.Alarm {
	t.Helper()
	all, err := c.Alarms()
	if err != nil {
		t.Fatal(err)
	}
	var out []client.Alarm
	for _, a := range all {
		if a.Kind == kind {
			out = append(out, a)
		}
	}
	return out
}

// TestHostileServerHelloPolicy: a server announces to one client (the
// victim's listener) buckets of its own choosing, eight fine ones that
// tell short messages apart by length. The victim's client refuses every
// connection with ErrPolicy naming both policies, and a new state cannot
// be made; a client whose connections get the honest hello works on.
func TestHostileServerHelloPolicy(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	fine, err := padding.NewPolicy(512, 1024, 1536, 2048, 2560, 3072, 3584, 131072)
	if err != nil {
		t.Fatal(err)
	}
	victim := h.NewUser(t, "victim", "victim")
	h.Rewrite(func(x *hostile.Exchange) {
		if hello, ok := x.Response.(*wire.ServerHello); ok && x.Tag == "victim" {
			lie := *hello
			lie.Policy = fine
			x.Response = &lie
		}
	})
	ctx := ctxT(t)
	_, err = protocol.Dial(ctx, h.Addr("victim"), protocol.Options{})
	if !errors.Is(err, protocol.ErrPolicy) || !strings.Contains(err.Error(), fine.String()) || !strings.Contains(err.Error(), padding.Default.String()) {
		t.Fatalf("dial: %v, want ErrPolicy naming %s and %s", err, fine, padding.Default)
	}
	if _, err := client.Init(ctx, h.Addr("victim"), h.Pin(), h.ClientOptions(t)); !errors.Is(err, protocol.ErrPolicy) {
		t.Fatalf("init: %v, want ErrPolicy", err)
	}
	// The registered victim's next connection: refused too, so nothing
	// it sends is padded to the server's buckets.
	if _, err := victim.AddContact(ctx, "other"); !errors.Is(err, protocol.ErrPolicy) {
		t.Fatalf("the victim's lookup: %v, want ErrPolicy", err)
	}
	for _, e := range h.Events() {
		if e.FromClient && e.Tag == "victim" && e.Stream > 0 && fine.IsBucket(e.Size) && !padding.Default.IsBucket(e.Size) {
			t.Fatalf("the victim sent a record of %d bytes, a bucket of the server's policy", e.Size)
		}
	}
	// The default policy, announced honestly, still works.
	other := h.NewUser(t, "other", "other")
	if _, err := other.AddContact(ctx, "victim"); err != nil {
		t.Fatalf("honest hello: %v", err)
	}
}

// TestHostileOwnerCheckErrors: the server answers the owner's history
// requests with errors of its choosing (UNAVAILABLE, a malformed proof,
// nothing at all), which once kept a rogue version hidden for ever. Each
// failure is counted and persisted (a reopen does not reset it); past
// CheckAttempts over CheckGrace it is a kt-unverified alarm. A proof for
// another label is evidence at once. A cancelled check counts for nothing.
func TestHostileOwnerCheckErrors(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice, opts, clk := clockedUser(t, h, "alice", "alice")
	ctx := ctxT(t)
	if alarms, err := alice.KTCheck(ctx); err != nil || len(alarms) != 0 {
		t.Fatalf("honest owner check: %v %v", alarms, err)
	}
	var lying atomic.Pointer[func(x *hostile.Exchange)]
	answer := func(f func(x *hostile.Exchange)) { lying.Store(&f) }
	h.Rewrite(func(x *hostile.Exchange) {
		if f := lying.Load(); f != nil && *f != nil && x.Tag == "alice" {
			if _, ok := x.Request.(*wire.KTHistory); ok {
				(*f)(x)
			}
		}
	})
	lies := []func(x *hostile.Exchange){
		func(x *hostile.Exchange) {
			x.Response = &wire.ErrorMessage{Code: wire.CodeUnavailable, Detail: "try later"}
		},
		func(x *hostile.Exchange) { x.Response = &wire.KTProof{Proof: []byte("not a history")} },
		func(x *hostile.Exchange) { x.Drop = true },
	}
	for i, lie := range lies {
		answer(lie)
		if i == 1 {
			// A cancelled check is this side's doing: not counted.
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := alice.KTCheck(cctx); err == nil {
				t.Fatal("a cancelled check succeeded")
			}
			// And a restart keeps the count.
			alice.Close()
			var err error
			if alice, err = client.Open(opts); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { alice.Close() })
		}
		alarms, err := alice.KTCheck(ctx)
		if err == nil {
			t.Fatalf("lie %d: the check succeeded", i)
		}
		t.Logf("lie %d: %v", i, err)
		st, serr := alice.Status(ctx)
		if serr != nil {
			t.Fatal(serr)
		}
		if st.OwnerCheck.Failures != i+1 || st.OwnerCheck.LastError == "" {
			t.Fatalf("lie %d (%v): status %+v, want %d failures", i, err, st.OwnerCheck, i+1)
		}
		if i < len(lies)-1 {
			if len(alarms) != 0 || len(alarmsOf(t, alice, client.AlarmKTUnverified)) != 0 {
				t.Fatalf("lie %d: alarm before the bound: %v", i, alarms)
			}
			clk.Advance(client.CheckGrace / 2)
			continue
		}
		if len(alarms) != 1 || alarms[0].Kind != client.AlarmKTUnverified || len(alarmsOf(t, alice, client.AlarmKTUnverified)) != 1 {
			t.Fatalf("past the bound (%v): alarms %v", err, alarms)
		}
	}

	// Another label's history in answer to ours: it does not verify,
	// which is evidence at once.
	answer(func(x *hostile.Exchange) {
		q := x.Request.(*wire.KTHistory)
		p, err := h.KT().History(context.Background(), "other-label", 0, q.KnownSize)
		if err != nil {
			t.Errorf("history: %v", err)
			return
		}
		x.Response = &wire.KTProof{Proof: p.Marshal()}
	})
	if _, err := h.KT().Publish(ctx, "other-label", []byte("x")); err != nil {
		t.Fatal(err)
	}
	alarms, err := alice.KTCheck(ctx)
	if err == nil || len(alarms) != 1 || alarms[0].Kind != client.AlarmKT {
		t.Fatalf("a proof for another label: %v %v, want a kt alarm at once", alarms, err)
	}

	// Answered honestly again: the check completes and the count resets.
	answer(nil)
	if alarms, err := alice.KTCheck(ctx); err != nil || len(alarms) != 0 {
		t.Fatalf("honest again: %v %v", alarms, err)
	}
	st, err := alice.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.OwnerCheck.Failures != 0 || st.OwnerCheck.LastClean.IsZero() || st.OwnerCheck.Stale {
		t.Fatalf("after a clean check: %+v", st.OwnerCheck)
	}
}

// gossipSetup: alice and bob talk; bob's clock is the test's. It returns
// after alice has verified a checkpoint larger than bob's, so that what
// she gossips next needs the server to compare.
func gossipSetup(t *testing.T, h *hostile.Server) (alice, bob *client.Client, bobOpts client.Options, clk *hostile.Clock) {
	t.Helper()
	ctx := ctxT(t)
	alice = h.NewUser(t, "alice", "alice")
	bob, bobOpts, clk = clockedUser(t, h, "bob", "bob")
	if err := alice.Send(ctx, "bob", "hello bob"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); len(got) != 1 {
		t.Fatalf("bob got %q", got)
	}
	st, err := bob.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Alice moves on: the log grows, and her owner check verifies it.
	for {
		cp, err := h.KT().Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size > st.KTSize+1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := alice.KTCheck(ctx); err != nil {
		t.Fatal(err)
	}
	return alice, bob, bobOpts, clk
}

// syncAlarms syncs c and returns the alarms among the events.
func syncAlarms(t *testing.T, c *client.Client) []client.Alarm {
	t.Helper()
	ev, err := c.Sync(ctxT(t))
	if err != nil {
		t.Fatalf("%s sync: %v", c.Handle(), err)
	}
	var out []client.Alarm
	for _, e := range ev {
		if e.Kind == client.EventAlarm {
			out = append(out, *e.Alarm)
		}
	}
	return out
}

// TestHostileGossipRefused: the server refuses bob every consistency
// request (an error record), or answers it with bytes that are no proof,
// so that the checkpoint alice gossips cannot be compared. It was dropped
// at the first failure; now it is kept (across a reopen) and compared at
// every sync, and past CheckAttempts over CheckGrace it is a
// kt-unverified alarm carrying alice's checkpoint and bob's.
func TestHostileGossipRefused(t *testing.T) {
	for name, lie := range map[string]func(x *hostile.Exchange){
		"refused": func(x *hostile.Exchange) {
			x.Response = &wire.ErrorMessage{Code: wire.CodeUnavailable, Detail: "try later"}
		},
		"unusable": func(x *hostile.Exchange) { x.Response = &wire.KTProof{Proof: []byte{1, 2, 3}} },
	} {
		t.Run(name, func(t *testing.T) {
			h := hostile.Start(t, hostile.Options{})
			alice, bob, bobOpts, clk := gossipSetup(t, h)
			h.Rewrite(func(x *hostile.Exchange) {
				if _, ok := x.Request.(*wire.KTConsistency); ok && x.Tag == "bob" {
					lie(x)
				}
			})
			ctx := ctxT(t)
			if err := alice.Send(ctx, "bob", "a checkpoint bob cannot check"); err != nil {
				t.Fatal(err)
			}
			if a := syncAlarms(t, bob); len(a) != 0 {
				t.Fatalf("alarm at once: %v", a)
			}
			// Kept, and persisted: a reopen does not lose it.
			bob.Close()
			bob, err := client.Open(bobOpts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { bob.Close() })
			st, err := bob.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.GossipPending != 1 {
				t.Fatalf("after the first failure %d checkpoints wait, want 1", st.GossipPending)
			}
			if a := syncAlarms(t, bob); len(a) != 0 {
				t.Fatalf("alarm before the bound: %v", a)
			}
			clk.Advance(client.CheckGrace)
			alarms := syncAlarms(t, bob)
			if len(alarms) != 1 || alarms[0].Kind != client.AlarmKTUnverified || len(alarms[0].Evidence) != 2 ||
				!strings.Contains(alarms[0].Detail, "alice") {
				t.Fatalf("past the bound: alarms %+v", alarms)
			}
			if st, err = bob.Status(ctx); err != nil || st.GossipPending != 0 {
				t.Fatalf("after the alarm %d still wait (%v)", st.GossipPending, err)
			}
		})
	}
}

// TestHostileGossipHeldBehind: the server keeps bob on the log as it was
// (every consistency request answered from a frozen copy of its
// directory), while alice, on the growing log, gossips a larger
// checkpoint. Bob's client cannot be kept behind for ever: the
// checkpoint the server will not let it reach is a kt-unverified alarm
// past the bound.
func TestHostileGossipHeldBehind(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	frozen := h.ForkKT(t)
	alice, bob, _, clk := gossipSetup(t, h)
	h.Rewrite(func(x *hostile.Exchange) {
		q, ok := x.Request.(*wire.KTConsistency)
		if !ok || x.Tag != "bob" {
			return
		}
		p, err := frozen.Consistency(context.Background(), q.Old)
		if err != nil {
			t.Errorf("frozen consistency: %v", err)
			return
		}
		x.Response = &wire.KTProof{Proof: p.Marshal()}
	})
	ctx := ctxT(t)
	if err := alice.Send(ctx, "bob", "from further on"); err != nil {
		t.Fatal(err)
	}
	for range client.CheckAttempts - 1 {
		if a := syncAlarms(t, bob); len(a) != 0 {
			t.Fatalf("alarm before the bound: %v", a)
		}
	}
	clk.Advance(client.CheckGrace)
	alarms := syncAlarms(t, bob)
	if len(alarms) != 1 || alarms[0].Kind != client.AlarmKTUnverified || len(alarms[0].Evidence) != 2 {
		t.Fatalf("held behind past the bound: alarms %+v", alarms)
	}
}
