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
	"github.com/quicprochat/qpc/wire"
)

// Deferral (docs/storage.md). An envelope that cannot be processed yet is
// left on the server, unacknowledged, and read again at the next sync: a
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
