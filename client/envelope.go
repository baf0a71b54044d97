package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/sealed"
)

// Envelope processing: what one delivered envelope does. process opens the
// sealed envelope and dispatches it: an Intro (intro mailbox) or a
// conversation's MLS message (processConv). Each returns the writes to make
// in the transaction that also marks the envelope seen, so an envelope is
// applied exactly once (see fetchloop.go).

// process handles one envelope: on success its effects and the seen mark
// are committed together. A permanently bad envelope raises an alarm and
// is marked seen so that it is acked and never blocks the mailbox.
func (c *Client) process(ctx context.Context, mb mailboxRef, m protocol.Message, seenKey []byte) error {
	box, err := sealed.ParseMailboxPrivateKey(mb.box.Sealing)
	if err != nil {
		return fmt.Errorf("%w: mailbox key", ErrCorruptState)
	}
	self := c.prof.IdentityKey.Public().(ed25519.PublicKey)
	start := time.Now()
	op, err := sealed.Open(box, mb.box.SendID, m.Envelope, c.opts.Now(), 0, self)
	c.timed(TimeRecvOpen, start)
	var commit func(tx *state.Tx) error
	var chunkKey []byte
	if err == nil && op.ContentType == sealed.ContentChunk {
		// Each chunk is sealed on its own: its sender is checked as it
		// arrives, so a forged sender's chunks are never kept.
		_, err = c.senderContact(ctx, op)
	}
	if err == nil && op.ContentType == sealed.ContentChunk && mb.intro {
		err = introChunkBound(op.Content) // invites.go
	}
	if err == nil && op.ContentType == sealed.ContentChunk {
		var whole []byte
		op.ContentType, whole, chunkKey, err = c.addChunk(mb.box.SendID, op)
		if err == nil && whole == nil {
			// Kept; the payload is processed with its last chunk.
			return c.store.Update(func(tx *state.Tx) error {
				if err := tx.Delete(bucketDeferred, seenKey); err != nil {
					return err
				}
				return tx.Put(bucketSeen, seenKey, []byte{1})
			})
		}
		op.Content = whole
	}
	if err == nil {
		if mb.intro {
			commit, err = c.processIntro(ctx, op, m)
		} else {
			commit, err = c.processConv(ctx, mb.conv, op)
		}
	}
	if errors.Is(err, errDefer) {
		return err
	}
	if errors.Is(err, errStaleBranch) || errors.Is(err, errRefused) || errors.Is(err, errEchoUseless) || errors.Is(err, errAfterRemoval) {
		// A member's message of an epoch dropped by a fork choice: its
		// sender sends it again (commitorder.go); a message truly lost
		// shows as a gap in the sender's numbers.
		c.log.Debug("dropped", "err", err)
	} else if err != nil {
		c.raiseLimited(Alarm{Kind: AlarmDropped, Detail: "an envelope that could not be read was dropped: " + err.Error()})
	}
	if err != nil {
		commit = nil
	}
	defer c.timed(TimeRecvCommit, time.Now())
	// update: sent entries retiring are deleted in this transaction too
	// (retire.go).
	return c.update(func(tx *state.Tx) error {
		if commit != nil {
			if err := commit(tx); err != nil {
				return err
			}
		}
		if chunkKey != nil {
			if err := dropChunkSet(tx, chunkKey); err != nil {
				return err
			}
		}
		if err := tx.Delete(bucketDeferred, seenKey); err != nil {
			return err
		}
		if err := c.putProfile(tx); err != nil {
			return err
		}
		// Dated now rather than at the ack: the mark is kept seenKeep
		// from here, still past the lifetime of the message on any
		// server (which began when the server stored it, before this),
		// and the ack needs no transaction of its own (ackEnvelope).
		return tx.Put(bucketSeen, seenKey, ackedMark(c.opts.Now()))
	})
}

