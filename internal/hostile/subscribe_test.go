package hostile_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/wire"
)

// subscribeRaw opens a subscription on r and returns a reader of its
// stream once the server has answered with its first record.
func subscribeRaw(t *testing.T, r *hostile.RawConn, rec func() []byte) (*wire.Reader, wire.Message) {
	t.Helper()
	st := openUnread(t, r, 1, rec)[0]
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	rd := wire.NewReader(st, r.Policy)
	first, err := rd.ReadMessage()
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return rd, first
}

// TestAttackSubscriptionFlood: a stranger subscribes to its own mailbox
// again and again, from two connections, so that every Send to it would
// wake them all, and one connection subscribes to many mailboxes. A
// mailbox keeps the newest DefaultMaxSubsPerMailbox subscriptions (the
// others are ended with RATE_LIMITED), and a connection holds at most
// DefaultMaxSubsPerConn.
func TestAttackSubscriptionFlood(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	receiveID, key := strangerMailbox(t, h, 0)
	conns := []*hostile.RawConn{h.Raw(t, "sub0"), h.Raw(t, "sub1")}
	const total = 20
	var readers []*wire.Reader
	for i := range total {
		r := conns[i%2]
		rd, first := subscribeRaw(t, r, signedRecord(t, r, key, &wire.Subscribe{ReceiveID: receiveID}))
		if _, ok := first.(*wire.FetchEnd); !ok {
			t.Fatalf("subscription %d answered %T %v", i, first, first)
		}
		readers = append(readers, rd)
	}
	live := 0
	for i, rd := range readers {
		m, err := rd.ReadMessage()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			live++
			if i < total-server.DefaultMaxSubsPerMailbox {
				t.Errorf("old subscription %d still live", i)
			}
		case err != nil:
			t.Fatalf("subscription %d: %v", i, err)
		default:
			if e, ok := m.(*wire.ErrorMessage); !ok || e.Code != wire.CodeRateLimited {
				t.Fatalf("subscription %d got %T %v, want RATE_LIMITED", i, m, m)
			}
		}
	}
	if live != server.DefaultMaxSubsPerMailbox {
		t.Fatalf("%d of %d subscriptions to one mailbox live, want %d", live, total, server.DefaultMaxSubsPerMailbox)
	}

	// One connection, one mailbox after another.
	r := h.Raw(t, "many")
	for i := range server.DefaultMaxSubsPerConn + 1 {
		id, k := strangerMailbox(t, h, 0)
		m := &wire.Subscribe{ReceiveID: id}
		_, first := subscribeRaw(t, r, signedRecord(t, r, k, m))
		e, refused := first.(*wire.ErrorMessage)
		switch {
		case i < server.DefaultMaxSubsPerConn && refused:
			t.Fatalf("subscription %d on one connection refused: %v", i, e)
		case i == server.DefaultMaxSubsPerConn && (!refused || e.Code != wire.CodeRateLimited):
			t.Fatalf("subscription %d on one connection answered %T %v, want RATE_LIMITED", i, first, first)
		}
	}
}
