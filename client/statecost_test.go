package client

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/mls"
)

// TestConvRecordStateCost measures what the past epochs kept for the fork
// choice (maxChain of them, commitorder.go) cost in the stored
// conversation record, which is written again with every message
// processed or sent, and beside it (convstore.go), where each is written
// once: for groups of 2, 16 and 128 members, with the group states and
// update commits the real mls package makes (each past epoch left by an
// update commit, as the update schedule makes them) and a mailbox and
// member record per member. It asserts that the states and commits stay
// out of the record (ADR 0032): with maxChain epochs kept, the record
// grows by less than one group state; the figures are in its log.
func TestConvRecordStateCost(t *testing.T) {
	c := &Client{opts: Options{Now: time.Now}}
	for _, n := range []int{2, 16, 128} {
		id, err := mls.NewBasicIdentity(DefaultSuite, []byte("member-0000"))
		if err != nil {
			t.Fatal(err)
		}
		g, err := mls.Create(id, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var kps []*mls.KeyPackage
		for i := 1; i < n; i++ {
			mid, err := mls.NewBasicIdentity(DefaultSuite, fmt.Appendf(nil, "member-%04d", i))
			if err != nil {
				t.Fatal(err)
			}
			kp, err := mls.NewKeyPackage(mid, nil)
			if err != nil {
				t.Fatal(err)
			}
			kps = append(kps, &kp.KeyPackage)
		}
		if _, err := g.Add(kps...); err != nil {
			t.Fatal(err)
		}
		r := &convRecord{ID: g.GroupID(), Kind: content.ConvGroup, Name: "g", Creator: "member-0000", Members: map[string]*memberRecord{}, Active: true, Created: time.Now()}
		r.Mailbox = &mailboxRecord{Sealing: make([]byte, 32)}
		for i := 1; i < n; i++ {
			m := &memberRecord{Sealing: make([]byte, 32), LastSeq: 1000, Seen: true, LeafChanged: time.Now()}
			if _, err := rand.Read(m.SendID[:]); err != nil {
				t.Fatal(err)
			}
			r.Members[fmt.Sprintf("member-%04d", i)] = m
		}
		r.Admins = []string{"member-0000"}
		size := func() int {
			if err := c.saveGroup(r, g); err != nil {
				t.Fatal(err)
			}
			raw, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			return len(raw)
		}
		none := size()
		for range maxChain {
			pre, epoch := r.Group, g.Epoch()
			key, err := orderKey(g)
			if err != nil {
				t.Fatal(err)
			}
			res, err := g.Commit(&mls.CommitOptions{SkipPending: true})
			if err != nil {
				t.Fatal(err)
			}
			c.pushLink(r, epoch, pre, commitRank(key, g.LeafIndex(), res.Commit, false), &commitIntent{Kind: intentUpdate}, res.Commit)
		}
		if len(r.Chain) != maxChain {
			t.Fatalf("%d links kept, want %d", len(r.Chain), maxChain)
		}
		kept := size()
		state := len(r.Group)
		apart := 0
		for _, op := range r.ops {
			apart += len(op.val)
		}
		t.Logf("n = %3d: record %7d bytes with 0 past epochs, %7d with %d (×%.2f); %7d bytes of states and commits kept apart; one group state %6d bytes",
			n, none, kept, maxChain, float64(kept)/float64(none), apart, state)
		base, ratchets, err := mls.SplitState(r.Group)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("n = %3d: the group state apart (ADR 0044): base %6d bytes (per epoch), ratchets %5d bytes (per text)", n, len(base), len(ratchets))
		if kept >= none+state {
			t.Fatalf("n = %d: the record grew from %d to %d bytes with %d past epochs, by more than one group state (%d): the kept states or commits are in it", n, none, kept, maxChain, state)
		}
	}
}
