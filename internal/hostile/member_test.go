package hostile_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/server/store"
)

// Hostile group members (issue 20, item 1): a real member of a group,
// on the real server and with the real client, sends MLS messages of its
// own making through client.SendMLS (proposals, commits the honest
// client would never send) or keeps writing after its removal. Each test
// fails on the client that committed every stored proposal by reference
// and read a removed member with the previous epoch's state.

// memberEvents syncs c and returns its events; alarms of the kinds in
// allowed are expected, any other fails the test.
func memberEvents(t *testing.T, ctx context.Context, c *client.Client, allowed ...client.AlarmKind) []client.Event {
	t.Helper()
	ev, err := c.Sync(ctx)
	if err != nil {
		t.Fatalf("%s sync: %v", c.Handle(), err)
	}
	for _, e := range ev {
		if e.Kind == client.EventAlarm && (e.Alarm == nil || !slices.Contains(allowed, e.Alarm.Kind)) {
			t.Errorf("%s: alarm %v", c.Handle(), e.Alarm)
		}
	}
	return ev
}

// textsIn is the texts among ev, as "from: text".
func textsIn(ev []client.Event) []string {
	var out []string
	for _, e := range ev {
		if e.Kind == client.EventMessage {
			out = append(out, e.From+": "+e.Text)
		}
	}
	return out
}

// settle syncs every user a few times, until every member knows every
// other's conversation mailbox and every commit is read.
func settle(t *testing.T, ctx context.Context, users ...*client.Client) {
	t.Helper()
	for range 3 {
		for _, u := range users {
			memberEvents(t, ctx, u, client.AlarmMemberPolicy)
		}
	}
}

// leafOf is the leaf of handle in g.
func leafOf(t *testing.T, g *mls.Group, handle string) uint32 {
	t.Helper()
	for _, m := range g.Members() {
		if string(m.Credential.Identity) == handle {
			return m.Leaf
		}
	}
	t.Fatalf("%s is not in the group", handle)
	return 0
}

// membersOf is c's view of the members of group.
func membersOf(t *testing.T, ctx context.Context, c *client.Client, group string) []string {
	t.Helper()
	convs, err := c.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range convs {
		if cv.Group && cv.Name == group && cv.Active {
			return cv.Members
		}
	}
	t.Fatalf("%s has no active group %s", c.Handle(), group)
	return nil
}

// propose has c send p, made in its state of group, to the members in to
// (all others if nil).
func propose(t *testing.T, ctx context.Context, c *client.Client, group string, to []string, p func(*mls.Group) *mls.Proposal) {
	t.Helper()
	err := c.SendMLS(ctx, group, to, func(g *mls.Group) ([]byte, error) { return g.Propose(p(g)) })
	if err != nil {
		t.Fatal(err)
	}
}

// newMembers registers users who all have each other as contacts, so
// that each joins the others' groups without an invitation to accept.
// groupG has creator make the group "g" with members and syncs them all
// until every commit is read.
func groupG(t *testing.T, ctx context.Context, creator *client.Client, members ...*client.Client) {
	t.Helper()
	var handles []string
	for _, m := range members {
		handles = append(handles, m.Handle())
	}
	if err := creator.CreateGroup(ctx, "g", handles); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, append([]*client.Client{creator}, members...)...)
}

func newMembers(t *testing.T, h *hostile.Server, handles ...string) []*client.Client {
	return newMembersWith(t, h, nil, handles...)
}

// newRejoiningMembers is newMembers for the rejoin tests: a member asks
// to rejoin at the first message of a later epoch, not after
// client.Options.RejoinAfter (10 minutes) of them.
func newRejoiningMembers(t *testing.T, h *hostile.Server, handles ...string) []*client.Client {
	return newMembersWith(t, h, func(o *client.Options) { o.RejoinAfter = -1 }, handles...)
}

