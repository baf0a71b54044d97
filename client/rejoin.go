package client

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/sealed"
)

// Rejoining a conversation whose commits we missed (docs/protocol.md
// §11.8, docs/adr/0016-rejoin-external-commit.md). A member that was
// offline past the server's message lifetime, or whose state was restored
// from a backup, holds a group state of an epoch the others left: the
// commits that led on are gone, and every later message is from an epoch
// it cannot reach. It notices when a member's message from such an epoch
// arrives (or when a commit of its epoch cannot be processed), asks that
// member, in the member's mailbox of this conversation, for a fresh
// GroupInfo, and on the answer joins again by external commit (RFC 9420
// §12.4.3.2) that removes its own old leaf: a resync. The conversation's
// record, history and mailboxes stay; only the MLS state is replaced.
// What was written in the epochs it missed stays unreadable to it (their
// keys were never sent to it); the history says so with a gap.
//
// Members accept an external commit only as such a resync: the joiner is
// the one who sealed the envelope, a member already, whose old leaf the
// commit removes, with the signature key key transparency shows for it. A
// stranger, or a member adding a second leaf for itself, is refused.

// Rejoin bounds.
const (
	// rejoinAskEvery is how often a stuck member asks for a GroupInfo in
	// one conversation.
	rejoinAskEvery = time.Hour
	// rejoinAnswerEvery is how often a member answers one requester in
	// one conversation: each answer is an envelope (a token) and a
	// GroupInfo signature.
	rejoinAnswerEvery = 10 * time.Minute
	// rejoinInfoFor is how long after asking an answer is taken: a
	// GroupInfo nobody asked for is ignored.
	rejoinInfoFor = 7 * 24 * time.Hour
	// DefaultRejoinAfter is how long messages of a later epoch must go
	// on arriving, with no commit of ours applied, before we ask to
	// rejoin (Options.RejoinAfter). A later epoch's message is
	// usually only ahead of its commit (concurrent commits, delivery
	// order, §11.6): asking at once would make a member rejoin while the
	// fork choice was about to bring it along, and two resyncs on one
	// epoch cannot both be applied.
	DefaultRejoinAfter = 10 * time.Minute
)

func (c *Client) rejoinAfter() time.Duration {
	return optionOr(c.opts.RejoinAfter, DefaultRejoinAfter)
}

// askRejoinIfBehind notes that a message of a later epoch than our
// epoch arrived in r, and asks to rejoin (askRejoin) once such messages
// have gone on arriving for rejoinAfter while we stayed in that epoch.
func (c *Client) askRejoinIfBehind(r *convRecord, epoch uint64, from string) {
	now := c.opts.Now()
	wait := c.rejoinAfter()
	ask := false
	err := c.store.Update(func(tx *state.Tx) error {
		x := c.groupExtra(tx, r.ID)
		if x.Behind.IsZero() || x.BehindEpoch != epoch {
			x.Behind, x.BehindEpoch = now, epoch
		}
		ask = now.Sub(x.Behind) >= wait
		return c.putGroupExtra(tx, r.ID, x)
	})
	if err != nil {
		c.log.Warn("could not note a later epoch", "conv", r.display(), "err", err)
		return
	}
	if ask {
		c.askRejoin(r, from)
	}
}

// askRejoin asks a member of r for a fresh GroupInfo, at most once per
// rejoinAskEvery: we hold g, of an epoch the group has left. from is the
// member whose message showed it (it is in a later epoch); another member
// whose mailbox we know is asked if we do not know its mailbox.
func (c *Client) askRejoin(r *convRecord, from string) {
	now := c.opts.Now()
	err := c.store.Update(func(tx *state.Tx) error {
		x := c.groupExtra(tx, r.ID)
		if !x.Asked.IsZero() && now.Sub(x.Asked) < rejoinAskEvery {
			return nil
		}
		to := from
		if m := r.Members[to]; m == nil || m.Sealing == nil || slices.Contains(x.Distrusted, to) {
			to = ""
			for _, h := range append([]string{r.Creator}, sortedKeys(r.Members)...) {
				if m := r.Members[h]; m != nil && m.Sealing != nil && !slices.Contains(x.Distrusted, h) {
					to = h
					break
				}
			}
		}
		if to == "" {
			return nil
		}
		x.Asked = now
		if err := c.fanOut(tx, r, []string{to}, sealed.ContentRejoinRequest, r.ID); err != nil {
			return err
		}
		c.log.Info("asking a member for the group's current state", "conv", r.display(), "member", to)
		return c.putGroupExtra(tx, r.ID, x)
	})
	if err != nil {
		c.log.Warn("could not ask to rejoin", "conv", r.display(), "err", err)
	}
}

