package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/kt"
)

// Checkpoint gossip (docs/key-transparency.md): every message carries,
// inside its encryption, the newest KT checkpoint its sender verified.
// The receiver checks it against its own view: the same size must have
// the same root, and a different size must be provably consistent with
// ours through a proof from the log. A server that shows two users two
// different logs is caught as soon as they talk, and the two signed
// checkpoints are the evidence.
//
// The server answers the comparison, so it must not be able to put it off
// for ever (issue 17). A checkpoint that cannot be compared yet is kept,
// persisted, and compared again at every Sync; failures the server causes
// (a refused or unusable consistency proof, a log it keeps smaller than
// the one the contact saw) are counted, and past the bound of status.go
// (CheckAttempts over CheckGrace) the checkpoint becomes an alarm with
// the evidence. Nothing is dropped without an answer or an alarm.

// errLater: the checkpoint cannot be compared yet (our server shows a
// smaller log than the contact saw); it is kept and compared at each Sync
// until it can be, or until the bound makes it an alarm.
var errLater = errors.New("the server shows a smaller log than the contact saw")

// maxPendingGossip bounds the checkpoints kept for a later comparison.
// One is kept per contact (see keepGossip), so the bound is reached only
// when that many contacts saw a log this server will not show us: at the
// bound a new checkpoint is an alarm at once, with the checkpoint as its
// evidence, never a silent drop.
const maxPendingGossip = 256

// pendingGossip is a checkpoint a contact gossiped that is not compared
// yet, with the attempts the server made fail since Since.
type pendingGossip struct {
	From       string
	Checkpoint []byte
	Since      time.Time `json:",omitzero"` // when a checkpoint of this contact first waited
	Attempts   int       `json:",omitempty"`
	LastError  string    `json:",omitempty"`
}

// gossip compares a checkpoint a member gossiped with ours, raising an
// alarm with the evidence when they cannot both be honest, and keeps it
// for a later comparison when that cannot be done now.
func (c *Client) gossip(ctx context.Context, from string, raw []byte) {
	if len(raw) == 0 {
		return
	}
	cp, err := c.openCheckpoint(raw)
	if err != nil {
		// Not signed by the pinned log key: nothing the server said, and
		// no evidence of anything.
		c.log.Debug("gossiped checkpoint does not open", "err", err)
		return
	}
	if c.splitAmongPending(from, cp) {
		return
	}
	start := time.Now()
	conn, err := c.compareGossip(ctx, from, raw)
	if err == nil {
		c.concluded(from, cp.Size)
		return
	}
	c.keepGossip(ctx, conn, pendingGossip{From: from, Checkpoint: raw}, cp, err, start)
	if err := c.saveProfile(); err != nil {
		c.log.Warn("could not keep a gossiped checkpoint", "err", err)
	}
}

// concluded forgets a kept checkpoint of from no larger than size, once
// from's checkpoint of that size was compared: from's own verifier proved
// the kept one a prefix of it.
func (c *Client) concluded(from string, size uint64) {
	for i, g := range c.prof.PendingGossip {
		if g.From != from {
			continue
		}
		if cp, err := c.openCheckpoint(g.Checkpoint); err == nil && cp.Size <= size {
			c.prof.PendingGossip = append(c.prof.PendingGossip[:i], c.prof.PendingGossip[i+1:]...)
			if err := c.saveProfile(); err != nil {
				c.log.Warn("could not save the kept checkpoints", "err", err)
			}
		}
		return
	}
}

// splitAmongPending raises a split-view alarm when cp has the size of a
// kept checkpoint and another root: the log key signed both, so the
// server showed two logs, whoever relayed them.
func (c *Client) splitAmongPending(from string, cp *kt.Checkpoint) bool {
	for _, g := range c.prof.PendingGossip {
		other, err := c.openCheckpoint(g.Checkpoint)
		if err != nil || other.Size != cp.Size || other.Root == cp.Root {
			continue
		}
		c.raise(Alarm{
			Kind: AlarmSplitView,
			Detail: fmt.Sprintf("%s and %s saw two key-transparency checkpoints of size %d with different roots: the server is showing different users different directories",
				g.From, from, cp.Size),
			Evidence: [][]byte{g.Checkpoint, cp.Raw},
		})
		return true
	}
	return false
}

// keepGossip keeps g (whose checkpoint is cp; err says why it was not
// compared) for a later comparison, one per contact: a contact's newer
// checkpoint takes the place of its older one, which its own verifier
// proved a prefix of the newer, and inherits its count and start. Past
// the bound, or with no room left, it is an alarm instead. It reports
// whether the server caused err (the attempt counted; the comparison
// started at start, monotonic time: serverCaused).
func (c *Client) keepGossip(ctx context.Context, conn *protocol.Conn, g pendingGossip, cp *kt.Checkpoint, err error, start time.Time) (byServer bool) {
	now := c.opts.Now()
	i := -1
	for j, p := range c.prof.PendingGossip {
		if p.From == g.From {
			i = j
			break
		}
	}
	if i >= 0 {
		prev := c.prof.PendingGossip[i]
		if old, oerr := c.openCheckpoint(prev.Checkpoint); oerr == nil && old.Size > cp.Size {
			g.Checkpoint = prev.Checkpoint // the larger one stands for both
		}
		g.Since, g.Attempts = prev.Since, prev.Attempts
	} else if len(c.prof.PendingGossip) >= maxPendingGossip {
		c.raise(Alarm{
			Kind: AlarmKTUnverified,
			Detail: fmt.Sprintf("%d contacts saw key-transparency checkpoints this server has not proved consistent with yours; %s's (size %d) is one more: the server may be keeping you on a fork (last: %v)",
				len(c.prof.PendingGossip), g.From, cp.Size, err),
			Evidence: c.gossipEvidence(cp.Raw),
		})
		return true
	}
	if g.Since.IsZero() {
		g.Since = now
	}
	g.LastError = err.Error()
	byServer = errors.Is(err, errLater) || c.serverCaused(ctx, healthProbe(conn), err, start)
	if byServer {
		g.Attempts++
	}
	if pastBound(g.Attempts, g.Since, now) {
		c.raiseBehind(g)
		if i >= 0 {
			c.prof.PendingGossip = append(c.prof.PendingGossip[:i], c.prof.PendingGossip[i+1:]...)
		}
		return byServer
	}
	if i >= 0 {
		c.prof.PendingGossip[i] = g
	} else {
		c.prof.PendingGossip = append(c.prof.PendingGossip, g)
	}
	return byServer
}