// senderContact checks an envelope's claimed sender against key
// transparency.
func (c *Client) senderContact(ctx context.Context, op *sealed.Opened) (*Contact, error) {
	ct, err := c.ensureContact(ctx, op.Sender.Handle, time.Hour)
	if err == nil && !ct.IdentityKey.Equal(op.Sender.IdentityKey) {
		ct, err = c.lookup(ctx, op.Sender.Handle, false)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, errDefer
		}
		return nil, err
	}
	if !ct.IdentityKey.Equal(op.Sender.IdentityKey) {
		// Rate-limited with the drops: anyone can seal garbage to the
		// intro mailbox in someone else's name.
		c.raiseLimited(Alarm{Kind: AlarmBadSender, Detail: fmt.Sprintf("an envelope claimed to come from %s with a key key transparency does not show", op.Sender.Handle)})
		return nil, fmt.Errorf("sender key does not match key transparency")
	}
	return ct, nil
}

// processIntro joins a conversation from a Welcome sent to our intro
// mailbox.
func (c *Client) processIntro(ctx context.Context, op *sealed.Opened, m protocol.Message) (func(*state.Tx) error, error) {
	if op.ContentType == sealed.ContentCommitEcho {
		// A member's echo of a commit (echo.go), to a conversation
		// that receives here (SingleMailbox).
		var msg mls.MLSMessage
		if err := msg.Unmarshal(op.Content); err != nil {
			return nil, fmt.Errorf("malformed echo in the intro mailbox")
		}
		var id []byte
		if pm, pub := msg.PrivateMessage, msg.PublicMessage; pm != nil {
			id = pm.GroupID
		} else if pub != nil {
			id = pub.Content.GroupID
		}
		r, err := c.getConv(id)
		if err != nil || r == nil {
			return nil, fmt.Errorf("%w: for a conversation we are not in", errEchoUseless)
		}
		return c.processConv(ctx, r.ID, op)
	}
	if op.ContentType == sealed.ContentMLS {
		// A conversation message that followed its Welcome here before we
		// announced our mailbox.
		var msg mls.MLSMessage
		if err := msg.Unmarshal(op.Content); err != nil || msg.PrivateMessage == nil {
			return nil, fmt.Errorf("malformed MLS message in the intro mailbox")
		}
		r, err := c.getConv(msg.PrivateMessage.GroupID)
		if err != nil {
			return nil, err
		}
		if r == nil {
			// Its Welcome has not been processed yet. Only a sender key
			// transparency shows is waited for, and not for long, nor
			// more than a few (deferred.go).
			if _, err := c.senderContact(ctx, op); err != nil {
				return nil, err
			}
			// Unless it came with an invitation waiting (invites.go).
			if commit, ok, err := c.keepEarly(op); ok {
				return commit, err
			}
			return nil, errDeferUnknownGroup
		}
		return c.processConv(ctx, r.ID, op)
	}
	if op.ContentType != sealed.ContentMLSWelcome {
		return nil, fmt.Errorf("unexpected content type %d in the intro mailbox", op.ContentType)
	}
	if len(op.Content) > MaxWelcomeBytes+introOverhead {
		return nil, fmt.Errorf("an intro of %d bytes, more than %d", len(op.Content), MaxWelcomeBytes+introOverhead)
	}
	in, err := content.ParseIntro(op.Content)
	if err != nil {
		return nil, err
	}
	from, err := c.senderContact(ctx, op)
	if err != nil {
		return nil, err
	}
	return c.introWelcome(ctx, from, in, op.Content) // invites.go
}