// rejoinLost notes that a member's message of epoch, our current one,
// did not decrypt: if our resync made epoch, it lost to another commit
// of the epoch before (two members rejoined at once, say), and we are on
// a branch nobody follows; we ask again now, once, instead of an hour
// later (TestRejoinTwoAtOnce).
func (c *Client) rejoinLost(r *convRecord, epoch uint64, from string) {
	asked := false
	err := c.store.Update(func(tx *state.Tx) error {
		x := c.groupExtra(tx, r.ID)
		if x.Rejoined == 0 || x.Rejoined != epoch {
			return nil
		}
		x.Rejoined, x.Lost, x.Asked, asked = 0, true, time.Time{}, true
		return c.putGroupExtra(tx, r.ID, x)
	})
	if err != nil {
		c.log.Warn("could not note a lost rejoin", "conv", r.display(), "err", err)
		return
	}
	if asked {
		c.askRejoin(r, from)
	}
}

// processRejoin handles the envelopes of a rejoin in r's mailbox: a
// member's request (we answer with a GroupInfo) or the answer to ours
// (we rejoin).
func (c *Client) processRejoin(ctx context.Context, r *convRecord, op *sealed.Opened) (func(*state.Tx) error, error) {
	if _, err := c.senderContact(ctx, op); err != nil {
		return nil, err
	}
	if !r.Active || r.Left {
		return nil, fmt.Errorf("a rejoin envelope for a conversation we are not in")
	}
	g, err := c.loadGroup(ctx, r)
	if err != nil {
		return nil, err
	}
	if op.ContentType == sealed.ContentRejoinRequest {
		return c.answerRejoin(r, g, op)
	}
	return c.rejoin(ctx, r, g, op)
}

// answerRejoin sends a member that asked a GroupInfo of our epoch, with
// the mailboxes we know: only to a current member (by its credential in
// our tree, its sealing key checked against key transparency by the
// caller), at most once per rejoinAnswerEvery and epoch of ours.
func (c *Client) answerRejoin(r *convRecord, g *mls.Group, op *sealed.Opened) (func(*state.Tx) error, error) {
	who := op.Sender.Handle
	if !bytes.Equal(op.Content, r.ID) {
		return nil, fmt.Errorf("a rejoin request from %s names another conversation", who)
	}
	if !memberSet(g)[who] || who == c.prof.Handle {
		c.raiseLimited(Alarm{Kind: AlarmMemberPolicy, Detail: fmt.Sprintf("in %s, %s, not a member, asked for the group's state; not answered", r.display(), who)})
		return nil, fmt.Errorf("a rejoin request from %s, not a member", who)
	}
	if m := r.Members[who]; m == nil || m.Sealing == nil {
		return nil, fmt.Errorf("a rejoin request from %s, whose mailbox we do not know", who)
	}
	gi, err := g.GroupInfo()
	if err != nil {
		return nil, err
	}
	info, err := c.intro(r, gi)
	if err != nil {
		return nil, err
	}
	now := c.opts.Now()
	return func(tx *state.Tx) error {
		x := c.groupExtra(tx, r.ID)
		if t, ok := x.Answered[who]; ok && now.Sub(t) < rejoinAnswerEvery && !now.Before(t) && x.AnsweredEpoch[who] >= g.Epoch() {
			return nil
		}
		if x.Answered == nil {
			x.Answered = map[string]time.Time{}
		}
		if x.AnsweredEpoch == nil {
			x.AnsweredEpoch = map[string]uint64{}
		}
		x.Answered[who], x.AnsweredEpoch[who] = now, g.Epoch()
		if err := c.fanOut(tx, r, []string{who}, sealed.ContentRejoinInfo, info); err != nil {
			return err
		}
		return c.putGroupExtra(tx, r.ID, x)
	}, nil
}

