package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/wire"
)

// Deferral (docs/storage.md). An envelope that cannot be processed yet is
// left on the server, unacknowledged, and read again at the next sync
// (while following, when its conversation moves: retryDeferred below): a
// conversation message that reached the intro mailbox before its Welcome
// was processed, a message from an epoch whose commit has not arrived, or
// one whose processing failed for a passing reason (the network). Every
// envelope left so occupies the mailbox's quota on the server and is
// processed again at every sync, and the intro mailbox is public: so
// what is left is bounded, per mailbox, in count, bytes and time. Past
// the bounds the oldest envelopes of the least promising kind are
// dropped and acknowledged, which frees their room on the server.
// Nothing is deferred behind them: reading goes on past every deferred
// envelope, so a first contact's Welcome is processed when it arrives.

// Kinds of deferral, each with its own lifetime.
var (
	// errDeferUnknownGroup: a conversation message in the intro mailbox
	// for a conversation not joined (yet). Its Welcome is ahead of it in
	// the same mailbox, so it is joined within a sync or two; a stranger
	// with an account can send any number of these.
	errDeferUnknownGroup = fmt.Errorf("%w: a message for a conversation not joined", errDefer)
	// errDeferFutureEpoch: a member's message from an epoch whose commit
	// has not reached us.
	errDeferFutureEpoch = fmt.Errorf("%w: a message from an epoch not reached yet", errDefer)
)

const bucketDeferred = "deferred"

// Deferral bounds.
const (
	// maxDeferred and maxDeferredBytes bound the envelopes one mailbox
	// leaves on the server: far below the server's quota (10,000
	// envelopes, 256 MiB by default), so that the rest stays free for
	// what arrives next.
	maxDeferred      = 64
	maxDeferredBytes = 8 << 20
	// deferUnknownGroupFor is how long a message for a conversation not
	// joined waits for its Welcome.
	deferUnknownGroupFor = time.Hour
	// deferFutureEpochFor is how long a message from a future epoch
	// waits for its commit.
	deferFutureEpochFor = 24 * time.Hour
)

// Kinds in the order they are given up when a bound is reached.
const (
	deferKindUnknownGroup = "unknown-group"
	deferKindFutureEpoch  = "future-epoch"
	deferKindTransient    = "transient"
)

func deferKind(err error) string {
	switch {
	case errors.Is(err, errDeferUnknownGroup):
		return deferKindUnknownGroup
	case errors.Is(err, errDeferFutureEpoch):
		return deferKindFutureEpoch
	}
	return deferKindTransient
}

func deferRank(kind string) int {
	switch kind {
	case deferKindUnknownGroup:
		return 0
	case deferKindFutureEpoch:
		return 1
	}
	return 2
}

// deferLimit is how long an envelope of kind may be deferred; 0: until
// the server drops it or the count and byte bounds push it out.
func deferLimit(kind string) time.Duration {
	switch kind {
	case deferKindUnknownGroup:
		return deferUnknownGroupFor
	case deferKindFutureEpoch:
		return deferFutureEpochFor
	}
	return 0
}

// deferredRecord is one envelope left on the server, keyed like its seen
// mark (receive ID || message ID).
type deferredRecord struct {
	Kind  string
	Since time.Time // when it was first deferred
	Size  int       // its envelope's bytes
}

