package hostile_test

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/mls"
)

// TestHostileMemberUndoesRemovalFromEarlierEpoch: eve, a member of
// alice's group, makes two update commits from her one state of epoch e
// and sends only the one of higher SHA-256 (the one the fork choice ranks
// last between two commits of hers, docs/protocol.md §11.6); everyone
// follows it. Alice, the admin, then removes eve, and bob writes. Eve,
// who has not read her removal, now sends the better commit she kept for
// epoch e, and a text in the epoch it makes. The removal is on a later
// epoch than the one she competes on, so no rank class protects it.
// A removed member must get nothing: bob must not show a text of eve's
// written after her removal, and the group must end without eve.
func TestHostileMemberUndoesRemovalFromEarlierEpoch(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "eve")
	alice, bob, eve := u[0], u[1], u[2]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, eve)

	var better []byte
	var betterState []byte
	err := eve.SendMLS(ctx, "#g", []string{"alice", "bob"}, func(g *mls.Group) ([]byte, error) {
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
		if bytes.Compare(h0[:], h1[:]) < 0 {
			commits[0], commits[1] = commits[1], commits[0]
			states[0], states[1] = states[1], states[0]
		}
		// Sent: commits[0], the worse; kept: commits[1].
		better = commits[1]
		raw, err := states[1].Marshal()
		if err != nil {
			return nil, err
		}
		betterState = raw
		*g = *states[0]
		return commits[0], nil
	})
	if err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob)

	if err := alice.RemoveMember(ctx, "#g", "eve"); err != nil {
		t.Fatal(err)
	}
	memberEvents(t, ctx, bob)
	if got := membersOf(t, ctx, bob, "g"); slices.Contains(got, "eve") {
		t.Fatalf("bob still counts eve a member: %v", got)
	}

	// Eve, who did not read her removal, sends the commit she kept for
	// epoch e, then a text in the epoch it makes.
	err = eve.SendMLS(ctx, "#g", []string{"alice", "bob"}, func(g *mls.Group) ([]byte, error) {
		st, err := mls.UnmarshalGroup(betterState, &mls.Config{})
		if err != nil {
			return nil, err
		}
		*g = *st
		return better, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = eve.SendMLS(ctx, "#g", []string{"alice", "bob"}, func(g *mls.Group) ([]byte, error) {
		m := &content.Message{Kind: content.KindText, Seq: 100, Text: "back after my removal"}
		plain, err := m.Marshal()
		if err != nil {
			return nil, err
		}
		return g.Encrypt(plain)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Bob reads first (alice's client may be offline for a while).
	got := textsIn(memberEvents(t, ctx, bob, client.AlarmMemberPolicy))
	if slices.Contains(got, "eve: back after my removal") {
		t.Errorf("bob showed a text eve wrote after her removal: %q", got)
	}
	settle(t, ctx, alice, bob)
	for _, c := range []*client.Client{alice, bob} {
		if m := membersOf(t, ctx, c, "g"); slices.Contains(m, "eve") {
			t.Errorf("%s counts eve a member again: %v", c.Handle(), m)
		}
	}
}