// rejoin joins r's group again from the GroupInfo a member sent us (we
// asked), by an external commit that removes our old leaf, if the
// GroupInfo is of a later epoch than ours; it then sends the commit to
// every member.
func (c *Client) rejoin(ctx context.Context, r *convRecord, g *mls.Group, op *sealed.Opened) (func(*state.Tx) error, error) {
	from := op.Sender.Handle
	if m := r.Members[from]; m == nil {
		return nil, fmt.Errorf("a group state from %s, not a member of %s", from, r.display())
	}
	var x groupExtra
	if err := c.store.View(func(tx *state.Tx) error { x = *c.groupExtra(tx, r.ID); return nil }); err != nil {
		return nil, err
	}
	now := c.opts.Now()
	if x.Asked.IsZero() || now.Sub(x.Asked) > rejoinInfoFor {
		return nil, fmt.Errorf("a group state from %s we did not ask for", from)
	}
	if slices.Contains(x.Distrusted, from) {
		// Its earlier answer was a state no other member shared
		// (rejoinguard.go): else it would cut us off again at each
		// rejoin (TestHostileMemberForgedGroupInfoAgain).
		return nil, fmt.Errorf("a group state from %s, whose earlier answer no other member shared", from)
	}
	in, err := content.ParseIntro(op.Content)
	if err != nil {
		return nil, err
	}
	if in.ConvKind != r.Kind {
		return nil, fmt.Errorf("a group state from %s for a %v, not a %v", from, in.ConvKind, r.Kind)
	}
	again := false
	if x.Suspect {
		// Asked because no other member shared the state we rejoined
		// from (rejoinguard.go).
		if again, err = checkSuspectAnswer(r, &x, g, from, in.Welcome); err != nil {
			return nil, err
		}
		if again && answeredAhead(&x, in.Welcome) {
			x.Distrusted = append(x.Distrusted, r.RejoinedFrom)
		}
		if !again {
			x.Asked, x.Suspect = time.Time{}, false
			return func(tx *state.Tx) error {
				if err := c.putGroupExtra(tx, r.ID, &x); err != nil {
					return err
				}
				return putConv(tx, r)
			}, nil
		}
	}
	base, err := groupInfoContext(in.Welcome)
	if err != nil {
		return nil, err
	}
	ng, commit, err := mls.JoinExternalWith(in.Welcome, c.mlsIdentity(), c.mlsConfig(ctx),
		&mls.ExternalJoinOptions{GroupID: r.ID, Signer: []byte(from), Resync: true})
	if err != nil {
		return nil, fmt.Errorf("rejoining %s: %w", r.display(), err)
	}
	old := g.Epoch()
	oldAdmins := admins(r, r.Admins, memberSet(g))
	if !again && (ng.Epoch()-1 < old || ng.Epoch()-1 == old && !x.Lost) {
		// We caught up meanwhile (the commit was late, not lost).
		x.Asked, x.Lost = time.Time{}, false
		return func(tx *state.Tx) error { return c.putGroupExtra(tx, r.ID, &x) }, nil
	}
	current := memberSet(ng)
	var gone []string
	for h := range r.Members {
		if !current[h] {
			gone = append(gone, h)
			delete(r.Members, h)
		}
	}
	slices.Sort(gone)
	for h := range current {
		if _, ok := r.Members[h]; !ok && h != c.prof.Handle {
			r.Members[h] = &memberRecord{}
		}
	}
	for _, m := range in.Roster {
		// Only mailboxes we did not know: a member cannot redirect what
		// we send to one we know.
		if mr := r.Members[m.Handle]; mr != nil && mr.Sealing == nil {
			mr.SendID, mr.Sealing = m.SendID, m.SealingKey
		}
	}
	if err := c.saveGroup(r, ng); err != nil {
		return nil, err
	}
	// The old epochs' states belong to a history we left: no fork choice
	// returns to them (commitorder.go).
	for _, l := range r.Chain {
		r.dropLink(l)
	}
	r.dropSent(r.SentFrom, r.SentTo)
	r.Chain, r.SentFrom = nil, r.SentTo
	syncPrev(r)
	if in.Admins != nil && slices.Contains(oldAdmins, from) {
		// The admin list as of the answer's epoch: we missed the commits
		// that changed it. Only an admin of ours is believed: an admin
		// can set the list anyway. A member that is not would make
		// itself our admin, and we would apply its commits that every
		// other member refuses (TestHostileMemberRejoinForgedAdmins);
		// we keep our own list (docs/protocol.md §11.8).
		r.Admins = in.Admins
	}
	r.MyLeafChanged = now
	x.Asked, x.Lost, x.Rejoined = time.Time{}, false, ng.Epoch()
	x.RejoinedAt, x.Base, x.Suspect, r.RejoinedFrom = now, base, false, from
	return func(tx *state.Tx) error {
		if err := c.fanOut(tx, r, sortedKeys(r.Members), sealed.ContentMLS, commit); err != nil {
			return err
		}
		for _, h := range gone {
			c.history(tx, r, Event{Kind: EventMemberRemoved, From: h, Text: h + " left or was removed"})
		}
		c.history(tx, r, Event{Kind: EventWarning, Text: fmt.Sprintf("you rejoined %s: you had missed its changes from epoch %d to %d; messages written meanwhile cannot be read", r.display(), old, ng.Epoch()-1)})
		if err := c.putGroupExtra(tx, r.ID, &x); err != nil {
			return err
		}
		return putConv(tx, r)
	}, nil
}

