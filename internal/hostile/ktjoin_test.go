package hostile_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/wire"
)

// ktLookups is what a connection tagged tag asked key transparency for
// among events: the group's labels each request named, by connection.
func ktLookups(events []hostile.Event, tag string, group map[string]bool) (perReq [][]string, perConn map[uint64]map[string]bool) {
	perConn = map[uint64]map[string]bool{}
	for _, e := range events {
		if e.Tag != tag || !e.FromClient {
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
			}
		}
		if len(named) == 0 {
			continue
		}
		perReq = append(perReq, named)
		if perConn[e.Conn] == nil {
			perConn[e.Conn] = map[string]bool{}
		}
		for _, l := range named {
			perConn[e.Conn][l] = true
		}
	}
	return perReq, perConn
}

// unchecked is the members of c's group g that `qpc group` shows as not
// checked in key transparency yet.
func unchecked(t *testing.T, ctx context.Context, c *client.Client, g string) []string {
	t.Helper()
	vs, err := c.Groups(ctx, g)
	if err != nil || len(vs) != 1 {
		t.Fatalf("%s: groups %s: %v (%d)", c.Handle(), g, err, len(vs))
	}
	var out []string
	for _, m := range vs[0].Members {
		if m.Unchecked {
			out = append(out, m.Handle)
		}
	}
	return out
}

// syncQueued syncs c as memberEvents does, but takes an outbox left to
// retry (client.ErrQueued: a Send that timed out on a loaded machine)
// as the next sync's business.
func syncQueued(t *testing.T, ctx context.Context, c *client.Client) []client.Event {
	t.Helper()
	ev, err := c.Sync(ctx)
	if err != nil && !errors.Is(err, client.ErrQueued) {
		t.Fatalf("%s sync: %v", c.Handle(), err)
	}
	for _, e := range ev {
		if e.Kind == client.EventAlarm {
			t.Errorf("%s: alarm %v", c.Handle(), e.Alarm)
		}
	}
	return ev
}

// TestHostileKTJoinLookupsApart plays the server watching a join: bob
// joins alice's group of seven, whose other members he has never looked
// up, and the server records every key-transparency lookup he makes. It
// must not be able to read the group off them (docs/key-transparency.md
// §5, docs/adr/0019, docs/adr/0041): the join itself looks at most one
// of the members up (before ADR 0041 it looked all five up in one burst,
// which timing tied together even on connections of their own), and no
// request (a KTLookup, or a KTLookupBatch of several labels) and no
// connection names two of the group's members. Each member is looked up
// when its first message reaches bob, who shows it as its own only then,
// and shows the members not checked yet as such until they write.
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
	group := map[string]bool{"alice": true, "bob": true}
	for _, o := range others {
		group[o] = true
	}
	start := len(h.Events())
	ev := memberEvents(t, ctx, bob)
	if !slices.ContainsFunc(ev, func(e client.Event) bool { return e.Kind == client.EventJoined }) {
		t.Fatalf("bob did not join: %v", ev)
	}
	if reqs, _ := ktLookups(h.Events()[start:], "bob", group); len(reqs) > 1 {
		t.Errorf("bob's join looked up members of the group together: %v", reqs)
	}
	if got := unchecked(t, ctx, bob, "#g"); !slices.Equal(got, others) {
		t.Errorf("bob shows %v as not checked yet, want %v", got, others)
	}
	// The members join one after the other and write; bob reads each.
	// Until a member and bob know each other's mailboxes, each sync of
	// theirs looks at most one member up (lookupOneUnreached), so the
	// text may need a few syncs of both to arrive.
	for i, m := range members {
		memberEvents(t, ctx, m)
		text := others[i] + ": hello from " + others[i]
		if err := m.Send(ctx, "#g", "hello from "+others[i]); err != nil && !errors.Is(err, client.ErrQueued) {
			t.Fatalf("%s: %v", others[i], err)
		}
		var got []string
		for try := 0; try < 30 && !slices.Contains(got, text); try++ {
			got = append(got, textsIn(syncQueued(t, ctx, bob))...)
			syncQueued(t, ctx, m)
		}
		if !slices.Contains(got, text) {
			t.Fatalf("bob did not read %s's text: %v", others[i], got)
		}
		if got := unchecked(t, ctx, bob, "#g"); slices.Contains(got, others[i]) {
			t.Errorf("after %s wrote, bob shows %v as not checked yet", others[i], got)
		}
	}
	reqs, perConn := ktLookups(h.Events()[start:], "bob", group)
	looked := map[string]bool{}
	for _, named := range reqs {
		if len(named) > 1 {
			t.Errorf("one request named members %v of the group together", named)
		}
		for _, l := range named {
			looked[l] = true
		}
	}
	for c, ls := range perConn {
		if len(ls) > 1 {
			t.Errorf("connection %d asked for members %v of the group", c, ls)
		}
	}
	for _, o := range others {
		if !looked[o] {
			t.Errorf("bob showed %s's text without a lookup of %s the server saw", o, o)
		}
	}
}

