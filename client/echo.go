package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/sealed"
)

// Commit echoes (docs/protocol.md §11.6, docs/adr/0027-commit-echo.md).
// The fork choice (commitorder.go) orders two commits of one epoch only
// when a member reads both. A member that sends different commits for
// one epoch to different members (equivocation; an update is open to
// every member) splits the group: each side applies the commit it got and
// nobody sees the other, so the fork choice never runs. The split shows
// itself: a message of an epoch we hold (the current one or a kept one)
// that does not decrypt there, from a member, can only be of another
// branch of commits (the epoch's keys depend on every commit before it).
// Then:
//
//   - We echo to its sender the commit we followed into that epoch: the
//     committer's MLSMessage as we read it, sealed by us, content type
//     ContentCommitEcho. The message itself stays deferred: it decrypts
//     once we are on its branch.
//   - A member reading an echo treats the commit as one of its own
//     mailbox's, checked against the policy as the committer's; it may
//     come from any member, so the sealed sender must only be a member.
//     If it ranks below the commit the member followed out of its epoch,
//     the member switches to it (messages sent in the dropped epochs are
//     sent again; receivers drop the copies they read). If it ranks
//     above, the member echoes its own back to the echoer, who then
//     switches. Either way both end on the better commit.
//   - Bound: each commit we followed is echoed at most once to each other
//     member, and only for the kept epochs (maxChain, 7 days). An echo
//     never causes an echo of the same commit, and one that is of no use
//     here (an epoch we do not hold, another branch's) is dropped without
//     an alarm.

// errEchoUseless: an echoed commit we cannot use (of an epoch we do not
// hold, or of another branch): dropped without an alarm.
var errEchoUseless = errors.New("an echoed commit of no use here")

// checkEcho refuses an echo that is not a member's echo of a commit.
func checkEcho(r *convRecord, msg *mls.MLSMessage, from string) error {
	if !r.Active || r.Left {
		return fmt.Errorf("an echoed commit for a conversation we are not in")
	}
	if r.Members[from] == nil {
		return fmt.Errorf("an echoed commit from %s, not a member", from)
	}
	if pm := msg.PrivateMessage; pm != nil && pm.ContentType == mls.ContentTypeCommit {
		return nil
	}
	if pub := msg.PublicMessage; pub != nil && pub.Content.ContentType == mls.ContentTypeCommit && pub.Content.Sender.Type == mls.SenderTypeNewMemberCommit {
		return nil
	}
	return fmt.Errorf("an echo from %s that is not a commit", from)
}

// echoFork is called when a member's message of epoch, one we hold,
// did not decrypt with its state: the sender is on another branch of
// commits. We echo to it the commit we followed into epoch, once.
func (c *Client) echoFork(ctx context.Context, r *convRecord, epoch uint64, op *sealed.Opened) {
	if epoch == 0 {
		return
	}
	i := r.linkAt(epoch-1, c.opts.Now())
	to := op.Sender.Handle
	if i < 0 || !c.mayEcho(r, r.Chain[i], to) {
		return
	}
	if _, err := c.senderContact(ctx, op); err != nil {
		return // not the member it claims to be
	}
	err := c.store.Update(func(tx *state.Tx) error {
		if err := c.echoLink(tx, r, r.Chain[i], to); err != nil {
			return err
		}
		return putConv(tx, r)
	})
	if err != nil {
		c.log.Warn("could not echo a commit", "conv", r.display(), "err", err)
		return
	}
	c.log.Debug("another branch of commits: echoed ours", "conv", r.display(), "epoch", epoch-1, "to", to)
}

// echoBack is what an echo of a commit that ranks above ours on the epoch
// of link i does: we echo ours to the echoer, once.
func (c *Client) echoBack(r *convRecord, i int, to string) func(*state.Tx) error {
	l := r.Chain[i]
	if !c.mayEcho(r, l, to) {
		return func(*state.Tx) error { return nil }
	}
	return func(tx *state.Tx) error {
		if err := c.echoLink(tx, r, l, to); err != nil {
			return err
		}
		return putConv(tx, r)
	}
}

// mayEcho reports whether l's commit may be echoed to member to: we have
// it, to's mailbox is known, and it was not echoed to to before.
func (c *Client) mayEcho(r *convRecord, l *epochLink, to string) bool {
	m := r.Members[to]
	return l.HasOut && m != nil && m.Sealing != nil && to != c.prof.Handle && !slices.Contains(l.EchoedTo, to)
}

// echoLink queues the echo of l's commit to member to and records it.
func (c *Client) echoLink(tx *state.Tx, r *convRecord, l *epochLink, to string) error {
	out, err := r.linkOut(tx, l)
	if err != nil {
		return err
	}
	if out == nil {
		return nil // kept no longer
	}
	if err := c.fanOut(tx, r, []string{to}, sealed.ContentCommitEcho, out); err != nil {
		return err
	}
	l.EchoedTo = append(l.EchoedTo, to)
	return nil
}