// encryptIn encrypts m as our next message in g.
func (c *Client) encryptIn(g *mls.Group, r *convRecord, m *content.Message) ([]byte, error) {
	// The number after our record's may have gone out with a text whose
	// record a crash or a failed transaction lost (reserve.go): skipped,
	// and the message says so.
	skip := c.floors.skipSeq(r.ID, r.MySeq)
	id, err := content.NewID(skip)
	if err != nil {
		return nil, err
	}
	m.ID, m.SkippedBefore = id, skip
	if skip {
		r.MySeq++
	}
	r.MySeq++
	m.Seq = r.MySeq
	m.SentAt = uint64(c.opts.Now().Unix())
	m.Checkpoint = c.checkpoint()
	plain, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	if m.Kind != content.KindCover && m.Kind != content.KindMailbox {
		r.noteReal(len(plain), len(m.Checkpoint), c.opts.Now())
	}
	if m.Kind != content.KindCover {
		r.noteSent(plain) // sent again if a fork choice drops the epoch
	}
	return g.Encrypt(plain)
}

// processConv handles an envelope in a conversation's mailbox.
func (c *Client) processConv(ctx context.Context, id []byte, op *sealed.Opened) (func(*state.Tx) error, error) {
	r, err := c.getConv(id)
	if err != nil || r == nil {
		return nil, fmt.Errorf("no conversation for this mailbox")
	}
	if op.ContentType == sealed.ContentRejoinRequest || op.ContentType == sealed.ContentRejoinInfo {
		return c.processRejoin(ctx, r, op) // rejoin.go
	}
	// echo: a commit a member followed, sent to us because we seem to be
	// on another branch of commits (echo.go).
	echo := op.ContentType == sealed.ContentCommitEcho
	if op.ContentType != sealed.ContentMLS && !echo {
		return nil, fmt.Errorf("unexpected content type %d in a conversation", op.ContentType)
	}
	mlsStart := time.Now()
	g, err := c.loadGroup(ctx, r)
	if err != nil && !r.Active {
		return nil, errAfterRemoval // joinbranch.go
	}
	if err != nil {
		return nil, err
	}
	var msg mls.MLSMessage
	if err := msg.Unmarshal(op.Content); err != nil {
		return nil, err
	}
	if echo {
		if err := checkEcho(r, &msg, op.Sender.Handle); err != nil {
			return nil, err
		}
		if pm, pub := msg.PrivateMessage, msg.PublicMessage; pm != nil && pm.Epoch > g.Epoch() || pub != nil && pub.Content.Epoch > g.Epoch() {
			return nil, fmt.Errorf("%w: of an epoch we have not reached", errEchoUseless)
		}
	}
	if msg.PrivateMessage != nil && msg.PrivateMessage.Epoch > g.Epoch() {
		// Its commit has not reached us yet. Only a member's is waited
		// for, within the bounds of deferred.go.
		if _, ok := r.Members[op.Sender.Handle]; !ok {
			return nil, fmt.Errorf("a message from a future epoch sealed by %s, not a member", op.Sender.Handle)
		}
		c.askRejoinIfBehind(r, g.Epoch(), op.Sender.Handle) // in case its commit is lost (rejoin.go)
		return nil, errDeferFutureEpoch
	}
	// A message written in an epoch before the last commit (a member
	// wrote, or its outbox sent, before it saw the commit), or a commit
	// competing with one we applied (commitorder.go), is read with the
	// state of its epoch, kept for a while for exactly this.
	now := c.opts.Now()
	pm := msg.PrivateMessage
	usePrev := false
	li := -1
	cur := g
	baseRaw := r.Group
	// A member's resync (an external commit, a PublicMessage) for an
	// epoch we left competes in the fork choice like any commit.
	msgEpoch, past := uint64(0), false
	if pm != nil {
		msgEpoch, past = pm.Epoch, pm.Epoch < g.Epoch()
	} else if pub := msg.PublicMessage; pub != nil && pub.Content.Sender.Type == mls.SenderTypeNewMemberCommit {
		msgEpoch, past = pub.Content.Epoch, pub.Content.Epoch < g.Epoch()
	}
	if past {
		if li = r.linkAt(msgEpoch, now); li < 0 {
			if _, ok := r.Members[op.Sender.Handle]; ok {
				// A member's (or its echo of a commit), of an epoch we
				// hold no state of: of a
				// branch a fork choice dropped (its sender sent it
				// again), or read too late; a message truly lost
				// shows as a gap in the sender's numbers. Or we
				// rejoined a branch of our own (rejoinguard.go).
				c.suspectRejoin(r, op.Sender.Handle)
				return nil, fmt.Errorf("%w: a message of epoch %d", errStaleBranch, msgEpoch)
			}
			return nil, fmt.Errorf("a message of epoch %d, older than the states kept", msgEpoch)
		}
		raw, err := c.linkState(r, li)
		if err != nil {
			return nil, err
		}
		prev, err := mls.UnmarshalGroup(raw, c.mlsConfig(ctx))
		if err != nil {
			return nil, fmt.Errorf("%w: previous epoch state: %v", ErrCorruptState, err)
		}
		g, usePrev, baseRaw = prev, true, raw
	}
	var key []byte
	if pub := msg.PublicMessage; (pm != nil && pm.ContentType == mls.ContentTypeCommit) || (pub != nil && pub.Content.ContentType == mls.ContentTypeCommit) {
		if key, err = orderKey(g); err != nil {
			return nil, err
		}
	}
	oldEpoch := g.Epoch()
	before := memberSet(g)
	rec, err := g.ProcessMessage(op.Content)
	mlsTime := time.Since(mlsStart)
	if err != nil {
		if echo {
			// Of another branch's epoch, or of no use: the echoer meant
			// well, or is answered by nothing.
			return nil, fmt.Errorf("%w: %v", errEchoUseless, err)
		}
		if pm != nil && !commitFailure(err) && errors.Is(err, mls.ErrDecryptFailed) {
			// Not of this epoch's keys: of another branch of commits,
			// which we may switch to. Only a member's is waited for;
			// its sender learns the commit we followed into the epoch
			// (echo.go), so that one of us switches.
			if _, ok := r.Members[op.Sender.Handle]; ok {
				if !usePrev && pm.Epoch == g.Epoch() {
					c.rejoinLost(r, pm.Epoch, op.Sender.Handle) // rejoin.go
				}
				c.echoFork(ctx, r, pm.Epoch, op)
				return nil, errDeferOtherBranch
			}
			return nil, c.undecryptableFromNonMember(ctx, r, op, err) // joinbranch.go
		}
		if pm != nil && !usePrev && pm.ContentType == mls.ContentTypeCommit && commitFailure(err) {
			// Every later message of the conversation is from an epoch
			// we cannot reach: say so, once per commit, instead of
			// waiting for it in silence.
			c.raise(Alarm{Kind: AlarmGroupStuck, Detail: fmt.Sprintf("in %s, a commit from %s to epoch %d could not be processed (%v): asking %s for the group's state to rejoin", r.display(), op.Sender.Handle, g.Epoch()+1, err, op.Sender.Handle)})
			c.askRejoin(r, op.Sender.Handle) // rejoin.go
		}
		return nil, fmt.Errorf("decrypting: %w", err)
	}
	if usePrev && rec.ContentType == mls.ContentTypeProposal {
		return nil, fmt.Errorf("a proposal for a past epoch")
	}
	if rec.External != nil {
		if usePrev {
			// A resync competing with the commit we followed out of
			// its epoch: ordered like any commit (rejoin.go).
			return c.resyncForkChoice(ctx, r, g, li, key, rec.External, op, echo)
		}
		return c.acceptResync(ctx, r, g, rec.External, op, echo, func() { // rejoin.go
			c.pushLink(r, oldEpoch, baseRaw, resyncRank(key, rec.External.Resynced.Leaf, op.Content), nil, op.Content)
		})
	}
	sender := c.memberHandle(g, rec.Sender.Index)
	if rec.ContentType == mls.ContentTypeCommit {
		sender = memberAt(baseRaw, c, ctx, rec.Sender.Index)
	}
	if echo && rec.ContentType == mls.ContentTypeCommit && sender != "" {
		// An echo: the commit is its committer's, the envelope the
		// echoer's, a member (checkEcho); the policy below judges the
		// committer.
	} else if sender != op.Sender.Handle {
		c.raise(Alarm{Kind: AlarmBadSender, Detail: fmt.Sprintf("in %s, an envelope sealed by %s carried a message from %s", r.display(), op.Sender.Handle, sender)})
		return nil, fmt.Errorf("sealed sender and MLS sender differ")
	}
	if usePrev && rec.ContentType == mls.ContentTypeApplication && !stillMember(cur, g, rec.Sender.Index) {
		// Removed by the commit we applied: whatever it writes with the
		// keys of the epoch before is refused, however it dates it
		// (docs/protocol.md §11.5).
		return nil, fmt.Errorf("a message from %s, written in epoch %d, after the commit that removed them", sender, g.Epoch())
	}
	start := time.Now()
	if _, err := c.senderContact(ctx, op); err != nil {
		return nil, err
	}
	c.timed(TimeRecvSender, start)
	// A member not checked at our join is checked at its first message
	// (kt.go checkSender), in the state that holds its leaf now.
	if mr := r.Members[sender]; mr != nil && mr.Unverified {
		leaves := g
		if rec.Removed {
			if leaves, err = mls.UnmarshalGroup(baseRaw, c.mlsConfig(ctx)); err != nil {
				return nil, err
			}
		}
		if err := c.checkSender(ctx, r, leaves, sender); err != nil {
			if ctx.Err() != nil {
				return nil, errDefer
			}
			return nil, err
		}
	}
	if !usePrev && sender != r.RejoinedFrom {
		r.RejoinedFrom = "" // another member shares our epoch (rejoinguard.go)
	}
	var effects []func(tx *state.Tx) error
	note := func(f func(tx *state.Tx)) {
		effects = append(effects, func(tx *state.Tx) error { f(tx); return nil })
	}
	switch rec.ContentType {
	case mls.ContentTypeCommit:
		list := r.Admins
		if usePrev {
			list = r.Chain[li].Admins
		}
		after := memberSet(g)
		if rec.Removed {
			// Our view ends here: we know only that we are out.
			after = maps.Clone(before)
			delete(after, c.prof.Handle)
		}
		newAdmins, err := judgeCommit(r, list, before, after, sender, rec.AuthenticatedData)
		if err != nil {
			c.raiseLimited(Alarm{Kind: AlarmMemberPolicy, Detail: fmt.Sprintf("in %s, a commit was refused: %v", r.display(), err)})
			return nil, fmt.Errorf("%w: a commit against the group's policy: %v", errRefused, err)
		}
		removes := false
		for h := range before {
			if !after[h] && h != c.prof.Handle {
				removes = true
			}
		}
		rank := commitRank(key, rec.Sender.Index, op.Content, removes || rec.Removed)
		var resend [][]byte
		var retry []*commitIntent
		if usePrev {
			// A commit competing with the one we followed out of its
			// epoch: the lower rank wins (commitorder.go).
			if sameCommitter(rank, r.Chain[li].OutRank) && !bytes.Equal(rank, r.Chain[li].OutRank) {
				// Two commits of one member on one epoch: no honest
				// client makes them (a retry is on a later epoch).
				c.raiseLimited(Alarm{Kind: AlarmMemberPolicy, Detail: fmt.Sprintf("in %s, %s sent two different commits for epoch %d", r.display(), sender, oldEpoch)})
			}
			// A committer no longer a member of the branch we follow
			// (removed by a commit after this epoch) loses, as its
			// resync does (checkResync): else a removed member who kept
			// a better commit for an epoch before its removal, or a
			// state of it, undoes the removal and reads and writes
			// until an admin removes it again
			// (TestHostileMemberUndoesRemovalFromEarlierEpoch).
			gone := sender != c.prof.Handle && r.Members[sender] == nil
			if gone || bytes.Compare(rank, r.Chain[li].OutRank) >= 0 {
				if echo && !bytes.Equal(rank, r.Chain[li].OutRank) {
					// The echoer is on a branch that loses: it
					// learns ours (echo.go).
					return c.echoBack(r, li, op.Sender.Handle), nil
				}
				return func(*state.Tx) error { return nil }, nil // it lost; its committer retries
			}
			if resend, retry, err = c.switchBranch(r, li, g, rank, op.Content); err != nil {
				return nil, err
			}
			usePrev = false
		} else {
			c.pushLink(r, oldEpoch, baseRaw, rank, nil, op.Content)
		}
		if newAdmins != nil && !slices.Equal(newAdmins, admins(r, r.Admins, after)) {
			note(func(tx *state.Tx) {
				c.history(tx, r, Event{Kind: EventAdmins, From: sender, Text: fmt.Sprintf("the admins are now %v", newAdmins)})
			})
		}
		r.Admins = newAdmins
		if rec.Removed {
			r.Active = false
			note(func(tx *state.Tx) {
				c.history(tx, r, Event{Kind: EventRemoved, From: sender, Text: "you were removed from " + r.display()})
			})
			break
		}
		if mr := r.Members[sender]; mr != nil {
			mr.LeafChanged = now // a member commit carries a path here: its leaf is new
		}
		for h := range r.Members {
			if !after[h] {
				delete(r.Members, h)
				note(func(tx *state.Tx) {
					c.history(tx, r, Event{Kind: EventMemberRemoved, From: h, Text: h + " left or was removed"})
				})
			}
		}
		for h := range after {
			if _, ok := r.Members[h]; !ok && h != c.prof.Handle {
				r.Members[h] = &memberRecord{LeafChanged: now}
			}
		}
		if len(resend) > 0 || len(retry) > 0 {
			fs, err := c.afterSwitch(ctx, r, g, resend, retry)
			if err != nil {
				return nil, err
			}
			effects = append(effects, fs...)
		}
	case mls.ContentTypeApplication:
		m, err := content.ParseMessage(rec.ApplicationData)
		if err != nil {
			return nil, err
		}
		mr := r.Members[sender]
		if mr == nil {
			mr = &memberRecord{}
			r.Members[sender] = mr
		}
		dup, missed := trackSeq(mr, m.Seq, m.SkippedBefore)
		if dup && m.Seq == mr.LastSeq && len(mr.LastID) > 0 && !bytes.Equal(mr.LastID, m.ID[:]) {
			// The sender's newest number again, on another message: a
			// sender from before ADR 0045 restarted after a crash while
			// its last text was on the way numbers its next message as
			// that one (reserve.go; ours now skip it and say so).
			dup = false
		}
		if !dup && m.Seq == mr.LastSeq {
			mr.LastID = m.ID[:]
		}
		if dup {
			break // a duplicate delivery, or a message sent again after a fork choice
		}
		if len(missed) > 0 {
			note(func(tx *state.Tx) {
				c.history(tx, r, Event{Kind: EventGap, From: sender, Missed: missed, Text: fmt.Sprintf("%d message(s) from %s missing", len(missed), sender)})
			})
		}
		start := time.Now()
		c.gossip(ctx, sender, m.Checkpoint)
		c.timed(TimeRecvGossip, start)
		sentAt := time.Unix(int64(m.SentAt), 0)
		switch m.Kind {
		case content.KindText:
			note(func(tx *state.Tx) {
				now := c.opts.Now()
				c.history(tx, r, Event{Kind: EventMessage, From: sender, Text: m.Text, Seq: m.Seq, SentAt: sentAt, At: now, ID: hex.EncodeToString(m.ID[:])})
				c.onText(tx, r, sender, m.ID, now)
			})
		case content.KindMailbox:
			known := mr.Sealing != nil
			mr.SendID, mr.Sealing = m.Mailbox.SendID, m.Mailbox.SealingKey
			if !known && r.Kind == content.ConvGroup {
				note(func(tx *state.Tx) {
					c.history(tx, r, Event{Kind: EventMemberAdded, From: sender, Text: sender + " joined"})
				})
			}
		case content.KindLeave:
			if c.isAdmin(r, cur) {
				return c.removeOnRequest(ctx, r, g, usePrev, li, sender)
			}
		case content.KindReceipt:
			note(func(tx *state.Tx) { c.onReceipt(tx, r, sender, m.Receipt) })
		case content.KindCover:
			// A dummy of cover traffic: processed up to here like a text,
			// then dropped.
		}
		if m.Kind == content.KindText && c.updateDue(r, cur, usePrev) {
			// Our scheduled update (update.go): after a text we
			// received. Receipts, cover dummies and announcements do
			// not count, so that the schedule's cost follows what
			// people write. It is committed once the mailboxes were
			// read (commitDueUpdates), so that it rarely races a
			// commit already waiting there.
			r.UpdateDue = true
		}
	case mls.ContentTypeProposal:
		// Proposals are never kept for a commit by reference
		// (docs/protocol.md §11.5): a proposal some members did not get
		// would make our commit unprocessable for them.
		g.DiscardProposals()
		p := rec.Proposal
		switch {
		case p.Type == mls.ProposalTypeRemove && rec.Sender.Type == mls.SenderTypeMember && p.Remove.Removed == rec.Sender.Index:
			// A member asking to leave, the MLS way: an admin removes
			// it with a commit of its own, like a leave message.
			if c.isAdmin(r, g) {
				return c.removeOnRequest(ctx, r, g, false, -1, sender)
			}
		case p.Type == mls.ProposalTypeUpdate:
			// Its own leaf: allowed, but committed by no one (commits
			// are by value, which an Update cannot be); members update
			// with commits of their own (update.go).
		case slices.Contains(admins(r, r.Admins, before), sender):
			// An admin commits its changes by value; a proposal of its
			// own is of no use and is ignored.
		default:
			c.raiseLimited(Alarm{Kind: AlarmMemberPolicy, Detail: fmt.Sprintf("in %s, %s proposed a change only %v may make (%v); it was ignored", r.display(), sender, admins(r, r.Admins, before), p.Type)})
		}
	}
	start = time.Now()
	if err := c.saveState(r, g, usePrev, li); err != nil {
		return nil, err
	}
	if f := c.opts.Timing; f != nil {
		f(TimeRecvMLS, mlsTime+time.Since(start))
	}
	return func(tx *state.Tx) error {
		for _, f := range effects {
			if err := f(tx); err != nil {
				return err
			}
		}
		return putConv(tx, r)
	}, nil
}

