package hostile_test

import (
	"bytes"
	"testing"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/wire"
)

// TestAttackReplayOwnerRequest: an observer who captured bob's signed
// owner requests (Fetch, Ack, Subscribe) — or the server, which sees them —
// cannot use them on a connection of its own: the signature covers the TLS
// exporter of bob's connection (docs/protocol.md §5).
func TestAttackReplayOwnerRequest(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice, bob := pair(t, h)
	if err := alice.Send(ctxT(t), "bob", "for bob only"); err != nil {
		t.Fatal(err)
	}
	var captured []wire.Message
	for _, e := range h.Events() {
		if !e.FromClient || e.Tag != "bob" {
			continue
		}
		switch e.Kind {
		case wire.KindFetch, wire.KindAck, wire.KindSubscribe, wire.KindDeleteMailbox:
			captured = append(captured, e.Message)
		}
	}
	if len(captured) == 0 {
		t.Fatal("bob sent no owner request")
	}
	mallory := h.Raw(t, "mallory")
	for _, m := range captured {
		resp, err := mallory.RoundTrip(m)
		if err != nil {
			t.Fatalf("replayed %T: %v", m, err)
		}
		e, ok := resp.(*wire.ErrorMessage)
		if !ok || e.Code != wire.CodeUnauthorized {
			t.Fatalf("replayed %T answered %T %v, want UNAUTHORIZED", m, resp, resp)
		}
	}
	// bob still gets his message: nothing the replays did touched it.
	if got := texts(t, bob); len(got) != 1 || got[0] != "alice: for bob only" {
		t.Fatalf("bob got %q", got)
	}
}

// TestAttackReplayToken: a delivery token seen on the wire (or by the
// server) pays for one write only: the same token on another send, even
// to the same mailbox under a new message ID, is refused as spent. A Send
// the messenger paid from its connection's allowance (an empty auth,
// SendPaid) replayed on another connection is refused as TOKEN_MISSING:
// the allowance does not travel.
func TestAttackReplayToken(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice, _ := pair(t, h)
	if err := alice.Send(ctxT(t), "bob", "paid once"); err != nil {
		t.Fatal(err)
	}
	var sends []*wire.Send
	for _, e := range h.Events() {
		if s, ok := e.Message.(*wire.Send); ok && e.FromClient && e.Tag == "alice" {
			sends = append(sends, s)
		}
	}
	if len(sends) == 0 {
		t.Fatal("alice sent nothing")
	}
	mallory := h.Raw(t, "mallory")
	paid := 0
	for _, s := range sends {
		again := *s
		again.MessageID = protocol.NewMessageID()
		resp, err := mallory.RoundTrip(&again)
		if err != nil {
			t.Fatal(err)
		}
		want := wire.CodeTokenSpent
		if len(s.Auth) == 0 {
			want = wire.CodeTokenMissing
		} else {
			paid++
		}
		e, ok := resp.(*wire.ErrorMessage)
		if !ok || e.Code != want {
			t.Fatalf("a replayed Send (auth of %d bytes) answered %T %v, want %v", len(s.Auth), resp, resp, want)
		}
	}
	if paid == 0 {
		t.Fatal("alice showed no token")
	}
}

// TestHostileLearnsNoPassword: everything the server saw of registration
// and login, every record of it, holds neither the password nor the
// password's bytes anywhere inside (OPAQUE, RFC 9807: the server sees
// only blinded elements and the registration record).
func TestHostileLearnsNoPassword(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice := h.NewUser(t, "alice", "alice") // registers with "password of alice"
	if err := alice.Login(ctxT(t), []byte("password of alice")); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, e := range h.Events() {
		raw, err := wire.Encode(e.Message)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == wire.KindAccountRequest {
			seen++
		}
		for _, secret := range [][]byte{[]byte("password of alice"), []byte("password")} {
			if bytes.Contains(raw, secret) {
				t.Fatalf("a %#x record holds %q", uint8(e.Kind), secret)
			}
		}
	}
	if seen < 4 { // two records to register, two to log in
		t.Fatalf("the server saw %d account requests", seen)
	}
}
