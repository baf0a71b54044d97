package client

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/state"
)

// Receipts. Delivery and read receipts are per-contact settings, off by
// default, and only for direct chats (a group receipt would tell every
// member when we read). A receipt never leaves at once: it is scheduled
// in the local state with a due time drawn from ReceiptDelay, so that
// its timing says little about when the message arrived or was read, and
// goes out through the outbox like any message once it is due (Sync and
// Follow release due receipts). Incoming receipts mark our own messages
// delivered or read in the history and are reported as EventReceipt.

// ReceiptDelay is the distribution of the delay before a receipt is
// sent: exponential with mean Mean, cut at Max.
type ReceiptDelay struct {
	Mean time.Duration // default 30 s
	Max  time.Duration // default 5 min
}

// DefaultReceiptDelay is the receipt delay unless Options says
// otherwise.
var DefaultReceiptDelay = ReceiptDelay{Mean: 30 * time.Second, Max: 5 * time.Minute}

// Draw returns one delay. The randomness is math/rand/v2's, seeded by
// the operating system: not predictable by the server.
func (d ReceiptDelay) Draw() time.Duration {
	return d.draw(rand.Float64())
}

// draw maps u in [0,1) to the delay by the inverse CDF.
func (d ReceiptDelay) draw(u float64) time.Duration {
	x := time.Duration(-math.Log1p(-u) * float64(d.Mean))
	if d.Max > 0 && x > d.Max {
		x = d.Max
	}
	return x
}

// CDF is the probability that a drawn delay is at most x.
func (d ReceiptDelay) CDF(x time.Duration) float64 {
	if x < 0 {
		return 0
	}
	if d.Max > 0 && x >= d.Max {
		return 1
	}
	return -math.Expm1(-float64(x) / float64(d.Mean))
}

func (c *Client) receiptDelay() ReceiptDelay {
	d := DefaultReceiptDelay
	if o := c.opts.ReceiptDelay; o != nil {
		if o.Mean > 0 {
			d.Mean = o.Mean
		}
		d.Max = o.Max
		if d.Max == 0 {
			d.Max = 10 * d.Mean
		}
	}
	return d
}

// Bucket names of the receipt state.
const (
	bucketSettings = "settings"  // keyed: per-contact and client settings
	bucketReceipts = "receipts"  // sequenced: scheduled receipts
	bucketUnread   = "unread"    // keyed by conversation ID: texts to acknowledge as read
	bucketDelivery = "delivered" // keyed by content ID: receipts for our own messages
)

// contactSettings are a contact's settings.
type contactSettings struct {
	DeliveryReceipts bool
	ReadReceipts     bool
}

func contactSettingsKey(handle string) []byte { return []byte("contact/" + handle) }

func getContactSettings(tx *state.Tx, handle string) (contactSettings, error) {
	var s contactSettings
	err := getJSON(tx, bucketSettings, contactSettingsKey(handle), &s)
	if errors.Is(err, state.ErrNoEntry) {
		err = nil
	}
	return s, err
}

// SetReceipts turns delivery and read receipts to handle on or off. Both
// are off until set.
func (c *Client) SetReceipts(handle string, delivery, read bool) error {
	if err := content.ValidHandle(handle); err != nil {
		return fmt.Errorf("%q is not a valid handle", handle)
	}
	c.op.Lock()
	defer c.op.Unlock()
	return c.store.Update(func(tx *state.Tx) error {
		if !read {
			if err := c.dropUnread(tx, handle); err != nil {
				return err
			}
		}
		return putJSON(tx, bucketSettings, contactSettingsKey(handle), contactSettings{DeliveryReceipts: delivery, ReadReceipts: read})
	})
}

// Receipts reports whether delivery and read receipts to handle are on.
func (c *Client) Receipts(handle string) (delivery, read bool, err error) {
	c.op.Lock()
	defer c.op.Unlock()
	var s contactSettings
	err = c.store.View(func(tx *state.Tx) error {
		var err error
		s, err = getContactSettings(tx, handle)
		return err
	})
	return s.DeliveryReceipts, s.ReadReceipts, err
}

