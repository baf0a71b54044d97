package client

import (
	"context"
	"time"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/sealed"
)

// Scheduled updates (docs/protocol.md §11.7). Every member, in groups and
// direct chats alike, commits an update of its own leaf (a commit with a
// path and nothing else) after it has received a text and, since its
// last commit in the conversation, received UpdateAfter texts or
// UpdateEvery has passed (receipts, cover dummies and mailbox
// announcements are not counted). A thief holding a copy of the member's state
// follows the conversation only until then: the commit's path replaces
// every key of the member's that the copy holds.
//
// The text bound is staggered per member (updateStagger): a member
// commits after N + o texts, o = ⌊p·N/n⌋ for the member at position p of
// the n members in leaf order. Without it a burst of N texts made every
// receiver's update due at the same text: up to n − 1 commits on one
// epoch, of which all but one lost the fork choice and were made again,
// one epoch after another (TestHealUpdateBurstStaggered). The healing
// bound in texts is so N + o < 2N.

// Defaults of the update schedule.
const (
	DefaultUpdateAfter = 50
	DefaultUpdateEvery = 24 * time.Hour
)

func (c *Client) updateAfter() int { return optionOr(c.opts.UpdateAfter, DefaultUpdateAfter) }

func (c *Client) updateEvery() time.Duration {
	return optionOr(c.opts.UpdateEvery, DefaultUpdateEvery)
}

// optionOr reads a Options bound: 0 means def, below 0 means off
// (0 returned).
func optionOr[T int | time.Duration](v, def T) T {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return def
	}
	return v
}

// updateDue counts a text received in r and reports whether our
// scheduled update is due. A text written in an epoch before our current
// one (past: its sender has not processed our last commit yet) counts but
// never makes it due: a peer who only sends and does not read would
// otherwise fall behind by one epoch per update, and past the states we
// keep (maxChain) its texts could no longer be read. The update is then
// made at the first text of the current epoch, once the last one has
// reached the peer; the keys the thief held were already replaced by it.
//
// g is the conversation's current group, which places us in the stagger.
func (c *Client) updateDue(r *convRecord, g *mls.Group, past bool) bool {
	r.RecvSinceUpdate++
	if past {
		return false
	}
	if n := c.updateAfter(); n > 0 && r.RecvSinceUpdate >= n+updateStagger(g, n) {
		return true
	}
	t := c.updateEvery()
	return t > 0 && !r.LastUpdate.IsZero() && c.opts.Now().Sub(r.LastUpdate) >= t ||
		t > 0 && r.LastUpdate.IsZero() && c.opts.Now().Sub(r.Created) >= t
}

// updateStagger is our offset in the text bound of the schedule, of N
// (UpdateAfter) texts: ⌊p·N/n⌋, p the position of our leaf among the n
// members of g in leaf order (0 for the group's creator). The members'
// thresholds are so spread evenly over [N, 2N): when they all receive
// the same texts, each falls due at a text of its own, and reads the
// commit of the one before it (moving to its epoch) before its own turn,
// so a burst makes about one update commit per epoch instead of n − 1
// competing ones. The position, not a random draw, keeps two members of
// a group of at most N from sharing a threshold. Texts read in one fetch,
// or written by a member that reads nothing in between (its texts are
// then of a past epoch, which makes no update due), can still make
// several due at once; the fork choice orders them (commitorder.go).
func updateStagger(g *mls.Group, n int) int {
	if g == nil {
		return 0
	}
	me, p, members := g.LeafIndex(), 0, 0
	for _, m := range g.Members() {
		members++
		if m.Leaf < me {
			p++
		}
	}
	if members < 2 {
		return 0
	}
	return p * n / members
}

// commitDueUpdates commits the scheduled updates that processing found
// due (convRecord.UpdateDue), each with its conversation's record in one
// transaction.
func (c *Client) commitDueUpdates(ctx context.Context) error {
	convs, err := c.allConvs()
	if err != nil {
		return err
	}
	for _, r := range convs {
		if !r.UpdateDue {
			continue
		}
		r.UpdateDue = false
		var res *mls.CommitResult
		var to []string
		if r.Active && !r.Left {
			g, err := c.loadGroup(ctx, r)
			if err != nil {
				return err
			}
			if res, to, err = c.commitIn(r, g, &commitIntent{Kind: intentUpdate}, nil); err != nil {
				c.log.Debug("scheduled update", "err", err)
				res = nil
			}
		}
		err := c.store.Update(func(tx *state.Tx) error {
			if res != nil {
				if err := c.fanOut(tx, r, to, sealed.ContentMLS, res.Commit); err != nil {
					return err
				}
			}
			return putConv(tx, r)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Update commits an update of our leaf in a conversation now, outside the
// schedule (a user who fears their device was copied, or a test).
func (c *Client) Update(ctx context.Context, target string) error {
	c.op.Lock()
	defer c.op.Unlock()
	r, err := c.resolve(target)
	if err != nil {
		return err
	}
	if !r.Active {
		return ErrInactive
	}
	g, err := c.loadGroup(ctx, r)
	if err != nil {
		return err
	}
	res, to, err := c.commitIn(r, g, &commitIntent{Kind: intentUpdate}, nil)
	if err != nil {
		return err
	}
	err = c.store.Update(func(tx *state.Tx) error {
		if err := c.fanOut(tx, r, to, sealed.ContentMLS, res.Commit); err != nil {
			return err
		}
		return putConv(tx, r)
	})
	if err != nil {
		return err
	}
	return c.flush(ctx)
}
