package e2e

import (
	"testing"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/wire"
)

// allowanceSetup starts a server that requires tokens, creates a mailbox
// and returns it with a connection to send from and n unspent tokens.
func allowanceSetup(t *testing.T, n int) (*testServer, *protocol.Conn, *protocol.Session, *protocol.Mailbox, [][]byte) {
	t.Helper()
	ts := startSecureServer(t, nil)
	owner := dial(t, ts, protocol.Options{})
	sess := registered(t, owner, "carol")
	toks := wallet(t, owner, sess, n+1)
	mb, err := owner.CreateMailbox(ctxT(t), toks[0])
	if err != nil {
		t.Fatal(err)
	}
	return ts, owner, sess, mb, toks[1:]
}

func stored(t *testing.T, owner *protocol.Conn, mb *protocol.Mailbox) int {
	t.Helper()
	msgs, _, err := owner.Fetch(ctxT(t), mb, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(msgs)
}

// TestAttackSendAllowanceReplay: a token pays for wire.SendsPerToken Sends
// on the connection that spent it, and for nothing elsewhere. Another
// connection — an observer or the server replaying the payer's empty-auth
// Sends, or a stranger sending with an empty auth — gets TOKEN_MISSING,
// and the token itself is TOKEN_SPENT there; the payer's allowance ends
// after SendsPerToken Sends, a duplicate does not use it up, and nothing
// the others tried spent any of it.
func TestAttackSendAllowanceReplay(t *testing.T) {
	ts, owner, _, mb, toks := allowanceSetup(t, 1)
	ctx := ctxT(t)
	payer := dial(t, ts, protocol.Options{})
	other := dial(t, ts, protocol.Options{})
	send := func(c *protocol.Conn, id wire.MessageID, auth []byte) (bool, error) {
		return c.Send(ctx, mb.SendID, id, []byte("paid by one token"), auth)
	}
	if _, err := send(payer, protocol.NewMessageID(), toks[0]); err != nil {
		t.Fatal(err)
	}
	credited := protocol.NewMessageID()
	if _, err := send(payer, credited, nil); err != nil {
		t.Fatalf("first Send on the allowance: %v", err)
	}
	// The replay of that very Send on another connection, under its own
	// message ID and under a new one, and the token itself.
	for _, id := range []wire.MessageID{credited, protocol.NewMessageID()} {
		if _, err := send(other, id, nil); !isCode(err, wire.CodeTokenMissing) {
			t.Fatalf("an empty auth on another connection: %v, want TOKEN_MISSING", err)
		}
	}
	if _, err := send(other, protocol.NewMessageID(), toks[0]); !isCode(err, wire.CodeTokenSpent) {
		t.Fatalf("the paying token on another connection: %v, want TOKEN_SPENT", err)
	}
	// A retry of a credited Send is a duplicate and uses nothing up.
	if dup, err := send(payer, credited, nil); err != nil || !dup {
		t.Fatalf("retry of a credited Send: dup=%v err=%v", dup, err)
	}
	for i := 2; i < wire.SendsPerToken; i++ {
		if _, err := send(payer, protocol.NewMessageID(), nil); err != nil {
			t.Fatalf("Send %d of %d on the allowance: %v", i+1, wire.SendsPerToken, err)
		}
	}
	if _, err := send(payer, protocol.NewMessageID(), nil); !isCode(err, wire.CodeTokenMissing) {
		t.Fatalf("Send %d on one token: %v, want TOKEN_MISSING", wire.SendsPerToken+1, err)
	}
	if n := stored(t, owner, mb); n != wire.SendsPerToken {
		t.Fatalf("the mailbox holds %d messages, want the %d one token paid for", n, wire.SendsPerToken)
	}
}

// TestSendAllowanceExpires: the allowance lasts as long as the token that
// paid for it would be accepted (its epoch and the next), not as long as
// the connection.
func TestSendAllowanceExpires(t *testing.T) {
	ts, _, _, mb, toks := allowanceSetup(t, 1)
	ctx := ctxT(t)
	payer := dial(t, ts, protocol.Options{})
	if _, err := payer.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("x"), toks[0]); err != nil {
		t.Fatal(err)
	}
	ts.clock.advance(2 * tokenEpoch)
	if _, err := payer.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("x"), nil); !isCode(err, wire.CodeTokenMissing) {
		t.Fatalf("an allowance past its token's validity: %v, want TOKEN_MISSING", err)
	}
}

// TestSendPaidCountsTheAllowance: SendPaid spends a token only when the
// connection's allowance is used up, so n Sends cost ceil(n /
// SendsPerToken) tokens; every message is stored once. On a new
// connection the count starts again, and a server that holds less
// allowance than the client counted gets the token in the same call.
func TestSendPaidCountsTheAllowance(t *testing.T) {
	const sends = 2*wire.SendsPerToken + 1
	ts, owner, sess, mb, toks := allowanceSetup(t, 4)
	ctx := ctxT(t)
	payer := dial(t, ts, protocol.Options{})
	spentTokens := 0
	for i := range sends {
		if len(toks) == 1 {
			t.Fatalf("Send %d: out of tokens after %d", i+1, spentTokens)
		}
		dup, spent, err := payer.SendPaid(ctx, mb.SendID, protocol.NewMessageID(), []byte("x"), toks[0])
		if err != nil || dup {
			t.Fatalf("Send %d: dup=%v err=%v", i+1, dup, err)
		}
		if spent != (i%wire.SendsPerToken == 0) {
			t.Fatalf("Send %d: spent=%v", i+1, spent)
		}
		if spent {
			toks, spentTokens = toks[1:], spentTokens+1
		}
	}
	if spentTokens != 3 {
		t.Fatalf("%d Sends spent %d tokens, want 3", sends, spentTokens)
	}
	if n := stored(t, owner, mb); n != sends {
		t.Fatalf("the mailbox holds %d messages, want %d", n, sends)
	}
	// Another connection starts from nothing: its first Send pays.
	other := dial(t, ts, protocol.Options{})
	if _, spent, err := other.SendPaid(ctx, mb.SendID, protocol.NewMessageID(), []byte("x"), toks[0]); err != nil || !spent {
		t.Fatalf("first Send on a new connection: spent=%v err=%v, want the token spent", spent, err)
	}
	// The server's allowance ends with the paying token's validity; the
	// client's count does not know the clock, so its empty-auth Send is
	// refused and SendPaid pays with the token in the same call.
	ts.clock.advance(2 * tokenEpoch)
	fresh := wallet(t, owner, sess, 1)
	dup, spent, err := payer.SendPaid(ctx, mb.SendID, protocol.NewMessageID(), []byte("x"), fresh[0])
	if err != nil || dup || !spent {
		t.Fatalf("Send after the allowance expired: dup=%v spent=%v err=%v, want the token spent", dup, spent, err)
	}
	if n := stored(t, owner, mb); n != sends+2 {
		t.Fatalf("the mailbox holds %d messages, want %d", n, sends+2)
	}
}
