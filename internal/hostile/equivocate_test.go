package hostile_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/mls"
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
// honest member. Played twice: the better commit to one member (three
// must switch), then to three (one must switch).
//
// Before the commit echo (§11.6) the group stayed split: each side
// deferred the other's texts as of a branch it might switch to, and
// nothing ever made it switch.
func TestHostileMemberEquivocates(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "carol", "dave", "eve")
	honest, eve := u[:4], u[4]
	ctx := memberCtx(t)
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
		start := time.Now()
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
		t.Logf("round %d (better commit to %v): converged after %d sync rounds, %v", round, split[0], rounds, time.Since(start).Round(time.Millisecond))
		// Two more rounds: whatever is still on its way (texts sent
		// again after a switch) must not be shown twice.
		for range 2 {
			for _, c := range honest {
				syncOne(c)
			}
		}
		sameEpoch(t, ctx, "#g", honest...)
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
