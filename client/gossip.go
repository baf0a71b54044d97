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
	case err != nil:
		c.log.Debug("checkpoint gossip not compared", "err", err)
	}
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
			return fmt.Errorf("the server shows a smaller log than a contact saw; compared later")
		}
	}
	return fmt.Errorf("the log keeps growing; compared later")
}

func (c *Client) openCheckpoint(raw []byte) (*kt.Checkpoint, error) {
	return kt.OpenCheckpoint(raw, c.v.NoteVerifier())
}