// isAdmin reports whether we are an admin of r, whose state is g.
func (c *Client) isAdmin(r *convRecord, g *mls.Group) bool {
	return r.Kind == content.ConvGroup && slices.Contains(admins(r, r.Admins, memberSet(g)), c.prof.Handle)
}

// memberAt is the handle at leaf of the group state raw (a commit's
// sender is named by the epoch it was sent in).
func memberAt(raw []byte, c *Client, ctx context.Context, leaf uint32) string {
	g, err := mls.UnmarshalGroup(raw, c.mlsConfig(ctx))
	if err != nil {
		return ""
	}
	return c.memberHandle(g, leaf)
}

// removeOnRequest is an admin's answer to a member's request to leave
// (a leave message, or a proposal to remove itself): g, in which the
// request was read, is stored, and the member is removed by a commit.
func (c *Client) removeOnRequest(ctx context.Context, r *convRecord, g *mls.Group, prev bool, link int, member string) (func(*state.Tx) error, error) {
	if err := c.saveState(r, g, prev, link); err != nil {
		return nil, err
	}
	cur, err := c.loadGroup(ctx, r)
	if err != nil {
		return nil, err
	}
	if err := c.removeMember(ctx, r, cur, member); err != nil {
		return nil, err
	}
	return func(*state.Tx) error { return nil }, nil
}

