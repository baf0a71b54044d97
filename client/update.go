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

// Defaults of the update schedule.
const (
	DefaultUpdateAfter = 50
	DefaultUpdateEvery = 24 * time.Hour
)

func (c *Client) updateAfter() int {
	switch {
	case c.opts.UpdateAfter < 0:
		return 0
	case c.opts.UpdateAfter == 0:
		return DefaultUpdateAfter
	}
	return c.opts.UpdateAfter
}

func (c *Client) updateEvery() time.Duration {
	switch {
	case c.opts.UpdateEvery < 0:
		return 0
	case c.opts.UpdateEvery == 0:
		return DefaultUpdateEvery
	}
	return c.opts.UpdateEvery
}

// updateDue counts a text received in r and reports whether our
// scheduled update is due.
func (c *Client) updateDue(r *convRecord) bool {
	r.RecvSinceUpdate++
	if n := c.updateAfter(); n > 0 && r.RecvSinceUpdate >= n {
		return true
	}
	t := c.updateEvery()
	return t > 0 && !r.LastUpdate.IsZero() && c.opts.Now().Sub(r.LastUpdate) >= t ||
		t > 0 && r.LastUpdate.IsZero() && c.opts.Now().Sub(r.Created) >= t
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
			return putJSON(tx, bucketConvs, r.ID, r)
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
		return putJSON(tx, bucketConvs, r.ID, r)
	})
	if err != nil {
		return err
	}
	return c.flush(ctx)
}