// TestHostileKTUncheckedMemberNotShown plays a server that will not let
// bob check one member of the group he joined: it answers his lookups of
// member0 with member1's proof. Bob's join, which no longer looks the
// members up (ADR 0041), goes through; member0 must then stay "not
// checked" in bob's view of the group and nothing member0 writes may be
// shown to bob as member0's, while member1, whose lookup is honest, is
// checked and read.
func TestHostileKTUncheckedMemberNotShown(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	ctx := memberCtx(t)
	alice := h.NewUser(t, "alice", "alice")
	bob := h.NewUser(t, "bob", "bob")
	m0 := h.NewUser(t, "member0", "member0")
	m1 := h.NewUser(t, "member1", "member1")
	addContacts(t, ctx, "alice", bob, m0, m1)
	h.Rewrite(func(x *hostile.Exchange) {
		q, ok := x.Request.(*wire.KTLookup)
		if x.Tag != "bob" || !ok || q.Label != "member0" {
			return
		}
		var p *kt.LookupProof
		p, err := h.KT().Lookup(context.Background(), "member1", q.KnownSize)
		if err != nil {
			t.Errorf("answering with member1's proof: %v", err)
			return
		}
		x.Response = &wire.KTProof{Proof: p.Marshal()}
	})
	if err := alice.CreateGroup(ctx, "g", []string{"bob", "member0", "member1"}); err != nil {
		t.Fatal(err)
	}
	ev, err := bob.Sync(ctx)
	if err != nil {
		t.Fatalf("bob sync: %v", err)
	}
	if !slices.ContainsFunc(ev, func(e client.Event) bool { return e.Kind == client.EventJoined }) {
		t.Fatalf("bob did not join: %v", ev)
	}
	for _, m := range []*client.Client{m0, m1} {
		memberEvents(t, ctx, m)
		if err := m.Send(ctx, "#g", "hello from "+m.Handle()); err != nil && !errors.Is(err, client.ErrQueued) {
			t.Fatalf("%s: %v", m.Handle(), err)
		}
	}
	// Both members' texts reach bob (member0's as soon as it or bob
	// knows the other's mailbox); only member1's may be shown.
	var texts []string
	for try := 0; try < 30 && !slices.Contains(texts, "member1: hello from member1"); try++ {
		ev, _ := bob.Sync(ctx)
		texts = append(texts, textsIn(ev)...)
		for _, e := range ev {
			if e.From == "member0" {
				t.Errorf("bob showed an event as member0's although he could not check member0's key: %v", e)
			}
		}
		for _, m := range []*client.Client{m0, m1} {
			m.Sync(ctx)
		}
	}
	if !slices.Contains(texts, "member1: hello from member1") {
		t.Fatalf("bob did not read member1: %v", texts)
	}
	for _, s := range texts {
		if s == "member0: hello from member0" {
			t.Errorf("bob showed member0's text although he could not check member0's key")
		}
	}
	if got := unchecked(t, ctx, bob, "#g"); !slices.Equal(got, []string{"member0"}) {
		t.Errorf("bob shows %v as not checked yet, want [member0]", got)
	}
}
