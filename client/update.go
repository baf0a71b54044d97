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
// path and nothing else) after it has received a message and, since its
// last commit in the conversation, received UpdateAfter messages or
// UpdateEvery has passed. A thief holding a copy of the member's state
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

// updateDue counts a message received in r and reports whether our
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

// commitUpdate commits an update of our leaf in r (g is its current
// state) and returns the effect that queues it.
func (c *Client) commitUpdate(r *convRecord, g *mls.Group) (func(tx *state.Tx), error) {
	res, to, err := c.commitIn(r, g, &commitIntent{Kind: intentUpdate}, nil)
	if err != nil {
		return nil, err
	}
	return func(tx *state.Tx) {
		if err := c.fanOut(tx, r, to, sealed.ContentMLS, res.Commit); err != nil {
			c.log.Warn("could not queue an update", "err", err)
		}
	}, nil
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
