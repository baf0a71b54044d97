package hostile_test

import (
	"context"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// TestHostileBusyRefillApart plays a server that times the account's
// refill against the connections the same client opens, while the client
// dials an anonymous connection every 100 ms or so (Sync, and a contact
// looked up in key transparency each time: a lookup takes a connection of
// its own). Such a client never leaves a quiet gap by itself, so its
// refill must make one (client/linking.go accountClaimAfter); the promise
// is that it still does not come near an anonymous dial: no connection
// starts within the shortest quiet gap (2 s, less slack for the two
// clocks' views) before the account connection's first request or after
// its last. A refill that gave up on the gap after a deadline would link
// the account to the connection dialled next. It must also come at all
// (it used to wait for ever): the wallet ran dry and a message waits.
func TestHostileBusyRefillApart(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	alice := h.NewUser(t, "alice", "alice")
	h.NewUser(t, "bob", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; ; i++ { // spend the wallet until a message waits
		if i > 2*tokens.MaxBatch {
			t.Fatal("the wallet never ran dry")
		}
		alice.Send(ctx, "bob", "spending")
		if p, err := alice.Pending(); err != nil {
			t.Fatal(err)
		} else if p > 0 {
			break
		}
	}
	mark := time.Now()
	stop := alice.StartRefills(ctx)
	defer stop()
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		alice.Sync(ctx)
		if _, err := alice.AddContact(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if p, err := alice.Pending(); err != nil {
			t.Fatal(err)
		} else if p == 0 {
			break
		}
		if time.Since(start) > 25*time.Second {
			t.Fatal("no refill in 25 s while the client kept dialling: the refill starves")
		}
	}
	// Keep dialling a while after the refill, so that a dial right after
	// it would show.
	for range 30 {
		alice.AddContact(ctx, "bob")
		time.Sleep(100 * time.Millisecond)
	}

	// The server's view: when each connection of alice's (tag "alice")
	// sent its first record and its last, and which carried IssueTokens.
	first, last := map[uint64]time.Time{}, map[uint64]time.Time{}
	var account []uint64
	for _, e := range h.Events() {
		if !e.FromClient || e.Tag != "alice" || e.Time.Before(mark) {
			continue
		}
		if _, ok := first[e.Conn]; !ok {
			first[e.Conn] = e.Time
		}
		last[e.Conn] = e.Time
		if _, ok := e.Message.(*wire.IssueTokens); ok && (len(account) == 0 || account[len(account)-1] != e.Conn) {
			account = append(account, e.Conn)
		}
	}
	if len(account) == 0 {
		t.Fatal("no IssueTokens seen")
	}
	const apart = 2*time.Second - 250*time.Millisecond
	for _, acct := range account {
		from, to := first[acct].Add(-apart), last[acct].Add(apart)
		near, others := 0, 0
		for conn, at := range first {
			if conn == acct {
				continue
			}
			others++
			if at.After(from) && at.Before(to) {
				near++
				t.Errorf("a connection started %v after the account connection's first request (which ended %v later): within %v of the refill", at.Sub(first[acct]), last[acct].Sub(first[acct]), apart)
			}
		}
		t.Logf("refill on conn %d: %d other connections in the run, %d within %v of it", acct, others, near, apart)
	}
}