func newMembersWith(t *testing.T, h *hostile.Server, set func(*client.Options), handles ...string) []*client.Client {
	var out []*client.Client
	for _, hd := range handles {
		o := h.ClientOptions(t)
		if set != nil {
			set(&o)
		}
		out = append(out, h.NewUserWith(t, hd, hd, o))
	}
	ctx := memberCtx(t)
	for _, u := range out {
		for _, hd := range handles {
			if hd != u.Handle() {
				addContacts(t, ctx, hd, u)
			}
		}
	}
	return out
}

func memberCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestHostileMemberRemoveCreatorProposal: eve, a member of alice's group,
// proposes to remove alice. Alice's client, which commits every change of
// the group, must not be frozen by it: she still adds carol and removes
// eve, and bob and carol read what she writes next. Before, the proposal
// was stored with alice's state and every later commit of hers failed
// "committer removes itself", for good.
func TestHostileMemberRemoveCreatorProposal(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "eve", "carol")
	alice, bob, eve, carol := u[0], u[1], u[2], u[3]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, eve)

	propose(t, ctx, eve, "#g", nil, func(g *mls.Group) *mls.Proposal {
		return &mls.Proposal{Type: mls.ProposalTypeRemove, Remove: &mls.Remove{Removed: leafOf(t, g, "alice")}}
	})
	memberEvents(t, ctx, bob, client.AlarmMemberPolicy)
	memberEvents(t, ctx, alice, client.AlarmMemberPolicy)

	if err := alice.AddMember(ctx, "#g", "carol"); err != nil {
		t.Fatalf("after eve's proposal alice cannot add carol: %v", err)
	}
	settle(t, ctx, alice, bob, carol, eve)
	if err := alice.RemoveMember(ctx, "#g", "eve"); err != nil {
		t.Fatalf("after eve's proposal alice cannot remove eve: %v", err)
	}
	if err := alice.Send(ctx, "#g", "still mine"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, carol} {
		if got := textsIn(memberEvents(t, ctx, c)); !slices.Equal(got, []string{"alice: still mine"}) {
			t.Fatalf("%s got %q", c.Handle(), got)
		}
		if got := membersOf(t, ctx, c, "g"); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
			t.Fatalf("%s sees members %q", c.Handle(), got)
		}
	}
}

// TestHostileMemberSmuggledRemove: eve proposes to remove carol; then
// alice adds dave. Alice's commit must change exactly what she asked, so
// carol stays a member and reads alice's next message, and every change
// of membership alice's commit made is in her history. Before, the
// Remove rode inside the commit and alice's history said only "dave was
// added".
func TestHostileMemberSmuggledRemove(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "carol", "eve", "dave")
	alice, bob, carol, eve, dave := u[0], u[1], u[2], u[3], u[4]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol, eve)
	before := membersOf(t, ctx, alice, "g")
	hist, err := alice.History("#g", 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := len(hist)

	propose(t, ctx, eve, "#g", nil, func(g *mls.Group) *mls.Proposal {
		return &mls.Proposal{Type: mls.ProposalTypeRemove, Remove: &mls.Remove{Removed: leafOf(t, g, "carol")}}
	})
	for _, c := range []*client.Client{alice, bob, carol} {
		memberEvents(t, ctx, c, client.AlarmMemberPolicy)
	}
	if err := alice.AddMember(ctx, "#g", "dave"); err != nil {
		t.Fatal(err)
	}
	after := membersOf(t, ctx, alice, "g")
	// Alice's history must account for every change of membership.
	hist, err = alice.History("#g", 0)
	if err != nil {
		t.Fatal(err)
	}
	told := map[string]bool{}
	for _, e := range hist[seen:] {
		switch e.Kind {
		case client.EventMemberAdded:
			told["+"+e.From] = true
		case client.EventMemberRemoved:
			told["-"+e.From] = true
		}
	}
	for _, h := range after {
		if !slices.Contains(before, h) && !told["+"+h] {
			t.Errorf("alice's commit added %s and her history does not say so", h)
		}
	}
	for _, h := range before {
		if !slices.Contains(after, h) && !told["-"+h] {
			t.Errorf("alice's commit removed %s and her history does not say so", h)
		}
	}
	if !slices.Contains(after, "carol") {
		t.Fatalf("eve's proposal removed carol: alice's members are %q", after)
	}
	settle(t, ctx, alice, bob, carol, eve, dave)
	if err := alice.Send(ctx, "#g", "hello dave"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, carol)); !slices.Equal(got, []string{"alice: hello dave"}) {
		t.Fatalf("carol got %q", got)
	}
}

