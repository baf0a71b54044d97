package hostile_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/wire"
)

// Timing links between the account and its anonymous traffic, found by
// review: each test plays the server that times one against the other.

// TestHostileOneShotRefillLinksSend plays a server that watches, for each
// account, the IssueTokens on its session and the anonymous requests that
// follow. A one-shot run (`qpc send`: client.Open, refillFirst =
// RefillIfEmpty, Send) with an empty wallet refills on the account's
// session and then, milliseconds later, opens its anonymous connection
// and spends the fresh tokens. Timing then ties the account to the
// mailbox it writes to, through Tor as well (each connection on its own
// circuit): sealed sender is undone for that run.
//
// The promise (threat model: "tie an account's refills to its anonymous
// sends by timing"; "Spending tokens right after obtaining them ... lets
// the server correlate by time"): no anonymous Send follows the account's
// IssueTokens within a second (the refill schedule's mean gap is 5
// minutes).
func TestHostileOneShotRefillLinksSend(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	aliceOpts := h.ClientOptions(t)
	alice := h.NewUserWith(t, "alice", "alice", aliceOpts)
	bob := h.NewUser(t, "bob", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := alice.Send(ctx, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	texts(t, bob)
	texts(t, alice)
	// Spend the wallet: this long-lived run never refills after a send.
	// Meanwhile the server answers every Send alice pays from her
	// connection's allowance with TOKEN_MISSING, as a server that does
	// not count the allowance would, so that each Send spends a token
	// (SendPaid pays at once) and the wallet runs dry as fast as before
	// the allowance.
	var draining atomic.Bool
	draining.Store(true)
	h.Rewrite(func(x *hostile.Exchange) {
		if s, ok := x.Request.(*wire.Send); ok && draining.Load() && x.Tag == "alice" && len(s.Auth) == 0 {
			if _, ok := x.Response.(*wire.Sent); ok {
				x.Response = &wire.ErrorMessage{Code: wire.CodeTokenMissing, Detail: "no allowance counted"}
			}
		}
	})
	for i := 0; ; i++ {
		err := alice.Send(ctx, "bob", fmt.Sprintf("spend %d", i))
		if err != nil {
			if !strings.Contains(err.Error(), "token") {
				t.Fatalf("send %d: %v", i, err)
			}
			break
		}
		if i > 500 {
			t.Fatal("the wallet never ran dry")
		}
	}
	alice.Close()
	draining.Store(false)

	// The next `qpc send`, as cmd/qpc runs it.
	mark := time.Now()
	again, err := client.Open(aliceOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.RefillIfEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	if err := again.Send(ctx, "bob", "linked?"); err != nil {
		t.Fatal(err)
	}

	// The server's view: the account's IssueTokens (its session names
	// it), then the first Send on another connection.
	var issue, send time.Time
	var issueConn uint64
	for _, e := range h.Events() {
		if !e.FromClient || e.Tag != "alice" || e.Time.Before(mark) {
			continue
		}
		if e.Kind == wire.KindIssueTokens && issue.IsZero() {
			issue, issueConn = e.Time, e.Conn
		}
		if e.Kind == wire.KindSend && !issue.IsZero() && e.Conn != issueConn && send.IsZero() {
			send = e.Time
		}
	}
	if issue.IsZero() || send.IsZero() {
		t.Fatalf("no refill (%v) or no send (%v) after it", issue, send)
	}
	gap := send.Sub(issue)
	t.Logf("IssueTokens on the account's session, then an anonymous Send %v later", gap)
	if gap < time.Second {
		t.Errorf("an anonymous Send %v after the account's refill: the server ties the account to the mailbox by timing", gap)
	}
}

// TestHostileFollowStartLinksAccount plays a server that times
// when connections start. A client that starts following (`qpc recv
// --follow`) opens its account connection (RefillIfEmpty, which checks the
// token key) and, milliseconds later, the connection of each of its
// mailboxes to fetch and subscribe with the mailbox's owner key. Minutes
// later the refill schedule sends IssueTokens, with the account's session,
// on that same account connection. The server then knows which account
// owns which mailbox, even when each connection takes a Tor circuit of its
// own: the rule "account exchanges on one connection, anonymous traffic on
// others" (threat model, "The connection links requests") is undone by
// the start-up burst.
//
// The promise: no owner request for a mailbox starts within a second of
// the first request of the connection that carries the account's session.
func TestHostileFollowStartLinksAccount(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	aliceOpts := h.ClientOptions(t)
	alice := h.NewUserWith(t, "alice", "alice", aliceOpts)
	bob := h.NewUser(t, "bob", "bob")
	ctx := ctxT(t)
	if err := alice.Send(ctx, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	texts(t, bob)
	texts(t, alice)
	// Use tokens as a day of chatting does, until the wallet is below
	// its low-water mark, so that the schedule has something to top up
	// (a wallet above it is left alone). A token pays for up to eight
	// sends on a connection (SendPaid), so that takes a few hundred.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer scancel()
	for i := 0; ; i++ {
		if i%8 == 0 {
			st, err := alice.Status(sctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Tokens < protocol.DefaultWalletLow {
				break
			}
			if i >= 2000 {
				t.Fatalf("%d sends left %d tokens, not below the low-water mark %d", i, st.Tokens, protocol.DefaultWalletLow)
			}
		}
		if err := alice.Send(sctx, "bob", fmt.Sprintf("chat %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	alice.Close()

	mark := time.Now()
	again, err := client.Open(aliceOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	// Refill checks every ~200 ms here, but an account exchange waits a
	// quiet gap of 2-4 s after the last anonymous dial (the mailbox
	// connections, staggered over up to 2 s). Follow runs until the
	// server has seen the refill's IssueTokens and the mailboxes' owner
	// requests, and a further 2 s for any connection that starts just
	// after it (a loaded machine can take far longer than a quiet one to
	// get there; at most a minute).
	fctx, stop := context.WithTimeout(ctx, time.Minute)
	defer stop()
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		again.Follow(fctx, func(client.Event) {})
	}()
	seen := func() bool {
		issued, owned := false, false
		for _, e := range h.Events() {
			if !e.FromClient || e.Time.Before(mark) {
				continue
			}
			switch e.Message.(type) {
			case *wire.IssueTokens:
				issued = true
			case wire.Signed:
				owned = true
			}
		}
		return issued && owned
	}
	for fctx.Err() == nil && !seen() {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	stop()
	<-followed

	// The server's view (no tags used): the connection that carried an
	// IssueTokens (the account's session), its first request, and the
	// first request of every connection that made an owner request.
	first := map[uint64]time.Time{}
	var account uint64
	owner := map[uint64]wire.ID{}
	for _, e := range h.Events() {
		if !e.FromClient || e.Time.Before(mark) || e.Kind == wire.KindClientHello {
			continue
		}
		if _, ok := first[e.Conn]; !ok {
			first[e.Conn] = e.Time
		}
		switch m := e.Message.(type) {
		case *wire.IssueTokens:
			account = e.Conn
		case wire.Signed:
			owner[e.Conn] = m.Mailbox()
		}
	}
	if account == 0 || len(owner) == 0 {
		t.Fatalf("no IssueTokens (conn %d) or no owner request (%d) in the run", account, len(owner))
	}
	linked := 0
	for conn, mb := range owner {
		d := first[conn].Sub(first[account])
		if d < 0 {
			d = -d
		}
		t.Logf("mailbox %x…: its connection started %v from the account's", mb[:4], d)
		if d < time.Second {
			linked++
		}
	}
	if linked > 0 {
		t.Errorf("%d of %d mailboxes' connections started within a second of the connection that carries the account's session: the server ties them to the account", linked, len(owner))
	}
}
