package client

import (
	"context"
	"encoding/binary"
	"errors"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/wire"
)

// Receiving. Each of our mailboxes (the intro mailbox and one per
// conversation) is read on its own connection. A delivered envelope is
// processed, and its effects (group state, history, sequence numbers,
// the "seen" mark) are written in one transaction before it is acked, so
// a crash at any point neither loses it nor applies it twice: an envelope
// delivered again after a crash is recognised by its message ID and only
// acked.

// errDefer marks an envelope to leave on the server and process later (a
// message from an epoch we have not reached yet, or a transient failure).
var errDefer = errors.New("deferred")

// mailboxRef names one of our mailboxes for processing.
type mailboxRef struct {
	role  string
	conv  []byte // nil for the intro mailbox
	box   *mailboxRecord
	intro bool
}

func (c *Client) mailboxes() ([]mailboxRef, error) {
	var out []mailboxRef
	if c.prof.Intro != nil {
		out = append(out, mailboxRef{role: connIntro, box: c.prof.Intro, intro: true})
	}
	convs, err := c.allConvs()
	if err != nil {
		return nil, err
	}
	for _, r := range convs {
		if r.Mailbox != nil && r.Active && (c.prof.Intro == nil || r.Mailbox.ReceiveID != c.prof.Intro.ReceiveID) {
			// A conversation that receives at the intro mailbox
			// (SingleMailbox) is read there: processIntro routes its
			// messages by group ID.
			out = append(out, mailboxRef{role: connForConv(r.ID), conv: r.ID, box: r.Mailbox})
		}
	}
	return out, nil
}