// TestHostileMemberPartialProposal: eve sends a proposal (an update of her
// own leaf, which any member may propose) to every member but bob; then
// alice adds dave. Bob must process alice's commit and read what she
// writes next. Before, the commit named eve's proposal by reference, bob
// could not process it ("unknown proposal reference") and waited, stuck,
// for good.
func TestHostileMemberPartialProposal(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "carol", "eve", "dave")
	alice, bob, carol, eve, dave := u[0], u[1], u[2], u[3], u[4]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol, eve)

	err := eve.SendMLS(ctx, "#g", []string{"alice", "carol"}, func(g *mls.Group) ([]byte, error) { return g.ProposeUpdate() })
	if err != nil {
		t.Fatal(err)
	}
	memberEvents(t, ctx, alice)
	memberEvents(t, ctx, carol)
	if err := alice.AddMember(ctx, "#g", "dave"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Send(ctx, "#g", "after dave"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, carol} {
		if got := textsIn(memberEvents(t, ctx, c)); !slices.Equal(got, []string{"alice: after dave"}) {
			t.Fatalf("%s got %q", c.Handle(), got)
		}
	}
	settle(t, ctx, alice, bob, carol, eve, dave)
	if got := membersOf(t, ctx, bob, "g"); !slices.Equal(got, []string{"alice", "bob", "carol", "dave", "eve"}) {
		t.Fatalf("bob sees members %q", got)
	}
}

// putCounter counts the server's stored envelopes by send ID.
type putCounter struct {
	store.Store
	mu   sync.Mutex
	puts map[[store.MailboxIDSize]byte]int
}

func (s *putCounter) Put(ctx context.Context, sendID [store.MailboxIDSize]byte, id [store.MessageIDSize]byte, env []byte, q store.Quota, now time.Time, spend *store.Spend) (store.PutResult, error) {
	res, err := s.Store.Put(ctx, sendID, id, env, q, now, spend)
	if err == nil {
		s.mu.Lock()
		s.puts[sendID]++
		s.mu.Unlock()
	}
	return res, err
}

func (s *putCounter) count(ids map[[store.MailboxIDSize]byte]bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id := range ids {
		n += s.puts[id]
	}
	return n
}

// mailboxesOf is the send IDs of every mailbox the client tagged tag has
// read from.
func mailboxesOf(t *testing.T, ctx context.Context, h *hostile.Server, tag string) map[[store.MailboxIDSize]byte]bool {
	t.Helper()
	out := map[[store.MailboxIDSize]byte]bool{}
	for _, rid := range readFrom(h, tag) {
		out[sendIDOf(t, ctx, h, rid)] = true
	}
	return out
}