// stillMember reports whether the sender at leaf of prev, the previous
// epoch's group, is a member of cur, the current one: the same
// credential with the same signature key.
func stillMember(cur, prev *mls.Group, leaf uint32) bool {
	var who *mls.Member
	for _, m := range prev.Members() {
		if m.Leaf == leaf {
			who = &m
			break
		}
	}
	if who == nil {
		return false
	}
	for _, m := range cur.Members() {
		if bytes.Equal(m.Credential.Identity, who.Credential.Identity) && bytes.Equal(m.SignatureKey, who.SignatureKey) {
			return true
		}
	}
	return false
}

// saveState stores g as the conversation's current group state, or as
// the state of the past epoch kept in r.Chain[link].
func (c *Client) saveState(r *convRecord, g *mls.Group, prev bool, link int) error {
	if !prev {
		return c.saveGroup(r, g)
	}
	raw, err := g.Marshal()
	if err != nil {
		return err
	}
	if link >= 0 && link < len(r.Chain) {
		r.setLinkState(r.Chain[link], raw)
	}
	syncPrev(r)
	return nil
}

func (c *Client) memberHandle(g *mls.Group, leaf uint32) string {
	for _, m := range g.Members() {
		if m.Leaf == leaf {
			return string(m.Credential.Identity)
		}
	}
	return ""
}