// Sync sends the outbox, then fetches and processes everything waiting in
// every mailbox, and returns what happened. Errors of single mailboxes
// are reported after the others were read.
func (c *Client) Sync(ctx context.Context) ([]Event, error) {
	c.op.Lock()
	defer c.op.Unlock()
	if c.prof.Handle == "" {
		return nil, ErrNotRegistered
	}
	c.pending = nil
	c.flush(ctx) // announcements and sends first; errors are retried below
	if err := c.dropStaleChunks(); err != nil {
		return nil, err
	}
	if err := c.dropStaleSeen(); err != nil {
		return nil, err
	}
	if len(c.prof.PendingGossip) > 0 {
		c.recheckGossip(ctx)
		if err := c.saveProfile(); err != nil {
			return c.takeEvents(), err
		}
	}
	var firstErr error
	done := map[string]bool{}
	// New conversations joined while reading add mailboxes: loop until
	// every mailbox was read once.
	for {
		boxes, err := c.mailboxes()
		if err != nil {
			return c.takeEvents(), err
		}
		// The connections this pass opens are staggered (linking.go), so
		// a burst of them does not tell the server that these mailboxes
		// belong together.
		fresh := 0
		for _, mb := range boxes {
			if !done[mb.role] && !c.connOpen(mb.role) {
				fresh++
			}
		}
		opened := 0
		progress := false
		for _, mb := range boxes {
			if done[mb.role] {
				continue
			}
			done[mb.role] = true
			progress = true
			if !c.connOpen(mb.role) {
				if opened > 0 {
					if err := sleepCtx(ctx, staggerGap(fresh)); err != nil {
						return c.takeEvents(), err
					}
				}
				opened++
			}
			if _, err := c.drain(ctx, mb, false); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if !progress {
			break
		}
	}
	if err := c.commitDueUpdates(ctx); err != nil && firstErr == nil {
		firstErr = err
	}
	if err := c.releaseReceipts(ctx); err != nil && firstErr == nil {
		firstErr = err
	}
	if err := c.flush(ctx); err != nil && firstErr == nil {
		firstErr = err
	}
	c.summariseDropped(0)
	return c.takeEvents(), firstErr
}

func (c *Client) takeEvents() []Event {
	ev := append(c.backgroundEvents(), c.pending...)
	c.pending = nil
	return ev
}

// drain fetches and processes one mailbox until it is empty; with
// deferredOnly, only the envelopes deferred before (deferred.go), the
// others being a subscription's to deliver. It returns how many
// envelopes it processed and acknowledged.
func (c *Client) drain(ctx context.Context, mb mailboxRef, deferredOnly bool) (int, error) {
	conn, err := c.conn(ctx, mb.role)
	if err != nil {
		return 0, err
	}
	var after uint64
	done := 0
	// present is every envelope the mailbox held, to forget the deferral
	// records of those the server no longer has.
	present := map[wire.MessageID]bool{}
	for {
		msgs, more, err := conn.Fetch(ctx, mb.box.mailbox(), after, 64)
		if err != nil {
			return done, err
		}
		for _, m := range msgs {
			after = m.Seq
			present[m.ID] = true
			if deferredOnly && !c.isDeferred(seenKey(mb, m)) {
				continue
			}
			ack, err := c.receiveEnvelope(ctx, conn, mb, m)
			if err == nil && ack {
				done++
				err = c.ackEnvelope(ctx, conn, mb, m)
			}
			if err != nil {
				return done, err
			}
		}
		if !more || len(msgs) == 0 {
			return done, c.forgetDeferred(mb, present)
		}
	}
}

// seenKey is the key of an envelope's seen mark.
func seenKey(mb mailboxRef, m protocol.Message) []byte {
	return append(mb.box.ReceiveID[:len(mb.box.ReceiveID):len(mb.box.ReceiveID)], m.ID[:]...)
}

// receiveEnvelope processes one envelope, unless it was already, and
// commits its effects with its seen mark. ack reports whether it is to
// be acknowledged (ackEnvelope): not when it was deferred.
func (c *Client) receiveEnvelope(ctx context.Context, conn *protocol.Conn, mb mailboxRef, m protocol.Message) (ack bool, err error) {
	key := seenKey(mb, m)
	seen := false
	if err := c.store.View(func(tx *state.Tx) error {
		_, err := tx.Get(bucketSeen, key)
		seen = err == nil
		if errors.Is(err, state.ErrNoEntry) {
			return nil
		}
		return err
	}); err != nil {
		return false, err
	}
	if !seen {
		err := c.process(ctx, mb, m, key)
		if errors.Is(err, errDefer) {
			// Left on the server, within bounds (deferred.go).
			return false, c.deferEnvelope(ctx, conn, mb, m, key, err)
		}
		if err != nil {
			return false, err
		}
		if c.kpUsed {
			c.kpUsed = false
			c.refillKeyPackagesQuietly(ctx)
		}
	}
	return true, nil
}

// ackEnvelope acknowledges an envelope receiveEnvelope committed, and
// dates its seen mark.
func (c *Client) ackEnvelope(ctx context.Context, conn *protocol.Conn, mb mailboxRef, m protocol.Message) error {
	key := seenKey(mb, m)
	defer c.timed(TimeRecvAck, time.Now())
	_, err := conn.Ack(ctx, mb.box.mailbox(), []wire.MessageID{m.ID})
	if err == nil && !seenAcked(c, key) {
		// The mark stays, dated, for as long as a server could still
		// hold the message: a server that delivers it again after the
		// ack (it keeps what it should have deleted) is answered like an
		// honest redelivery, with an ack and nothing shown twice.
		c.store.Update(func(tx *state.Tx) error { return tx.Put(bucketSeen, key, ackedMark(c.opts.Now())) })
	}
	return err
}

// seenKeep is how long the mark of an acknowledged message is kept: past
// any server's message lifetime (21 days by default), after which no
// honest server delivers it again and a replay fails MLS's own check.
const seenKeep = 30 * 24 * time.Hour

// ackedMark is the dated seen mark: the time of the ack, or of the
// processing that precedes it (process). A mark not dated yet (a chunk
// kept for later, an envelope dropped unread) is the single byte 1.
func ackedMark(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(t.Unix()))
}

// seenAcked reports whether key's mark already says acknowledged.
func seenAcked(c *Client, key []byte) bool {
	acked := false
	c.store.View(func(tx *state.Tx) error {
		v, err := tx.Get(bucketSeen, key)
		acked = err == nil && len(v) == 8
		return nil
	})
	return acked
}