// dropUnread forgets the texts waiting for a read receipt in the direct
// chats with handle.
func (c *Client) dropUnread(tx *state.Tx, handle string) error {
	var ids [][]byte
	err := tx.ForEach(bucketConvs, func(k, v []byte) error {
		r := new(convRecord)
		if err := jsonUnmarshal(v, r); err != nil {
			return err
		}
		if r.Kind == content.ConvDirect && r.Peer == handle {
			ids = append(ids, append([]byte(nil), k...))
		}
		return nil
	})
	for _, id := range ids {
		if err == nil {
			err = tx.Delete(bucketUnread, id)
		}
	}
	return err
}

// receiptEntry is a scheduled receipt.
type receiptEntry struct {
	Conv      []byte
	To        string
	Type      content.ReceiptType
	IDs       [][content.IDSize]byte
	Processed time.Time // when the message arrived, or was read
	Due       time.Time
}

// schedule queues a receipt for r's peer, due after a random delay.
func (c *Client) scheduleReceipt(tx *state.Tx, r *convRecord, typ content.ReceiptType, ids [][content.IDSize]byte, now time.Time) error {
	e := receiptEntry{Conv: r.ID, To: r.Peer, Type: typ, IDs: ids, Processed: now, Due: now.Add(c.receiptDelay().Draw())}
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = tx.Append(bucketReceipts, raw)
	return err
}

// onText is called in the transaction that records a text from sender in
// r: it schedules the delivery receipt and remembers the text for the read
// receipt, as the settings for sender say.
func (c *Client) onText(tx *state.Tx, r *convRecord, sender string, id [content.IDSize]byte, now time.Time) {
	if r.Kind != content.ConvDirect || sender != r.Peer {
		return
	}
	s, err := getContactSettings(tx, sender)
	if err == nil && s.DeliveryReceipts && (c.opts.KeepReceipt == nil || c.opts.KeepReceipt(sender)) {
		err = c.scheduleReceipt(tx, r, content.ReceiptDelivered, [][content.IDSize]byte{id}, now)
	}
	if err == nil && s.ReadReceipts {
		var unread [][content.IDSize]byte
		if err = getJSON(tx, bucketUnread, r.ID, &unread); errors.Is(err, state.ErrNoEntry) {
			err = nil
		}
		if err == nil && len(unread) < content.MaxReceiptIDs {
			err = putJSON(tx, bucketUnread, r.ID, append(unread, id))
		}
	}
	if err != nil {
		c.log.Warn("could not schedule a receipt", "err", err)
	}
}

// StrayReceipt sends, at once, a delivery receipt to handle in the direct
// chat with it, for a content ID handle never sent (its client counts it
// for no message and reports nothing). It exists only for the
// traffic-analysis lab: lab/population plays Martiny et al.'s simulated
// traffic, in which a share of receipts go from a random user to a random
// user (Options.KeepReceipt drops the receipts they replace). On
// the wire it is a receipt like any other: encrypted in the chat's MLS
// group, sealed, padded, paid with a token.
func (c *Client) StrayReceipt(ctx context.Context, handle string) error {
	c.op.Lock()
	defer c.op.Unlock()
	r, err := c.findConv(handle)
	if err != nil {
		return err
	}
	if r.Kind != content.ConvDirect || !r.Active || r.Left {
		return fmt.Errorf("stray receipt: %s is not an active direct chat", handle)
	}
	var id [content.IDSize]byte
	if _, err := crand.Read(id[:]); err != nil {
		return err
	}
	m := &content.Message{Kind: content.KindReceipt, Receipt: &content.Receipt{Type: content.ReceiptDelivered, IDs: [][content.IDSize]byte{id}}}
	if err := c.sendContent(ctx, r, m); err != nil {
		return err
	}
	return c.flush(ctx)
}