// deferEnvelope records that m, in mb, was deferred for cause, and
// enforces the bounds: what has waited past its kind's lifetime, and past
// the count and byte bounds the oldest envelopes of the kind given up
// first, are marked seen and acknowledged (m itself among them,
// perhaps).
func (c *Client) deferEnvelope(ctx context.Context, conn *protocol.Conn, mb mailboxRef, m protocol.Message, seenKey []byte, cause error) error {
	kind := deferKind(cause)
	now := c.opts.Now()
	prefix := mb.box.ReceiveID[:]
	var drop [][]byte
	err := c.store.Update(func(tx *state.Tx) error {
		var rec deferredRecord
		err := getJSON(tx, bucketDeferred, seenKey, &rec)
		if errors.Is(err, state.ErrNoEntry) {
			rec = deferredRecord{Since: now}
		} else if err != nil {
			return err
		}
		rec.Kind, rec.Size = kind, len(m.Envelope)
		if lim := deferLimit(kind); lim > 0 && now.Sub(rec.Since) > lim {
			drop = append(drop, seenKey)
			if err := tx.Delete(bucketDeferred, seenKey); err != nil {
				return err
			}
		} else if err := putJSON(tx, bucketDeferred, seenKey, &rec); err != nil {
			return err
		}
		type held struct {
			key []byte
			rec deferredRecord
		}
		var mine []held
		total := 0
		err = tx.ForEach(bucketDeferred, func(k, v []byte) error {
			if !bytes.HasPrefix(k, prefix) {
				return nil
			}
			var r deferredRecord
			if jsonUnmarshal(v, &r) != nil {
				r = deferredRecord{Kind: deferKindUnknownGroup} // unreadable: given up first
			}
			mine = append(mine, held{append([]byte(nil), k...), r})
			total += r.Size
			return nil
		})
		if err != nil {
			return err
		}
		slices.SortFunc(mine, func(a, b held) int {
			if d := deferRank(a.rec.Kind) - deferRank(b.rec.Kind); d != 0 {
				return d
			}
			return a.rec.Since.Compare(b.rec.Since)
		})
		for i, n := 0, len(mine); i < len(mine) && (n > maxDeferred || total > maxDeferredBytes); i++ {
			drop = append(drop, mine[i].key)
			n--
			total -= mine[i].rec.Size
		}
		for _, k := range drop {
			if err := tx.Delete(bucketDeferred, k); err != nil {
				return err
			}
			if err := tx.Put(bucketSeen, k, []byte{1}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || len(drop) == 0 {
		return err
	}
	ids := make([]wire.MessageID, 0, len(drop))
	for _, k := range drop {
		var id wire.MessageID
		copy(id[:], k[len(prefix):])
		ids = append(ids, id)
	}
	c.raiseLimited(Alarm{Kind: AlarmDropped, Detail: fmt.Sprintf("%d envelope(s) left for later in %s were dropped: they waited too long, or more were waiting than a mailbox keeps", len(drop), mb.role)})
	if _, err := conn.Ack(ctx, mb.box.mailbox(), ids); err != nil {
		return err // marked seen: acknowledged when delivered again
	}
	return c.store.Update(func(tx *state.Tx) error {
		for _, k := range drop {
			if err := tx.Put(bucketSeen, k, ackedMark(now)); err != nil {
				return err
			}
		}
		return nil
	})
}

// isDeferred reports whether the envelope whose seen key is key was
// deferred.
func (c *Client) isDeferred(key []byte) bool {
	held := false
	c.store.View(func(tx *state.Tx) error {
		_, err := tx.Get(bucketDeferred, key)
		held = err == nil
		return nil
	})
	return held
}

// forgetDeferred deletes the records of mb's deferred envelopes that a
// complete read of the mailbox no longer found (the server dropped them
// at the end of their lifetime).
func (c *Client) forgetDeferred(mb mailboxRef, present map[wire.MessageID]bool) error {
	prefix := mb.box.ReceiveID[:]
	return c.store.Update(func(tx *state.Tx) error {
		var gone [][]byte
		err := tx.ForEach(bucketDeferred, func(k, _ []byte) error {
			if len(k) != len(prefix)+wire.MessageIDSize || !bytes.HasPrefix(k, prefix) {
				return nil
			}
			var id wire.MessageID
			copy(id[:], k[len(prefix):])
			if !present[id] {
				gone = append(gone, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range gone {
			if err := tx.Delete(bucketDeferred, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// dropAlarms rate-limits the alarms for dropped envelopes and for
// envelopes whose sender key transparency does not show: garbage in the
// intro mailbox (anyone can send it, in anyone's name) would otherwise
// add one alarm an envelope to the local state. Past
// droppedAlarmsPerHour they are counted and reported in one alarm at the
// end of the sync (or, while following, at most once a minute).
type dropAlarms struct {
	window     time.Time // start of the current hour
	raised     int       // alarms raised in it
	suppressed int       // alarms not raised yet
	summarised time.Time // when the last summary was raised
}

const droppedAlarmsPerHour = 10

// raiseLimited raises a, or counts it once the hour's alarms are spent.
func (c *Client) raiseLimited(a Alarm) {
	now := c.opts.Now()
	d := &c.drops
	if now.Sub(d.window) >= time.Hour {
		d.window, d.raised = now, 0
	}
	if d.raised < droppedAlarmsPerHour {
		d.raised++
		c.raise(a)
		return
	}
	d.suppressed++
}

// summariseDropped raises one alarm for the drops not reported, unless
// one was raised within every.
func (c *Client) summariseDropped(every time.Duration) {
	d := &c.drops
	now := c.opts.Now()
	if d.suppressed == 0 || now.Sub(d.summarised) < every {
		return
	}
	n := d.suppressed
	d.suppressed, d.summarised = 0, now
	c.raise(Alarm{Kind: AlarmDropped, Detail: fmt.Sprintf("%d more envelopes were dropped: they could not be read, their sender did not match key transparency, or they waited too long", n)})
}

// Retrying while following (docs/protocol.md §11.4). Sync reads each
// mailbox whole, deferred envelopes included, at every sync; Follow's
// subscriptions deliver each envelope once. So while following, the
// deferred envelopes of a mailbox are read again when what they wait for
// may have come: when a conversation's epoch or branch moved (a commit
// applied, a fork switch, a rejoin, a conversation joined), those of the
// mailbox it receives at and of the intro mailbox (where a conversation's
// first messages may wait); and, once a minute, those deferred for a
// passing failure. The deferred bucket stays the record of what is left
// on the server: a crash before a retry loses nothing, the next Follow
// or Sync reads it all again.

// deferSweepEvery is how often, while following, envelopes deferred for
// a passing failure are read again.
const deferSweepEvery = time.Minute

// deferRetry is what Follow's retries of deferred envelopes go by (under
// op).
type deferRetry struct {
	// epochs is each conversation's epoch and epoch authenticator as
	// last saved; moved names those whose epoch or branch changed since
	// the last retry (a conversation not seen before counts as moved).
	epochs map[string]epochMark
	moved  map[string]bool
	// swept is when the envelopes deferred for a passing failure were
	// last read again.
	swept time.Time
}

// epochMark is a conversation's epoch and branch: its epoch number and
// epoch authenticator (RFC 9420 §8.7), which differs between two
// branches of one epoch number.
type epochMark struct {
	epoch uint64
	auth  string
}

// noteEpoch records g as the current state of conversation id (called
// wherever it is saved, saveGroup), and whether its epoch or branch
// moved.
func (c *Client) noteEpoch(id []byte, g *mls.Group) {
	m := epochMark{g.Epoch(), string(g.EpochAuthenticator())}
	k := string(id)
	if old, ok := c.retry.epochs[k]; ok && old == m {
		return
	}
	if c.retry.epochs == nil {
		c.retry.epochs = map[string]epochMark{}
	}
	if c.retry.moved == nil {
		c.retry.moved = map[string]bool{}
	}
	c.retry.epochs[k] = m
	c.retry.moved[k] = true
}

// settleEpochs forgets the moves recorded so far: a sync read every
// deferred envelope again, and a subscription's backlog delivers them all
// once more.
func (c *Client) settleEpochs() {
	c.retry.moved, c.retry.swept = nil, time.Now()
}

// retryDeferred reads again, while following, the deferred envelopes of
// the mailboxes where what they wait for may have come (see above). Only
// envelopes recorded as deferred are processed (what arrived meanwhile is
// the subscription's), at most maxDeferred a mailbox; another pass
// follows only when the last one processed some of them and moved a
// conversation again, so there are no more passes than envelopes
// deferred.
func (c *Client) retryDeferred(ctx context.Context) error {
	now := time.Now()
	sweep := now.Sub(c.retry.swept) >= deferSweepEvery
	for {
		moved := c.retry.moved
		c.retry.moved = nil
		if len(moved) == 0 && !sweep {
			return nil
		}
		var held []struct {
			key  []byte
			kind string
		}
		err := c.store.View(func(tx *state.Tx) error {
			return tx.ForEach(bucketDeferred, func(k, v []byte) error {
				var r deferredRecord
				if jsonUnmarshal(v, &r) != nil {
					r.Kind = deferKindUnknownGroup
				}
				held = append(held, struct {
					key  []byte
					kind string
				}{append([]byte(nil), k...), r.Kind})
				return nil
			})
		})
		if err != nil || len(held) == 0 {
			c.retry.swept = now
			return err
		}
		boxes, err := c.mailboxes()
		if err != nil {
			return err
		}
		processed := 0
		for _, mb := range boxes {
			some, transient := false, false
			for _, h := range held {
				if bytes.HasPrefix(h.key, mb.box.ReceiveID[:]) {
					some = true
					transient = transient || h.kind == deferKindTransient
				}
			}
			due := moved[string(mb.conv)] || mb.intro && len(moved) > 0 || sweep && transient
			if !some || !due {
				continue
			}
			n, err := c.drain(ctx, mb, true)
			processed += n
			if err != nil {
				return err
			}
		}
		if sweep {
			c.retry.swept, sweep = now, false
		}
		if processed == 0 {
			return nil
		}
	}
}