// dropStaleSeen deletes the marks of messages acknowledged more than
// seenKeep ago, at most once an hour.
func (c *Client) dropStaleSeen() error {
	now := c.opts.Now()
	if now.Sub(c.seenPruned) < time.Hour {
		return nil
	}
	c.seenPruned = now
	return c.store.Update(func(tx *state.Tx) error {
		var stale [][]byte
		err := tx.ForEach(bucketSeen, func(k, v []byte) error {
			if len(v) == 8 && now.Sub(time.Unix(int64(binary.BigEndian.Uint64(v)), 0)) > seenKeep {
				stale = append(stale, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := tx.Delete(bucketSeen, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Follow keeps reading every mailbox as envelopes arrive (push
// subscriptions) and calls fn for each event, until ctx ends. New
// conversations are followed as they are joined.
func (c *Client) Follow(ctx context.Context, fn func(Event)) error {
	// Tokens are refilled on a schedule of their own while following,
	// never because of a send (tokenkeys.go).
	if err := c.RefillIfEmpty(ctx); err != nil {
		c.log.Debug("refill", "err", err)
	}
	defer c.StartRefills(ctx)()
	if cv := c.coverMode(); cv != nil {
		return c.followCover(ctx, fn, *cv)
	}
	ev, err := c.Sync(ctx)
	for _, e := range ev {
		fn(e)
	}
	if err != nil {
		return err
	}
	// The subscriptions' backlogs deliver every deferred envelope once
	// more; from then on, they are read again when their conversation
	// moves (retryDeferred).
	c.op.Lock()
	c.settleEpochs()
	c.op.Unlock()
	type arrival struct {
		mb mailboxRef
		m  protocol.Message
		at time.Time
	}
	in := make(chan arrival)
	subs := map[string]*protocol.Subscription{}
	defer func() {
		for _, s := range subs {
			s.Close()
		}
	}()
	subscribe := func() error {
		c.op.Lock()
		boxes, err := c.mailboxes()
		c.op.Unlock()
		if err != nil {
			return err
		}
		for _, mb := range boxes {
			if subs[mb.role] != nil {
				continue
			}
			conn, err := c.conn(ctx, mb.role)
			if err != nil {
				return err
			}
			s, err := conn.Subscribe(ctx, mb.box.mailbox(), 0)
			if err != nil {
				return err
			}
			subs[mb.role] = s
			go func() {
				for m := range s.C {
					select {
					case in <- arrival{mb, m, time.Now()}:
					case <-ctx.Done():
						return
					}
				}
			}()
		}
		return nil
	}
	if err := subscribe(); err != nil {
		return err
	}
	// The ticker retries the outbox and follows conversations started
	// meanwhile by other calls (a Send that opened a direct chat).
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	// due wakes when the next scheduled receipt is due.
	due := time.NewTimer(time.Hour)
	defer due.Stop()
	rearm := func() {
		c.op.Lock()
		next, ok := c.nextReceipt()
		c.op.Unlock()
		d := time.Hour
		if ok {
			d = max(next.Sub(c.opts.Now()), 0)
		}
		due.Reset(d)
	}
	rearm()
	lastRecheck := time.Now()
	// step runs one piece of work under the state lock and hands its
	// events to fn outside it.
	step := func(work func() error) {
		c.op.Lock()
		c.pending = nil
		err := work()
		ev := c.takeEvents()
		c.op.Unlock()
		for _, e := range ev {
			fn(e)
		}
		if err != nil && ctx.Err() == nil {
			c.log.Debug("follow", "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-due.C:
			step(func() error {
				if err := c.releaseReceipts(ctx); err != nil {
					return err
				}
				return c.flush(ctx)
			})
			rearm()
		case a := <-in:
			// The envelope's effects are committed, then its events
			// shown, then it is acknowledged: the ack's round trip is
			// not between its arrival and the callback.
			var conn *protocol.Conn
			ack := false
			step(func() error {
				c.timed(TimeRecvWait, a.at)
				var err error
				conn, err = c.conn(ctx, a.mb.role)
				if err == nil {
					ack, err = c.receiveEnvelope(ctx, conn, a.mb, a.m)
				}
				return err
			})
			c.timed(TimeRecvShown, a.at)
			step(func() error {
				var err error
				if ack {
					err = c.ackEnvelope(ctx, conn, a.mb, a.m)
				}
				if err == nil {
					// What was deferred until this envelope's commit
					// (or switch, or join) is read again now, not at
					// the next sync (deferred.go).
					err = c.retryDeferred(ctx)
				}
				if err == nil {
					// A scheduled update found due goes now.
					err = c.commitDueUpdates(ctx)
				}
				if err == nil {
					start := time.Now()
					err = c.flush(ctx)
					c.timed(TimeRecvFlush, start)
				}
				return err
			})
			if err := subscribe(); err != nil && ctx.Err() == nil {
				return err
			}
			rearm()
		case <-tick.C:
			step(func() error {
				c.summariseDropped(time.Minute)
				// Moves made by other calls (a joined invitation),
				// and deferrals for a passing failure.
				if err := c.retryDeferred(ctx); err != nil {
					return err
				}
				return c.flush(ctx)
			})
			// Kept gossip is compared again while following too, so the
			// bound runs (gossip.go).
			if time.Since(lastRecheck) >= gossipRecheck {
				lastRecheck = time.Now()
				step(func() error { return c.recheckKeptGossip(ctx) })
			}
			if err := subscribe(); err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}
