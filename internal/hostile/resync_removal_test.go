package hostile_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/mls"
)

// errProbe stops a SendMLS craft that only looks at the state.
var errProbe = errors.New("probe")

// resyncBeatsAlice reports whether, in eve's state of #g, the fork
// choice's keyed part of the rank (docs/protocol.md §11.6) of eve's leaf
// is below alice's: a commit of both classes equal, eve's would win.
func resyncBeatsAlice(t *testing.T, ctx context.Context, eve *client.Client) bool {
	t.Helper()
	var wins bool
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
		wins = bytes.Compare(mac(g.LeafIndex()), mac(leafOf(t, g, "alice"))) < 0
		return nil, errProbe
	})
	if !errors.Is(err, errProbe) {
		t.Fatal(err)
	}
	return wins
}

// TestHostileMemberResyncOutracesRemoval: eve, at an epoch where her
// leaf's keyed rank (docs/protocol.md §11.6) is below alice's, sends a
// resync of her own leaf (an external commit, §11.8), and alice, who has
// not read it, removes eve on the same epoch. Bob and carol read the
// resync first. A resync ranked with removals, so alice's removal lost
// for them: eve stayed a member in their view, while alice, who refuses a
// resync of one she removed, stayed on her branch: the group split for
// good and eve outraced her removal. Now a resync ranks after every
// removal: bob and carol switch to alice's removal, and all three end in
// one epoch without eve.
func TestHostileMemberResyncOutracesRemoval(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newRejoiningMembers(t, h, "alice", "bob", "carol", "eve")
	alice, bob, carol, eve := u[0], u[1], u[2], u[3]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol, eve)
	for i := 0; !resyncBeatsAlice(t, ctx, eve); i++ {
		if i == 12 {
			t.Fatal("eve's rank never beat alice's")
		}
		if err := bob.Update(ctx, "#g"); err != nil {
			t.Fatal(err)
		}
		settle(t, ctx, alice, carol, eve)
	}

	id := eve.MLSIdentity()
	err := eve.SendMLS(ctx, "#g", nil, func(g *mls.Group) ([]byte, error) {
		gi, err := g.GroupInfo()
		if err != nil {
			return nil, err
		}
		_, commit, err := mls.JoinExternalWith(gi, id, nil, &mls.ExternalJoinOptions{Resync: true})
		return commit, err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Alice, who has not read it, removes eve on the same epoch.
	if err := alice.RemoveMember(ctx, "#g", "eve"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, carol} {
		memberEvents(t, ctx, c, client.AlarmDropped, client.AlarmMemberPolicy)
		if got := handlesOf(groupOf(t, ctx, c, "#g")); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
			t.Errorf("%s's members after eve's resync: %v", c.Handle(), got)
		}
	}
	settle(t, ctx, alice, bob, carol)
	sameEpoch(t, ctx, "#g", alice, bob, carol)
	for _, c := range []*client.Client{alice, bob, carol} {
		if got := handlesOf(groupOf(t, ctx, c, "#g")); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
			t.Errorf("%s's members: %v", c.Handle(), got)
		}
	}
}