// acceptResync decides on an external commit g (the working copy) has
// just processed: only a member's resync of itself is accepted (see the
// top of this file). Once accepted, link keeps the epoch the commit left
// for the fork choice (commitorder.go): a resync ranks after removals and
// before every other commit.
func (c *Client) acceptResync(ctx context.Context, r *convRecord, g *mls.Group, ext *mls.ExternalJoin, op *sealed.Opened, echo bool, link func()) (func(*state.Tx) error, error) {
	joiner := string(ext.Joiner.Credential.Identity)
	if err := c.checkResync(ctx, r, ext, op, echo); err != nil {
		return nil, err
	}
	link()
	if mr := r.Members[joiner]; mr != nil {
		mr.LeafChanged = c.opts.Now()
	}
	if err := c.saveGroup(r, g); err != nil {
		return nil, err
	}
	return func(tx *state.Tx) error {
		c.history(tx, r, Event{Kind: EventWarning, From: joiner, Text: joiner + " rejoined " + r.display() + " (their state of the group was out of date)"})
		return putConv(tx, r)
	}, nil
}

// checkResync refuses, with an alarm, an external commit that is not a
// member's resync of itself (see the top of this file). An echo of one
// (echo.go) is sealed by the member that echoes it, not by the joiner.
func (c *Client) checkResync(ctx context.Context, r *convRecord, ext *mls.ExternalJoin, op *sealed.Opened, echo bool) error {
	joiner := string(ext.Joiner.Credential.Identity)
	refuse := func(why string) error {
		c.raiseLimited(Alarm{Kind: AlarmMemberPolicy, Detail: fmt.Sprintf("in %s, an external commit sealed by %s was refused: %s", r.display(), op.Sender.Handle, why)})
		return fmt.Errorf("%w: external commit: %s", errRefused, why)
	}
	switch {
	case ext.Resynced == nil:
		return refuse(joiner + " would join without replacing a leaf of its own (only a member's resync is accepted)")
	case joiner != op.Sender.Handle && !echo:
		return refuse("it joins " + joiner + ", not its sender")
	case string(ext.Resynced.Credential.Identity) != joiner:
		return refuse("it replaces another member's leaf")
	case r.Members[joiner] == nil:
		return refuse(joiner + " is not a member")
	}
	// The joiner's new leaf was checked against key transparency when it
	// was applied (mls.Config.VerifyMember); its seal is checked here.
	_, err := c.senderContact(ctx, op)
	return err
}

// resyncForkChoice decides on a resync g (the state of link li's epoch,
// a working copy) has just processed, for an epoch we have left by
// another commit: a resync ranks after removals and before other commits
// (commitorder.go), and if it ranks lower than the commit we followed we switch to it, as to any
// commit. Refusing it instead split the group for good: the members that
// read the resync first kept it (TestConcurrentCommitResyncRace).
func (c *Client) resyncForkChoice(ctx context.Context, r *convRecord, g *mls.Group, li int, key []byte, ext *mls.ExternalJoin, op *sealed.Opened, echo bool) (func(*state.Tx) error, error) {
	if err := c.checkResync(ctx, r, ext, op, echo); err != nil {
		return nil, err
	}
	joiner := string(ext.Joiner.Credential.Identity)
	rank := resyncRank(key, ext.Resynced.Leaf, op.Content)
	if sameCommitter(rank, r.Chain[li].OutRank) && !bytes.Equal(rank, r.Chain[li].OutRank) {
		c.raiseLimited(Alarm{Kind: AlarmMemberPolicy, Detail: fmt.Sprintf("in %s, %s sent two different commits for epoch %d", r.display(), joiner, r.Chain[li].Epoch)})
	}
	if bytes.Compare(rank, r.Chain[li].OutRank) >= 0 {
		if echo && !bytes.Equal(rank, r.Chain[li].OutRank) {
			return c.echoBack(r, li, op.Sender.Handle), nil // echo.go
		}
		return func(*state.Tx) error { return nil }, nil // it lost
	}
	resend, retry, err := c.switchBranch(r, li, g, rank, op.Content)
	if err != nil {
		return nil, err
	}
	now := c.opts.Now()
	current := memberSet(g)
	var gone []string
	for h := range r.Members {
		if !current[h] {
			gone = append(gone, h)
			delete(r.Members, h)
		}
	}
	for h := range current {
		if _, ok := r.Members[h]; !ok && h != c.prof.Handle {
			r.Members[h] = &memberRecord{LeafChanged: now}
		}
	}
	if mr := r.Members[joiner]; mr != nil {
		mr.LeafChanged = now
	}
	effects, err := c.afterSwitch(ctx, r, g, resend, retry)
	if err != nil {
		return nil, err
	}
	if err := c.saveGroup(r, g); err != nil {
		return nil, err
	}
	return func(tx *state.Tx) error {
		for _, f := range effects {
			if err := f(tx); err != nil {
				return err
			}
		}
		for _, h := range gone {
			c.history(tx, r, Event{Kind: EventMemberRemoved, From: h, Text: h + " left or was removed"})
		}
		c.history(tx, r, Event{Kind: EventWarning, From: joiner, Text: joiner + " rejoined " + r.display() + " (their state of the group was out of date)"})
		return putConv(tx, r)
	}, nil
}
