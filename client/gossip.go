package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/quicprochat/qpc/kt"
)

// Checkpoint gossip (docs/key-transparency.md): every message carries,
// inside its encryption, the newest KT checkpoint its sender verified.
// The receiver checks it against its own view: the same size must have
// the same root, and a different size must be provably consistent with
// ours through a proof from the log. A server that shows two users two
// different logs is caught as soon as they talk, and the two signed
// checkpoints are the evidence.

// gossip compares a checkpoint a member gossiped with ours, raising a
// split-view alarm with the evidence when they cannot both be honest.
// Transient failures are ignored: the next message carries the checkpoint
// again.
func (c *Client) gossip(ctx context.Context, from string, raw []byte) {
	if len(raw) == 0 {
		return
	}
	if err := c.compareGossip(ctx, from, raw); errors.Is(err, errLater) {
		c.keepGossip(from, raw)
	}
}

// errLater: the checkpoint cannot be compared yet (our server shows a
// smaller log than the contact saw); it is kept and compared at each Sync
// until it can be.
var errLater = errors.New("compared later")

// maxPendingGossip bounds the checkpoints kept for a later comparison.
const maxPendingGossip = 8

func (c *Client) keepGossip(from string, raw []byte) {
	for _, g := range c.prof.PendingGossip {
		if string(g.Checkpoint) == string(raw) {
			return
		}
	}
	c.prof.PendingGossip = append(c.prof.PendingGossip, pendingGossip{From: from, Checkpoint: raw})
	if n := len(c.prof.PendingGossip); n > maxPendingGossip {
		c.prof.PendingGossip = c.prof.PendingGossip[n-maxPendingGossip:]
	}
}

// recheckGossip compares the kept checkpoints again.
func (c *Client) recheckGossip(ctx context.Context) {
	kept := c.prof.PendingGossip[:0:0]
	for _, g := range c.prof.PendingGossip {
		if errors.Is(c.compareGossip(ctx, g.From, g.Checkpoint), errLater) {
			kept = append(kept, g)
		}
	}
	c.prof.PendingGossip = kept
}

// pendingGossip is a checkpoint a contact gossiped that is not compared yet.
type pendingGossip struct {
	From       string
	Checkpoint []byte
}

// compareGossip compares and raises the alarm; it returns errLater when
// the comparison must wait.
func (c *Client) compareGossip(ctx context.Context, from string, raw []byte) error {
	err := c.compareCheckpoint(ctx, raw)
	var sv *kt.SplitViewError
	switch {
	case errors.As(err, &sv):
		c.raise(Alarm{
			Kind:     AlarmSplitView,
			Detail:   fmt.Sprintf("%s saw a key-transparency checkpoint inconsistent with the one this server showed you: the server is showing different users different directories", from),
			Evidence: [][]byte{sv.Seen, sv.Shown},
		})
	case errors.Is(err, kt.ErrInconsistent):
		c.raise(Alarm{Kind: AlarmKT, Detail: "the server's log is inconsistent with what it showed before: " + err.Error()})
	case errors.Is(err, errLater):
		return err
	case err != nil:
		c.log.Debug("checkpoint gossip not compared", "err", err)
	}
	return nil
}

func (c *Client) compareCheckpoint(ctx context.Context, raw []byte) error {
	conn, err := c.conn(ctx, connKT)
	if err != nil {
		return err
	}
	if c.v.Latest() == nil {
		if _, err := conn.KTCheckpoint(ctx, c.v); err != nil {
			return err
		}
	}
	for range 3 {
		mine := c.v.Latest()
		other, err := c.openCheckpoint(raw)
		if err != nil {
			return err
		}
		if other.Size == mine.Size {
			return c.v.CompareCheckpoint(raw, nil)
		}
		if other.Size < mine.Size {
			p, err := conn.KTConsistencyProof(ctx, other.Size)
			if err != nil {
				return err
			}
			served, err := c.openCheckpoint(p.Checkpoint)
			if err != nil {
				return err
			}
			if served.Size == mine.Size {
				return c.v.CompareCheckpoint(raw, p.Hashes)
			}
		}
		// Ours is behind the peer's, or the log grew meanwhile: catch up
		// (consistently with ours) and compare again.
		if _, err := conn.KTCheckpoint(ctx, c.v); err != nil {
			return err
		}
		if c.v.Latest().Size < other.Size {
			return errLater // the server shows a smaller log than the contact saw
		}
	}
	return errLater // the log keeps growing
}

func (c *Client) openCheckpoint(raw []byte) (*kt.Checkpoint, error) {
	return kt.OpenCheckpoint(raw, c.v.NoteVerifier())
}