// trackSeq records sequence number seq from a member: it reports a
// duplicate, or the numbers skipped since the last one (a gap). The
// first number seen from a member sets the baseline when we joined after
// it had written. skipped: the message says the number before it may
// never have been sent (content.Message.SkippedBefore, after the sender
// restarted): that one number is not reported, but is still awaited (a
// text sent early and delivered late is shown; memberRecord.Excused).
// It excuses no other.
func trackSeq(m *memberRecord, seq uint64, skipped bool) (dup bool, missed []uint64) {
	switch {
	case !m.Seen:
		m.Seen = true
		if seq > 1 && m.LastSeq == 0 {
			// We may have joined after its earlier messages.
			m.LastSeq = seq
			return false, nil
		}
	case seq <= m.LastSeq:
		if i := slices.Index(m.Missing, seq); i >= 0 {
			m.Missing = slices.Delete(m.Missing, i, i+1) // a late arrival fills the gap
			return false, nil
		}
		if i := slices.Index(m.Excused, seq); i >= 0 {
			m.Excused = slices.Delete(m.Excused, i, i+1) // a text sent early before a restart, late
			return false, nil
		}
		return true, nil
	}
	for s := m.LastSeq + 1; s < seq && len(missed) < 1000; s++ {
		missed = append(missed, s)
	}
	if skipped && len(missed) > 0 && missed[len(missed)-1] == seq-1 {
		// Awaited apart from the gaps, the newest few only: one per
		// restart of the sender's would otherwise grow Missing and push
		// a real gap's number out of it (TestAttackRestartsEvictAwaited).
		missed = missed[:len(missed)-1]
		m.Excused = append(m.Excused, seq-1)
		if len(m.Excused) > maxExcused {
			m.Excused = m.Excused[len(m.Excused)-maxExcused:]
		}
	}
	m.Missing = append(m.Missing, missed...)
	if len(m.Missing) > 1000 {
		m.Missing = m.Missing[len(m.Missing)-1000:]
	}
	m.LastSeq = seq
	return false, missed
}

// maxExcused is how many numbers excused by a sender's restarts
// (memberRecord.Excused) are still awaited: a text sent early before a
// crash is late by as long as the server holds it, and each restart
// excuses one number more.
const maxExcused = 8
