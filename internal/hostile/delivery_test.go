package hostile_test

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// swallowing is a mailbox store that, when armed, answers the next Put as
// stored and throws the envelope away.
type swallowing struct {
	store.Store
	armed atomic.Bool
}

func (s *swallowing) Put(ctx context.Context, sendID [store.MailboxIDSize]byte, id [store.MessageIDSize]byte, env []byte, q store.Quota, now time.Time, spend *store.Spend) (store.PutResult, error) {
	if s.armed.CompareAndSwap(true, false) {
		return store.PutResult{Seq: 1 << 40}, nil
	}
	return s.Store.Put(ctx, sendID, id, env, q, now, spend)
}

// pair makes alice and bob contacts who have exchanged one message each
// way, so each knows the other's conversation mailbox.
func pair(t *testing.T, h *hostile.Server) (alice, bob *client.Client) {
	t.Helper()
	alice, bob = h.NewUser(t, "alice", "alice"), h.NewUser(t, "bob", "bob")
	ctx := ctxT(t)
	if err := alice.Send(ctx, "bob", "hello bob"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: hello bob"}) {
		t.Fatalf("bob got %q", got)
	}
	if err := bob.Send(ctx, "alice", "hello alice"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, alice); !slices.Equal(got, []string{"bob: hello alice"}) {
		t.Fatalf("alice got %q", got)
	}
	return alice, bob
}

// TestHostileDropsMessage: a server that acknowledges a send and throws
// the envelope away cannot hide it: the per-sender sequence numbers inside
// the encryption show bob which message is missing.
func TestHostileDropsMessage(t *testing.T) {
	sw := &swallowing{}
	h := hostile.Start(t, hostile.Options{WrapStore: func(s store.Store) store.Store { sw.Store = s; return sw }})
	alice, bob := pair(t, h)
	ctx := ctxT(t)
	for _, text := range []string{"two", "three", "four"} {
		sw.armed.Store(text == "three")
		if err := alice.Send(ctx, "bob", text); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := bob.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	gaps := 0
	for _, e := range ev {
		switch e.Kind {
		case client.EventMessage:
			got = append(got, e.Text)
		case client.EventGap:
			if e.From == "alice" && len(e.Missed) == 1 {
				gaps++
			}
		}
	}
	if !slices.Equal(got, []string{"two", "four"}) || gaps != 1 {
		t.Fatalf("bob got %q and %d gaps of one message from alice", got, gaps)
	}
}

// TestHostileReplaysMessage: a server that delivers a message again — the
// same record twice, or under a new message ID and sequence number as if
// it had been sent again — shows it to bob once. The first looks like an
// honest redelivery after a lost acknowledgement and raises nothing; the
// second no honest server can do (a retried send keeps its message ID),
// and bob may say so.
func TestHostileReplaysMessage(t *testing.T) {
	for _, newID := range []bool{false, true} {
		h := hostile.Start(t, hostile.Options{})
		alice, bob := pair(t, h)
		ctx := ctxT(t)
		var replayed atomic.Int32
		h.Rewrite(func(x *hostile.Exchange) {
			d, ok := x.Response.(*wire.Delivery)
			if !ok || x.Tag != "bob" {
				return
			}
			again := *d
			if newID {
				again.Seq += 1 << 32
				again.MessageID[0] ^= 0xff
			}
			x.Extra = append(x.Extra, &again)
			replayed.Add(1)
		})
		if err := alice.Send(ctx, "bob", "only once"); err != nil {
			t.Fatal(err)
		}
		var got []string
		alarms := 0
		for range 3 {
			ev, err := bob.Sync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ev {
				switch e.Kind {
				case client.EventMessage:
					got = append(got, e.From+": "+e.Text)
				case client.EventAlarm:
					alarms++
				}
			}
		}
		if replayed.Load() == 0 {
			t.Fatal("the server replayed nothing")
		}
		if !slices.Equal(got, []string{"alice: only once"}) {
			t.Fatalf("new ID %v: bob got %q", newID, got)
		}
		if !newID && alarms != 0 {
			t.Fatalf("a redelivery under the same ID raised %d alarms", alarms)
		}
	}
}

// TestHostileReordersMessages: a server that holds one message back and
// delivers it after the next cannot make bob lose or duplicate either.
func TestHostileReordersMessages(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice, bob := pair(t, h)
	ctx := ctxT(t)
	var mu sync.Mutex
	var held *wire.Delivery
	h.Rewrite(func(x *hostile.Exchange) {
		d, ok := x.Response.(*wire.Delivery)
		if !ok || x.Tag != "bob" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case held == nil:
			held, x.Drop = d, true
		case held != d && !bytes.Equal(held.MessageID[:], d.MessageID[:]):
			x.Extra = append(x.Extra, held) // after the later one
		}
	})
	for _, text := range []string{"first", "second"} {
		if err := alice.Send(ctx, "bob", text); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for range 3 {
		got = append(got, texts(t, bob)...)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"alice: first", "alice: second"}) {
		t.Fatalf("bob got %q", got)
	}
}