// MarkRead records that the user has read the conversation with target (a
// contact's handle, a group's name, or a conversation's hex ID) up to now.
// Its local read mark moves to the end of the history, so that Unread
// counts none of its texts so far; and for a direct chat whose contact has
// read receipts on, one read receipt for every text not yet acknowledged
// is scheduled, after the same random delay as delivery receipts (groups
// send no receipts). A direct chat is one chat per contact: when both
// sides started one, every conversation with the contact is marked.
func (c *Client) MarkRead(target string) error {
	c.op.Lock()
	defer c.op.Unlock()
	r, err := c.resolve(target)
	if err != nil {
		return err
	}
	chats := []*convRecord{r}
	if r.Kind == content.ConvDirect {
		all, err := c.allConvs()
		if err != nil {
			return err
		}
		chats = slices.DeleteFunc(all, func(o *convRecord) bool { return o.Kind != content.ConvDirect || o.Peer != r.Peer })
	}
	now := c.opts.Now()
	return c.store.Update(func(tx *state.Tx) error {
		base, err := readBaseline(tx)
		if err != nil {
			return err
		}
		from := base
		for _, o := range chats {
			m, err := getReadMark(tx, o.ID, base)
			if err != nil {
				return err
			}
			from = min(from, m)
		}
		end, err := historyEnd(tx, from)
		if err != nil {
			return err
		}
		for _, o := range chats {
			if err := putJSON(tx, bucketReadMarks, o.ID, readMark{History: end}); err != nil {
				return err
			}
			if o.Kind != content.ConvDirect {
				continue
			}
			if err := c.scheduleRead(tx, o, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// scheduleRead schedules one read receipt for the texts of the direct
// chat r not yet acknowledged, if read receipts to its peer are on.
func (c *Client) scheduleRead(tx *state.Tx, r *convRecord, now time.Time) error {
	var unread [][content.IDSize]byte
	err := getJSON(tx, bucketUnread, r.ID, &unread)
	if errors.Is(err, state.ErrNoEntry) || (err == nil && len(unread) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := tx.Delete(bucketUnread, r.ID); err != nil {
		return err
	}
	s, err := getContactSettings(tx, r.Peer)
	if err != nil || !s.ReadReceipts {
		return err
	}
	return c.scheduleReceipt(tx, r, content.ReceiptRead, unread, now)
}

// Read marks. A conversation's read mark is the history entry (its
// sequence number in the history bucket) up to which the user has seen it:
// the texts from others after it are unread. MarkRead moves it; Unread
// counts from it. Marks are local reading state: no receipt (MarkRead
// schedules those apart, and only where they are on), never sent to the
// server. A backup with the history carries them, renumbered as the
// history is (restoreReadMarks).
const bucketReadMarks = "read-marks" // keyed by conversation ID, and readBaselineKey

// readBaselineKey holds the end of the history when read marks began to be
// kept, set by the first Unread or MarkRead of a state: a conversation
// without a mark of its own is read up to there, so that the texts stored
// before (when nothing recorded what the user read) do not all count as
// unread.
var readBaselineKey = []byte("baseline")

// readMark is the value of a read-mark entry.
type readMark struct {
	History uint64 // the sequence number of the last history entry read
}

// readBaseline returns the baseline, setting it to the end of the history
// if it is not set yet.
func readBaseline(tx *state.Tx) (uint64, error) {
	var m readMark
	err := getJSON(tx, bucketReadMarks, readBaselineKey, &m)
	if !errors.Is(err, state.ErrNoEntry) {
		return m.History, err
	}
	if m.History, err = historyEnd(tx, 0); err != nil {
		return 0, err
	}
	return m.History, putJSON(tx, bucketReadMarks, readBaselineKey, m)
}

// getReadMark returns the read mark of the conversation id, or base if it
// has none.
func getReadMark(tx *state.Tx, id []byte, base uint64) (uint64, error) {
	var m readMark
	err := getJSON(tx, bucketReadMarks, id, &m)
	if errors.Is(err, state.ErrNoEntry) {
		return base, nil
	}
	return m.History, err
}

// historyEnd is the sequence number of the newest history entry, at least
// after (where the caller knows the history reaches).
func historyEnd(tx *state.Tx, after uint64) (uint64, error) {
	end := after
	err := tx.ForEachSeq(bucketHistory, after, func(seq uint64, _ []byte) error {
		end = seq
		return nil
	})
	return end, err
}

// Unread counts, per conversation (by hex ID, as Conversation.ID), the
// texts from others recorded after the conversation's read mark; the
// conversations with none are left out. The first call on a state without
// read marks sets their baseline (readBaselineKey), and counts nothing.
func (c *Client) Unread() (map[string]int, error) {
	c.op.Lock()
	defer c.op.Unlock()
	out := map[string]int{}
	fresh := false
	err := c.store.View(func(tx *state.Tx) error {
		var base readMark
		err := getJSON(tx, bucketReadMarks, readBaselineKey, &base)
		if errors.Is(err, state.ErrNoEntry) {
			fresh = true
			return nil
		}
		if err != nil {
			return err
		}
		marks := map[string]uint64{}
		from := base.History
		err = tx.ForEach(bucketReadMarks, func(k, v []byte) error {
			var m readMark
			if err := jsonUnmarshal(v, &m); err != nil {
				return err
			}
			if !bytes.Equal(k, readBaselineKey) {
				marks[string(k)] = m.History
				from = min(from, m.History)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.ForEachSeq(bucketHistory, from, func(seq uint64, v []byte) error {
			var h historyEntry
			if err := jsonUnmarshal(v, &h); err != nil {
				return err
			}
			mark, ok := marks[string(h.Conv)]
			if !ok {
				mark = base.History
			}
			if seq > mark && h.Event.Kind == EventMessage && h.Event.From != c.prof.Handle {
				out[hex.EncodeToString(h.Conv)]++
			}
			return nil
		})
	})
	if err == nil && fresh {
		err = c.store.Update(func(tx *state.Tx) error {
			_, err := readBaseline(tx)
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("counting unread messages: %w", err)
	}
	return out, nil
}

// nextReceipt is the due time of the earliest scheduled receipt.
func (c *Client) nextReceipt() (time.Time, bool) {
	var next time.Time
	err := c.store.View(func(tx *state.Tx) error {
		return tx.ForEachSeq(bucketReceipts, 0, func(_ uint64, v []byte) error {
			var e receiptEntry
			if err := jsonUnmarshal(v, &e); err != nil {
				return err
			}
			if next.IsZero() || e.Due.Before(next) {
				next = e.Due
			}
			return nil
		})
	})
	return next, err == nil && !next.IsZero()
}

// releaseReceipts moves the receipts that are due into the outbox (the
// caller flushes). Receipts of the same kind due together for the same
// conversation leave as one message.
func (c *Client) releaseReceipts(ctx context.Context) error {
	now := c.opts.Now()
	type key struct {
		conv string
		typ  content.ReceiptType
	}
	due := map[key][]uint64{}
	ids := map[key][][content.IDSize]byte{}
	var order []key
	err := c.store.View(func(tx *state.Tx) error {
		return tx.ForEachSeq(bucketReceipts, 0, func(seq uint64, v []byte) error {
			var e receiptEntry
			if err := jsonUnmarshal(v, &e); err != nil {
				return err
			}
			if e.Due.After(now) {
				return nil
			}
			k := key{string(e.Conv), e.Type}
			if due[k] == nil {
				order = append(order, k)
			}
			due[k] = append(due[k], seq)
			if len(ids[k])+len(e.IDs) <= content.MaxReceiptIDs {
				ids[k] = append(ids[k], e.IDs...)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	var firstErr error
	for _, k := range order {
		r, err := c.getConv([]byte(k.conv))
		if err == nil && r != nil && r.Active && !r.Left {
			err = c.sendContent(ctx, r, &content.Message{Kind: content.KindReceipt, Receipt: &content.Receipt{Type: k.typ, IDs: ids[k]}})
			if err == nil {
				// Reported so that front ends can show it; At is when the
				// receipt was released from the schedule into the outbox.
				c.pending = append(c.pending, Event{
					Kind: EventReceipt, Conv: r.display(), ConvID: hex.EncodeToString(r.ID), Group: r.Kind == content.ConvGroup,
					From: c.prof.Handle, Status: k.typ.String(), At: now, IDs: hexIDs(ids[k]),
					Text: fmt.Sprintf("you acknowledged %d message(s) as %s", len(ids[k]), k.typ),
				})
			}
		}
		if err != nil {
			// A receipt that cannot be encrypted now is dropped rather than
			// retried at every operation: receipts are best effort.
			c.log.Debug("dropping a receipt", "err", err)
			if firstErr == nil {
				firstErr = err
			}
		}
		if err := c.store.Update(func(tx *state.Tx) error {
			for _, seq := range due[k] {
				if err := tx.DeleteSeq(bucketReceipts, seq); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return firstErr
}

// deliveryState is what the receipts for one of our messages said.
type deliveryState struct {
	Delivered time.Time
	Read      time.Time
}

// onReceipt records a receipt from sender in r and reports it.
func (c *Client) onReceipt(tx *state.Tx, r *convRecord, sender string, rc *content.Receipt) {
	now := c.opts.Now()
	n := 0
	for _, id := range rc.IDs {
		var d deliveryState
		err := getJSON(tx, bucketDelivery, id[:], &d)
		if err != nil {
			continue // not a message we sent
		}
		switch rc.Type {
		case content.ReceiptDelivered:
			if d.Delivered.IsZero() {
				d.Delivered = now
			}
		case content.ReceiptRead:
			if d.Read.IsZero() {
				d.Read = now
			}
			if d.Delivered.IsZero() {
				d.Delivered = now
			}
		}
		if putJSON(tx, bucketDelivery, id[:], d) == nil {
			n++
		}
	}
	if n == 0 {
		return
	}
	verb := "received"
	if rc.Type == content.ReceiptRead {
		verb = "read"
	}
	c.pending = append(c.pending, Event{
		Kind: EventReceipt, Conv: r.display(), ConvID: hex.EncodeToString(r.ID), Group: r.Kind == content.ConvGroup,
		From: sender, Status: rc.Type.String(), At: now, IDs: hexIDs(rc.IDs),
		Text: fmt.Sprintf("%s %s %d of your messages", sender, verb, n),
	})
}

func hexIDs(ids [][content.IDSize]byte) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = hex.EncodeToString(id[:])
	}
	return out
}

// sentMessage records a text of ours, so that receipts for it are
// accepted.
func sentMessage(tx *state.Tx, id [content.IDSize]byte) error {
	return putJSON(tx, bucketDelivery, id[:], deliveryState{})
}

// annotate sets the delivery status of our own messages in ev.
func (c *Client) annotate(tx *state.Tx, ev []Event) {
	for i := range ev {
		e := &ev[i]
		if e.Kind != EventMessage || e.From != c.prof.Handle || e.ID == "" {
			continue
		}
		id, err := hex.DecodeString(e.ID)
		if err != nil {
			continue
		}
		var d deliveryState
		getJSON(tx, bucketDelivery, id, &d)
		e.Status = "sent" // no receipt (yet)
		switch {
		case !d.Read.IsZero():
			e.Status = content.ReceiptRead.String()
		case !d.Delivered.IsZero():
			e.Status = content.ReceiptDelivered.String()
		}
	}
}
