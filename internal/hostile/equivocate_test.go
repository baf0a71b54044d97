package hostile_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/wire"
)

// equivocate has c make two different update commits from its one state
// of group and send the one of lower SHA-256 (the one the fork choice
// ranks first, docs/protocol.md §11.6: same committer, same epoch) to
// better and the other to worse. Nobody is sent both. c's own state
// follows the better one, so that it can equivocate again later.
func equivocate(t *testing.T, ctx context.Context, c *client.Client, group string, better, worse []string) {
	t.Helper()
	var other []byte
	err := c.SendMLS(ctx, group, better, func(g *mls.Group) ([]byte, error) {
		var commits [2][]byte
		var states [2]*mls.Group
		for i := range commits {
			raw, err := g.Marshal()
			if err != nil {
				return nil, err
			}
			cp, err := mls.UnmarshalGroup(raw, &mls.Config{})
			if err != nil {
				return nil, err
			}
			res, err := cp.Update()
			if err != nil {
				return nil, err
			}
			commits[i], states[i] = res.Commit, cp
		}
		h0, h1 := sha256.Sum256(commits[0]), sha256.Sum256(commits[1])
		if bytes.Compare(h0[:], h1[:]) > 0 {
			commits[0], commits[1] = commits[1], commits[0]
			states[0] = states[1]
		}
		*g = *states[0]
		other = commits[1]
		return commits[0], nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = c.SendMLS(ctx, group, worse, func(*mls.Group) ([]byte, error) { return other, nil })
	if err != nil {
		t.Fatal(err)
	}
}

// authenticators is each user's epoch and epoch authenticator of group.
func authenticators(t *testing.T, ctx context.Context, group string, users ...*client.Client) (epochs []uint64, auths [][]byte) {
	t.Helper()
	for _, u := range users {
		e, a, err := u.EpochAuthenticator(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		epochs, auths = append(epochs, e), append(auths, a)
	}
	return epochs, auths
}

func allSame(epochs []uint64, auths [][]byte) bool {
	for i := range epochs {
		if epochs[i] != epochs[0] || !bytes.Equal(auths[i], auths[0]) {
			return false
		}
	}
	return true
}

// TestHostileMemberEquivocates: eve, a member of a group of five (an
// update is open to every member), makes two different update commits
// from her one state of epoch e and sends one to some members and the
// other to the rest; nobody gets both, so the fork choice (docs/protocol.md
// §11.6) never sees the two side by side. The honest members then write.
// They must all end on one epoch with one epoch authenticator within a
// few syncs (not after RejoinAfter, 10 minutes, and a rejoin), and every
// text written after the split must be shown exactly once to every other
// honest member. Played three times: the better commit to one member
// (three must switch), then to three (one must switch), then to one
// again with a commit of one of the three on the losing branch before
// anyone writes (the fork is two epochs deep there).
//
// Before the commit echo (§11.6) the group stayed split: each side
// deferred the other's texts as of a branch it might switch to, and
// nothing ever made it switch.
func TestHostileMemberEquivocates(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	// What the honest members send, by kind: the cost of a fork.
	var mu sync.Mutex
	var echoes, texts, all int
	u := newCountedMembers(t, h, func(from string, e client.SentEnvelope) {
		if from == "eve" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		all++
		switch {
		case e.Echo:
			echoes++
		case e.Kind == content.KindText:
			texts++
		}
	}, "alice", "bob", "carol", "dave", "eve")
	honest, eve := u[:4], u[4]
	ctx := memberCtx(t)
	// Sends never refill a wallet; long-lived clients run the refill
	// schedule.
	for _, c := range u {
		defer c.StartRefills(ctx)()
	}
	groupG(t, ctx, u[0], u[1:]...)
	sameEpoch(t, ctx, "#g", u...)

	// shown[reader][text] counts the texts each honest member was shown.
	shown := map[string]map[string]int{}
	for _, c := range honest {
		shown[c.Handle()] = map[string]int{}
	}
	syncOne := func(c *client.Client) {
		ev, err := c.Sync(ctx)
		if err != nil {
			t.Fatalf("%s sync: %v", c.Handle(), err)
		}
		for _, e := range ev {
			switch {
			case e.Kind == client.EventMessage && e.From != c.Handle():
				shown[c.Handle()][e.From+": "+e.Text]++
			case e.Kind == client.EventAlarm && e.Alarm != nil && e.Alarm.Kind == client.AlarmMemberPolicy:
				// eve sent two commits for one epoch: said, as it should be.
			case e.Kind == client.EventAlarm:
				t.Errorf("%s: alarm %v", c.Handle(), e.Alarm)
			}
		}
	}
	var sent []string
	for round, split := range [][2][]string{
		{{"alice"}, {"bob", "carol", "dave"}},
		{{"alice", "bob", "carol"}, {"dave"}},
		{{"alice"}, {"bob", "carol", "dave"}}, // and bob commits on his branch first
	} {
		e0, _ := authenticators(t, ctx, "#g", honest...)
		equivocate(t, ctx, eve, "#g", split[0], split[1])
		for _, c := range honest {
			syncOne(c)
		}
		epochs, auths := authenticators(t, ctx, "#g", honest...)
		for i, c := range honest {
			if epochs[i] != e0[0]+1 {
				t.Fatalf("round %d: %s is at epoch %d after eve's commits, want %d", round, c.Handle(), epochs[i], e0[0]+1)
			}
		}
		if allSame(epochs, auths) {
			t.Fatalf("round %d: eve's two commits did not split the group", round)
		}
		mu.Lock()
		echoes, texts, all = 0, 0, 0
		mu.Unlock()
		start := time.Now()
		if round == 2 {
			// The fork is deeper: bob's branch has an epoch more.
			if err := honest[1].Update(ctx, "#g"); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range honest {
			text := fmt.Sprintf("round %d from %s", round, c.Handle())
			if err := c.Send(ctx, "#g", text); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, c.Handle()+": "+text)
		}
		// Converged: one epoch and authenticator, and every text read by
		// every other honest member. Polled, sync round after sync
		// round; each round is every honest member syncing once.
		readAll := func() bool {
			for _, c := range honest {
				for _, s := range sent {
					if !bytes.HasPrefix([]byte(s), []byte(c.Handle()+": ")) && shown[c.Handle()][s] == 0 {
						return false
					}
				}
			}
			return true
		}
		const maxRounds = 8
		rounds := 0
		for ; rounds < maxRounds; rounds++ {
			if allSame(authenticators(t, ctx, "#g", honest...)) && readAll() {
				break
			}
			for _, c := range honest {
				syncOne(c)
			}
		}
		if rounds == maxRounds {
			epochs, auths := authenticators(t, ctx, "#g", honest...)
			for i, c := range honest {
				var missing []string
				for _, s := range sent {
					if !bytes.HasPrefix([]byte(s), []byte(c.Handle()+": ")) && shown[c.Handle()][s] == 0 {
						missing = append(missing, s)
					}
				}
				t.Logf("%s: epoch %d authenticator %x; not shown %q", c.Handle(), epochs[i], auths[i][:8], missing)
			}
			t.Fatalf("round %d: the honest members did not converge within %d sync rounds after eve's equivocation", round, maxRounds)
		}
		took := time.Since(start).Round(time.Millisecond)
		// Two more rounds: whatever is still on its way (texts sent
		// again after a switch) must not be shown twice.
		for range 2 {
			for _, c := range honest {
				syncOne(c)
			}
		}
		sameEpoch(t, ctx, "#g", honest...)
		mu.Lock()
		// Each honest member's text goes to the 4 others: 16 envelopes.
		t.Logf("round %d (better commit to %v): converged after %d sync rounds, %v; the honest members sent %d envelopes for 16 of texts: %d echoes, %d texts sent again, %d others (commits)",
			round, split[0], rounds, took, all, echoes, texts-16, all-echoes-texts)
		// At most one echo of each commit a member followed to each
		// other member (§11.6): here two competing commits, four
		// honest members, three others each.
		if echoes > 2*4*3 {
			t.Errorf("round %d: %d echoes, more than the bound of %d", round, echoes, 2*4*3)
		}
		mu.Unlock()
	}
	for _, c := range honest {
		for _, s := range sent {
			if bytes.HasPrefix([]byte(s), []byte(c.Handle()+": ")) {
				continue
			}
			if n := shown[c.Handle()][s]; n != 1 {
				t.Errorf("%s was shown %q %d times, want once", c.Handle(), s, n)
			}
		}
	}
	// The group works on: what one writes, all read.
	if err := honest[3].Send(ctx, "#g", "after it all"); err != nil {
		t.Fatal(err)
	}
	for _, c := range honest[:3] {
		ev := memberEvents(t, ctx, c, client.AlarmMemberPolicy)
		if got := textsIn(ev); !slices.Contains(got, "dave: after it all") {
			t.Errorf("%s read %v", c.Handle(), got)
		}
	}
}

// newCountedMembers is newMembers with count told of every envelope each
// sends (ClientOptions.SentEnvelope), by its sender's handle.
func newCountedMembers(t *testing.T, h *hostile.Server, count func(from string, e client.SentEnvelope), handles ...string) []*client.Client {
	var u []*client.Client
	for _, hd := range handles {
		o := h.ClientOptions(t)
		o.SentEnvelope = func(e client.SentEnvelope) { count(hd, e) }
		u = append(u, h.NewUserWith(t, hd, hd, o))
	}
	ctx := memberCtx(t)
	for _, c := range u {
		for _, hd := range handles {
			if hd != c.Handle() {
				addContacts(t, ctx, hd, c)
			}
		}
	}
	return u
}

// TestHostileMemberEchoStorm: the commit echo (docs/protocol.md §11.6)
// must not let a member make others send without bound. Eve keeps a
// branch of her own: from her state of epoch e she makes an update
// commit nobody else applies (bob's commit, which ranks first, is the
// group's), and from it sends alice, 10 times, a message of alice's
// current epoch that cannot decrypt there, then 10 times an echo of her
// losing commit. Each of these asks alice to echo bob's commit to eve;
// she does so once: one envelope, counted in the server's record of
// what alice's connections sent, and alice stays with bob and carol.
func TestHostileMemberEchoStorm(t *testing.T) {
	const storm = 10
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	var mu sync.Mutex
	echoes := map[string]int{}
	u := newCountedMembers(t, h, func(from string, e client.SentEnvelope) {
		if e.Echo {
			mu.Lock()
			echoes[from+" to "+e.To]++
			mu.Unlock()
		}
	}, "alice", "bob", "carol", "eve")
	ctx := memberCtx(t)
	for _, c := range u {
		defer c.StartRefills(ctx)()
	}
	alice, bob, carol, eve := u[0], u[1], u[2], u[3]
	groupG(t, ctx, alice, bob, carol, eve)

	// Eve keeps her state of epoch e, at an epoch where bob's commit
	// ranks before any of hers (the keyed part of the rank, §11.6).
	var snapshot []byte
	for i := 0; ; i++ {
		bobFirst := false
		err := eve.SendMLS(ctx, "#g", nil, func(g *mls.Group) ([]byte, error) {
			k, err := g.ExportSecret("qpc commit order", nil, 32)
			if err != nil {
				return nil, err
			}
			mac := func(leaf uint32) []byte {
				m := hmac.New(sha256.New, k)
				m.Write(binary.BigEndian.AppendUint32(nil, leaf))
				return m.Sum(nil)
			}
			bobFirst = bytes.Compare(mac(leafOf(t, g, "bob")), mac(g.LeafIndex())) < 0
			if snapshot, err = g.Marshal(); err != nil {
				return nil, err
			}
			return nil, errProbe
		})
		if !errors.Is(err, errProbe) {
			t.Fatal(err)
		}
		if bobFirst {
			break
		}
		if i == 12 {
			t.Fatal("bob's rank never came before eve's")
		}
		if err := carol.Update(ctx, "#g"); err != nil {
			t.Fatal(err)
		}
		settle(t, ctx, alice, bob, eve, carol)
	}
	if err := bob.Update(ctx, "#g"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, carol, eve)
	sameEpoch(t, ctx, "#g", alice, bob, carol, eve)

	// Eve's own branch: her update from epoch e, applied by nobody else.
	branch, err := mls.UnmarshalGroup(snapshot, &mls.Config{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := branch.Update()
	if err != nil {
		t.Fatal(err)
	}
	mark := len(h.Events())
	for i := range storm {
		err := eve.SendMLS(ctx, "#g", []string{"alice"}, func(*mls.Group) ([]byte, error) {
			return branch.Encrypt([]byte(fmt.Sprintf("undecryptable %d", i)))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for range storm {
		if err := eve.SendSealed(ctx, "#g", []string{"alice"}, sealed.ContentCommitEcho, res.Commit); err != nil {
			t.Fatal(err)
		}
	}
	// Alice reads all of it (and what stays deferred again at each sync).
	for range 3 {
		memberEvents(t, ctx, alice)
	}
	var sends []wire.MessageID
	for _, e := range h.Events()[mark:] {
		if s, ok := e.Message.(*wire.Send); ok && e.FromClient && e.Tag == "alice" && !slices.Contains(sends, s.MessageID) {
			sends = append(sends, s.MessageID)
		}
	}
	mu.Lock()
	t.Logf("eve sent alice %d undecryptable messages and %d echoes; alice sent %d envelopes (echoes: %v)", storm, storm, len(sends), echoes)
	if len(sends) != 1 || echoes["alice to eve"] != 1 || echoes["alice to bob"]+echoes["alice to carol"] != 0 {
		t.Errorf("alice sent %d envelopes (echoes %v), want one echo of bob's commit to eve", len(sends), echoes)
	}
	mu.Unlock()
	settle(t, ctx, alice, bob, carol)
	sameEpoch(t, ctx, "#g", alice, bob, carol)
	if err := alice.Send(ctx, "#g", "still together"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, carol} {
		if got := textsIn(memberEvents(t, ctx, c)); !slices.Contains(got, "alice: still together") {
			t.Errorf("%s read %v", c.Handle(), got)
		}
	}
}