// TestHostileLearnsNoSender: everything the server sees on the anonymous
// path — creating mailboxes, sending, fetching, acknowledging — carries
// neither the sender's handle nor its account session nor its identity
// key, and never the text; every record is padded to a bucket, so texts
// of different lengths look the same.
func TestHostileLearnsNoSender(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice, bob := pair(t, h)
	ctx := ctxT(t)
	before := len(h.Events())
	secret := "the meeting moved to the bakery at nine"
	for _, text := range []string{secret, "a", secret + secret + secret} {
		if err := alice.Send(ctx, "bob", text); err != nil {
			t.Fatal(err)
		}
	}
	if got := texts(t, bob); len(got) != 3 {
		t.Fatalf("bob got %q", got)
	}
	// What identifies alice: her session tokens (on her account
	// requests) and her identity key (in her published binding).
	var credentials [][]byte
	for _, e := range h.Events() {
		switch m := e.Message.(type) {
		case *wire.IssueTokens:
			credentials = append(credentials, bytes.Clone(m.Session[:]))
		case *wire.KTPublish:
			if m.Label != "alice" {
				continue
			}
			credentials = append(credentials, bytes.Clone(m.Session[:]))
			b, err := kt.ParseBinding(m.Value)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range b.IdentityKeys {
				credentials = append(credentials, bytes.Clone(k))
			}
			credentials = append(credentials, b.DeviceKeys...)
		}
	}
	credentials = append(credentials, []byte("alice"))
	if len(credentials) < 4 {
		t.Fatalf("found %d credentials of alice", len(credentials))
	}
	sizes := map[int]int{}
	anonymous := 0
	for i, e := range h.Events() {
		raw, err := wire.Encode(e.Message)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("bakery")) {
			t.Errorf("a %#x record holds the text", uint8(e.Kind))
		}
		switch e.Kind {
		case wire.KindSend, wire.KindCreateMailbox, wire.KindFetch, wire.KindAck, wire.KindSubscribe, wire.KindDelivery:
		default:
			continue
		}
		anonymous++
		if e.Stream != 0 && !h.Policy().IsBucket(e.Size) {
			t.Errorf("a %#x record of %d bytes", uint8(e.Kind), e.Size)
		}
		if e.Kind == wire.KindSend && e.Tag == "alice" && i >= before {
			sizes[e.Size]++
		}
		for _, c := range credentials {
			if bytes.Contains(raw, c) {
				t.Errorf("a %#x record carries a credential of alice (%d bytes)", uint8(e.Kind), len(c))
			}
		}
	}
	if anonymous == 0 || len(sizes) != 1 {
		t.Fatalf("%d anonymous records; alice's sends in sizes %v", anonymous, sizes)
	}
}