// TestHostileMemberOutstaysRemoval: alice removes eve from her group;
// eve, who has not read the commit (or pretends not to have), keeps
// writing to the group with the previous epoch's keys. Bob and alice must
// not show what she writes, and must not put her back on their send list:
// bob's next message to the group reaches none of eve's mailboxes.
// Before, the previous epoch's state (kept 7 days) read eve's messages,
// and her first one put her back among the members bob sends to.
func TestHostileMemberOutstaysRemoval(t *testing.T) {
	pc := &putCounter{puts: map[[store.MailboxIDSize]byte]int{}}
	h := hostile.Start(t, hostile.Options{
		Accounts:  hostile.RoomyAccounts,
		WrapStore: func(s store.Store) store.Store { pc.Store = s; return pc },
	})
	u := newMembers(t, h, "alice", "bob", "eve")
	alice, bob, eve := u[0], u[1], u[2]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, eve)
	if err := bob.Send(ctx, "#g", "before"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, eve)); !slices.Equal(got, []string{"bob: before"}) {
		t.Fatalf("eve got %q before her removal", got)
	}
	memberEvents(t, ctx, alice)
	eveBoxes := mailboxesOf(t, ctx, h, "eve")

	if err := alice.RemoveMember(ctx, "#g", "eve"); err != nil {
		t.Fatal(err)
	}
	memberEvents(t, ctx, bob)
	// Eve does not read the commit and writes on, in the epoch before it.
	for _, text := range []string{"still here", "and here"} {
		if err := eve.Send(ctx, "#g", text); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*client.Client{bob, alice} {
		if got := textsIn(memberEvents(t, ctx, c, client.AlarmDropped)); len(got) != 0 {
			t.Fatalf("%s read %q from eve after her removal", c.Handle(), got)
		}
	}
	toEve := pc.count(eveBoxes)
	if err := bob.Send(ctx, "#g", "after"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Send(ctx, "#g", "after too"); err != nil {
		t.Fatal(err)
	}
	if n := pc.count(eveBoxes) - toEve; n != 0 {
		t.Fatalf("bob and alice put %d envelopes in eve's mailboxes after her removal", n)
	}
	if got := textsIn(memberEvents(t, ctx, alice)); !slices.Equal(got, []string{"bob: after"}) {
		t.Fatalf("alice got %q", got)
	}
}

// TestHostileMemberReAdd: alice removes eve and adds her again; eve
// joins again and the three talk. Before, eve's client took the new
// Welcome for one it had joined already and ignored it.
func TestHostileMemberReAdd(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "eve")
	alice, bob, eve := u[0], u[1], u[2]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, eve)
	if err := alice.RemoveMember(ctx, "#g", "eve"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, eve)
	if err := alice.AddMember(ctx, "#g", "eve"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, eve)
	if err := alice.Send(ctx, "#g", "welcome back"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, eve)); !slices.Equal(got, []string{"alice: welcome back"}) {
		t.Fatalf("eve got %q after being re-added", got)
	}
	if err := eve.Send(ctx, "#g", "glad to be back"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, bob} {
		want := []string{"eve: glad to be back"}
		if c == bob {
			want = []string{"alice: welcome back", "eve: glad to be back"}
		}
		if got := textsIn(memberEvents(t, ctx, c)); !slices.Equal(got, want) {
			t.Fatalf("%s got %q", c.Handle(), got)
		}
	}
}

// TestHostileMemberUnprocessableCommit: eve, who created the group,
// commits by reference a proposal she sent to alice only. Bob cannot
// process the commit; he must be told at once, by an alarm that says so
// (and that he asks for the group's state to rejoin, rejoin_test.go), not
// wait in silence.
func TestHostileMemberUnprocessableCommit(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "eve", "alice", "bob")
	eve, alice, bob := u[0], u[1], u[2]
	ctx := memberCtx(t)
	groupG(t, ctx, eve, alice, bob)
	propose(t, ctx, eve, "#g", []string{"alice"}, func(*mls.Group) *mls.Proposal {
		return &mls.Proposal{Type: mls.ProposalTypeGroupContextExtensions, GroupContextExtensions: &mls.GroupContextExtensions{}}
	})
	err := eve.SendMLS(ctx, "#g", nil, func(g *mls.Group) ([]byte, error) {
		res, err := g.Commit(nil)
		if err != nil {
			return nil, err
		}
		return res.Commit, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var stuck []string
	for _, e := range memberEvents(t, ctx, bob, client.AlarmGroupStuck, client.AlarmDropped) {
		if e.Kind == client.EventAlarm && e.Alarm.Kind == client.AlarmGroupStuck {
			stuck = append(stuck, e.Alarm.Detail)
		}
	}
	if len(stuck) != 1 || !strings.Contains(stuck[0], "to rejoin") {
		t.Fatalf("bob's group-stuck alarms: %q", stuck)
	}
	alarms, err := bob.Alarms()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(alarms, func(a client.Alarm) bool { return a.Kind == client.AlarmGroupStuck }) {
		t.Fatal("the group-stuck alarm is not kept")
	}
}
