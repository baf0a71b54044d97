package hostile_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/wire"
)

// TestHostileKTJoinLookupsApart plays the server watching a join: bob
// joins alice's group of seven, whose other members he has never looked
// up, and the server records every key-transparency lookup he makes. It
// must not be able to read the group off them: no request (a KTLookup,
// or a KTLookupBatch of several labels) and no connection names two of
// the group's members (docs/key-transparency.md §5, docs/adr/0019). The
// test also checks that it saw the lookups it judges: one for each
// member bob did not know, and that bob joined.
func TestHostileKTJoinLookupsApart(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	ctx := memberCtx(t)
	alice := h.NewUser(t, "alice", "alice")
	bob := h.NewUser(t, "bob", "bob")
	var others []string
	var members []*client.Client
	for i := range 5 {
		hd := fmt.Sprintf("member%d", i)
		others = append(others, hd)
		members = append(members, h.NewUser(t, hd, hd))
	}
	addContacts(t, ctx, "alice", append([]*client.Client{bob}, members...)...)
	if err := alice.CreateGroup(ctx, "g", append([]string{"bob"}, others...)); err != nil {
		t.Fatal(err)
	}
	start := len(h.Events())
	ev := memberEvents(t, ctx, bob)
	joined := slices.ContainsFunc(ev, func(e client.Event) bool { return e.Kind == client.EventJoined })
	if !joined {
		t.Fatalf("bob did not join: %v", ev)
	}
	group := map[string]bool{"alice": true, "bob": true}
	for _, o := range others {
		group[o] = true
	}
	perConn := map[uint64]map[string]bool{}
	looked := map[string]bool{}
	for _, e := range h.Events()[start:] {
		if e.Tag != "bob" || !e.FromClient {
			continue
		}
		var labels []string
		switch m := e.Message.(type) {
		case *wire.KTLookup:
			labels = []string{m.Label}
		case *wire.KTLookupBatch:
			labels = m.Labels
		default:
			continue
		}
		var named []string
		for _, l := range labels {
			if group[l] {
				named = append(named, l)
				looked[l] = true
			}
		}
		if len(named) > 1 {
			t.Errorf("one request named members %v of the group together", named)
		}
		if perConn[e.Conn] == nil {
			perConn[e.Conn] = map[string]bool{}
		}
		for _, l := range named {
			perConn[e.Conn][l] = true
		}
	}
	for c, ls := range perConn {
		if len(ls) > 1 {
			t.Errorf("connection %d asked for members %v of the group", c, ls)
		}
	}
	for _, o := range others {
		if !looked[o] {
			t.Errorf("bob joined without a lookup of %s the server saw", o)
		}
	}
}