// raiseBehind is the alarm for a kept checkpoint past the bound.
func (c *Client) raiseBehind(g pendingGossip) {
	size := uint64(0)
	if cp, err := c.openCheckpoint(g.Checkpoint); err == nil {
		size = cp.Size
	}
	c.raise(Alarm{
		Kind: AlarmKTUnverified,
		Detail: fmt.Sprintf("%s saw a key-transparency checkpoint of size %d that this server has not proved consistent with yours since %s (%d attempts; last: %s): it may be keeping you on a fork",
			g.From, size, g.Since.UTC().Format(time.RFC3339), g.Attempts, g.LastError),
		Evidence: c.gossipEvidence(g.Checkpoint),
	})
}

// gossipEvidence is a gossiped checkpoint with ours.
func (c *Client) gossipEvidence(theirs []byte) [][]byte {
	ev := [][]byte{theirs}
	if mine := c.v.Latest(); mine != nil {
		ev = append(ev, mine.Raw)
	}
	return ev
}

// gossipRecheck is how often Follow compares the kept checkpoints again
// (Sync does at every call).
const gossipRecheck = time.Minute

// recheckKeptGossip compares the kept checkpoints again, if any, and
// saves what is left.
func (c *Client) recheckKeptGossip(ctx context.Context) error {
	if len(c.prof.PendingGossip) == 0 {
		return nil
	}
	c.recheckGossip(ctx)
	return c.saveProfile()
}

// recheckGossip compares the kept checkpoints again. It stops at the
// first that fails without the server's doing (no network): the rest
// would fail the same way.
func (c *Client) recheckGossip(ctx context.Context) {
	kept := c.prof.PendingGossip
	c.prof.PendingGossip = nil
	for n, g := range kept {
		cp, err := c.openCheckpoint(g.Checkpoint)
		if err != nil {
			continue // cannot happen: it opened when kept
		}
		start := time.Now()
		conn, err := c.compareGossip(ctx, g.From, g.Checkpoint)
		if err == nil {
			continue
		}
		if !c.keepGossip(ctx, conn, g, cp, err, start) {
			c.prof.PendingGossip = append(c.prof.PendingGossip, kept[n+1:]...)
			return
		}
	}
}

// compareGossip compares and raises the alarm; it returns nil when the
// comparison is done, else why not (errLater: the log we are shown is
// smaller) and the connection it used. Its requests end before the
// caller's deadline (ktContext), so that a server that holds them open is
// told from no network.
func (c *Client) compareGossip(ctx context.Context, from string, raw []byte) (*protocol.Conn, error) {
	kctx, cancel := ktContext(ctx)
	defer cancel()
	conn, err := c.compareCheckpoint(kctx, raw)
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
	case c.raiseUncosigned(err):
	case errors.Is(err, kt.ErrInvalid):
		c.raise(Alarm{Kind: AlarmKT, Detail: fmt.Sprintf("comparing %s's key-transparency checkpoint, the server answered with a proof that does not verify: %v", from, err)})
	case err != nil:
		return conn, err
	}
	return conn, nil
}

func (c *Client) compareCheckpoint(ctx context.Context, raw []byte) (*protocol.Conn, error) {
	conn, err := c.conn(ctx, connKT)
	if err != nil {
		return nil, err
	}
	if c.v.Latest() == nil {
		if _, err := conn.KTCheckpoint(ctx, c.v); err != nil {
			return conn, err
		}
	}
	for range 3 {
		mine := c.v.Latest()
		other, err := c.openCheckpoint(raw)
		if err != nil {
			return conn, err
		}
		if other.Size == mine.Size {
			return conn, c.v.CompareCheckpoint(raw, nil)
		}
		if other.Size < mine.Size {
			p, err := conn.KTConsistencyProof(ctx, other.Size)
			if err != nil {
				return conn, err
			}
			served, err := c.openCheckpoint(p.Checkpoint)
			if err != nil {
				return conn, err
			}
			if served.Size == mine.Size {
				return conn, c.v.CompareCheckpoint(raw, p.Hashes)
			}
		}
		// Ours is behind the peer's, or the log grew meanwhile: catch up
		// (consistently with ours) and compare again.
		if _, err := conn.KTCheckpoint(ctx, c.v); err != nil {
			return conn, err
		}
		if c.v.Latest().Size < other.Size {
			return conn, errLater // the server shows a smaller log than the contact saw
		}
	}
	return conn, errLater // the log keeps growing
}

func (c *Client) openCheckpoint(raw []byte) (*kt.Checkpoint, error) {
	return kt.OpenCheckpoint(raw, c.v.NoteVerifier())
}
