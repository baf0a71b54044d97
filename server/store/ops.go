package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The operations of Store. Reads run in read-only transactions of their
// own (view), concurrently with the writer; writes are ops of the
// group-commit writer (do, writer.go), so each is durable when it returns.

// view runs a read-only transaction, mapping a closed database to ErrClosed.
func (s *Bolt) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.shut.Load() {
		return ErrClosed
	}
	err := s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// CreateMailbox implements Store.
func (s *Bolt) CreateMailbox(ctx context.Context, m Mailbox, spend *Spend) error {
	rec := mailboxRecord{
		owner:    m.OwnerKey,
		sendID:   m.SendID,
		created:  s.coarse(m.Created),
		nextSeq:  1,
		lastUsed: dayOf(m.Created.Unix()),
	}
	err := s.do(ctx, func(tx *txn) error {
		mb, si := tx.Bucket(bucketMailboxes), tx.Bucket(bucketSendIDs)
		if mb.Get(m.ReceiveID[:]) != nil || si.Get(m.SendID[:]) != nil {
			return ErrExists
		}
		if err := checkSpend(tx.Tx, spend); err != nil {
			return err
		}
		if err := recordSpend(tx.Tx, spend); err != nil {
			return err
		}
		if err := mb.Put(m.ReceiveID[:], rec.encode()); err != nil {
			return write(err)
		}
		if err := tx.Bucket(bucketIdle).Put(idleKey(rec.lastUsed, m.ReceiveID), nil); err != nil {
			return write(err)
		}
		if err := si.Put(m.SendID[:], encodeSendRecord(m.ReceiveID)); err != nil {
			return write(err)
		}
		tx.tot.mailboxes++
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: create mailbox: %w", err)
	}
	return nil
}

// Mailbox implements Store.
func (s *Bolt) Mailbox(ctx context.Context, receiveID [MailboxIDSize]byte) (Mailbox, error) {
	var m Mailbox
	err := s.view(ctx, func(tx *bolt.Tx) error {
		rec, err := getMailbox(tx, receiveID)
		if err != nil {
			return err
		}
		m = Mailbox{ReceiveID: receiveID, SendID: rec.sendID, OwnerKey: rec.owner, Created: fromUnix(rec.created), LastUsed: fromUnix(rec.lastUsed)}
		return nil
	})
	if err != nil {
		return Mailbox{}, fmt.Errorf("store: mailbox: %w", err)
	}
	return m, nil
}

// Put implements Store. The message's arrival time is the argument now
// truncated to Options.TimeGranularity. A duplicate is answered without touching quota:
// the message was accepted once, so the retry must succeed the same way.
func (s *Bolt) Put(ctx context.Context, sendID [MailboxIDSize]byte, id [MessageIDSize]byte, envelope []byte, q Quota, now time.Time, spend *Spend) (PutResult, error) {
	if len(envelope) > s.maxEnv {
		return PutResult{}, fmt.Errorf("store: put: %w", ErrTooLarge)
	}
	var res PutResult
	err := s.do(ctx, s.putOp(sendID, id, envelope, q, now, spend, &res))
	if err != nil {
		return PutResult{}, fmt.Errorf("store: put: %w", err)
	}
	return res, nil
}

// putOp builds Put's transaction body; the encoding and sealing happen
// here, in the caller's goroutine, so the single writer does as little as
// possible: it only picks the key's slot.
func (s *Bolt) putOp(sendID [MailboxIDSize]byte, id [MessageIDSize]byte, envelope []byte, q Quota, now time.Time, spend *Spend, res *PutResult) func(tx *txn) error {
	received := s.coarse(now)
	key := newMessageKey()
	value, sealErr := sealMessage(&key, id, received, envelope)
	size := uint64(len(envelope))
	return func(tx *txn) error {
		if sealErr != nil {
			return sealErr
		}
		rid, err := lookupSendID(tx.Tx, sendID)
		if err != nil {
			return err
		}
		mbox, err := getMailbox(tx.Tx, rid)
		if errors.Is(err, ErrNotFound) {
			// The send index names a mailbox that is not there.
			return fmt.Errorf("%w: dangling send index", ErrCorrupt)
		}
		if err != nil {
			return err
		}
		if e, ok := tx.idem.get(rid, id); ok {
			*res = PutResult{ReceiveID: rid, Seq: e.seq, Duplicate: true}
			return nil
		}
		if q.MaxMessages > 0 && mbox.count+1 > uint64(q.MaxMessages) {
			return ErrQuotaCount
		}
		if q.MaxBytes > 0 && mbox.bytes+size > uint64(q.MaxBytes) {
			return ErrQuotaBytes
		}
		if err := checkSpend(tx.Tx, spend); err != nil {
			return err
		}
		if err := recordSpend(tx.Tx, spend); err != nil {
			return err
		}
		seq := mbox.nextSeq
		mbox.nextSeq++
		mbox.count++
		mbox.bytes += size

		slot, err := tx.keys.alloc(&key)
		if err != nil {
			return write(err)
		}
		clear(key[:])
		encodeSlot(value[messageADSize:], slot)
		mkey := messageKey(rid, seq)
		if err := tx.Bucket(bucketMessages).Put(mkey, value); err != nil {
			return write(err)
		}
		if err := tx.Bucket(bucketArrivals).Put(expiryKey(received, mkey), id[:]); err != nil {
			return write(err)
		}
		if err := tx.Bucket(bucketMailboxes).Put(rid[:], mbox.encode()); err != nil {
			return write(err)
		}
		tx.idem.put(rid, id, idemEntry{seq: seq, received: received})
		tx.tot.messages++
		tx.tot.bytes += int64(size)
		*res = PutResult{ReceiveID: rid, Seq: seq}
		return nil
	}
}

// Spend implements Store: an operation of its own in the group-commit
// writer, so it is durable when it returns, and two Spends of one key in
// one batch see each other (the second is ErrSpent).
func (s *Bolt) Spend(ctx context.Context, spend *Spend) error {
	if spend == nil {
		return nil
	}
	err := s.do(ctx, func(tx *txn) error {
		if err := checkSpend(tx.Tx, spend); err != nil {
			return err
		}
		return recordSpend(tx.Tx, spend)
	})
	if err != nil {
		return fmt.Errorf("store: spend: %w", err)
	}
	return nil
}

// Fetch implements Store. It returns what is stored: messages past their
// TTL stay visible until PurgeExpired (which the server runs periodically)
// deletes them. now is the day the mailbox was used: the first Fetch of a
// day (UTC) records it, one write per mailbox per day (touch, idle.go).
// A limit <= 0 returns no messages, and more reports whether any follow
// after.
//
// A message whose key is gone is skipped. Usually it was acknowledged
// while this read ran (its slot is zeroed, or already another message's,
// as soon as the Ack commits, while this read still sees the message):
// to the caller that is the same as reading just after the Ack. If it is
// still stored, its key was lost (Stats.Unreadable, and an error logged):
// it cannot be delivered, and blocking the messages behind it would help
// nobody; it goes at expiry.
func (s *Bolt) Fetch(ctx context.Context, receiveID [MailboxIDSize]byte, after uint64, limit int, now time.Time) ([]Message, bool, error) {
	var (
		msgs   []Message
		more   bool
		failed []unopened
	)
	today := dayOf(now.Unix())
	stale := false
	err := s.view(ctx, func(tx *bolt.Tx) error {
		rec, err := getMailbox(tx, receiveID)
		if err != nil {
			return err
		}
		stale = rec.lastUsed < today
		if after == math.MaxUint64 {
			return nil
		}
		if limit > 0 {
			msgs = make([]Message, 0, min(limit, 64))
		}
		c := tx.Bucket(bucketMessages).Cursor()
		for k, v := c.Seek(messageKey(receiveID, after+1)); k != nil && bytes.HasPrefix(k, receiveID[:]); k, v = c.Next() {
			if len(msgs) >= limit {
				more = true
				break
			}
			if len(k) != messageKeySize {
				return fmt.Errorf("%w: message key length %d", ErrCorrupt, len(k))
			}
			id, received, slot, sealed, err := decodeMessage(v)
			if err != nil {
				return err
			}
			// Opening copies the envelope out of bbolt's memory, which
			// is only valid inside the transaction.
			env, ok := s.open(v, slot, sealed)
			if !ok {
				failed = append(failed, unopened{key: bytes.Clone(k), record: bytes.Clone(v[:messageHeaderSize])})
				continue
			}
			msgs = append(msgs, Message{
				Seq:        binary.BigEndian.Uint64(k[MailboxIDSize:]),
				ID:         id,
				ReceivedAt: fromUnix(received),
				Envelope:   env,
			})
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("store: fetch: %w", err)
	}
	if len(failed) > 0 {
		s.checkUnopened(failed)
	}
	if stale {
		// The owner's first Fetch of the day: record it (idle.go).
		s.touch(ctx, receiveID, today)
	}
	return msgs, more, nil
}

// unopened is a message Fetch could not open: its key and record header.
type unopened struct{ key, record []byte }

// open unseals a message record's envelope with its slot's key.
func (s *Bolt) open(record []byte, slot uint32, sealed []byte) ([]byte, bool) {
	key, ok := s.keys.key(slot)
	if !ok {
		return nil, false
	}
	env, err := unseal(&key, record[:messageADSize], sealed)
	clear(key[:])
	return env, err == nil
}

// checkUnopened looks again, in a fresh read, for the messages a Fetch
// could not open. One acknowledged (or deleted) since is gone, or its
// record changed: nothing is wrong. One that is still stored, unchanged,
// has lost its key.
func (s *Bolt) checkUnopened(failed []unopened) {
	lost := 0
	_ = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMessages)
		for _, f := range failed {
			if v := b.Get(f.key); len(v) >= messageHeaderSize && bytes.Equal(v[:messageHeaderSize], f.record) {
				lost++
			}
		}
		return nil
	})
	if lost > 0 {
		s.unreadable.Add(uint64(lost))
		s.log.Error("store: stored messages cannot be opened: their key slot is empty or holds another key (was the key-slot file replaced or damaged?); they are skipped and go at expiry", "messages", lost)
	}
}

// Ack implements Store. The idempotency keys stay (until PurgeExpired), so
// a sender retrying an acked message still gets Duplicate, not a second
// delivery. An unknown mailbox is ErrNotFound.
func (s *Bolt) Ack(ctx context.Context, receiveID [MailboxIDSize]byte, ids [][MessageIDSize]byte) (int, error) {
	if len(ids) == 0 {
		// Nothing to write: spare the writer an empty fsync.
		err := s.view(ctx, func(tx *bolt.Tx) error {
			_, err := getMailbox(tx, receiveID)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("store: ack: %w", err)
		}
		return 0, nil
	}
	var n int
	err := s.do(ctx, func(tx *txn) error {
		mbox, err := getMailbox(tx.Tx, receiveID)
		if err != nil {
			return err
		}
		var (
			victims [][]byte
			slots   []uint32
			freed   uint64
			seen    = make(map[uint64]bool, len(ids))
		)
		messages := tx.Bucket(bucketMessages)
		for _, id := range ids {
			e, ok := tx.idem.get(receiveID, id)
			if !ok || seen[e.seq] {
				continue
			}
			seen[e.seq] = true
			mkey := messageKey(receiveID, e.seq)
			mv := messages.Get(mkey)
			if mv == nil {
				continue // acked or purged before
			}
			mid, _, slot, sealed, err := decodeMessage(mv)
			if err != nil {
				return err
			}
			if mid != id {
				return fmt.Errorf("%w: idempotency key points to another message", ErrCorrupt)
			}
			victims = append(victims, mkey)
			slots = append(slots, slot)
			freed += uint64(len(sealed) - sealOverhead)
		}
		if len(victims) == 0 {
			n = 0
			return nil
		}
		if mbox.count < uint64(len(victims)) || mbox.bytes < freed {
			return fmt.Errorf("%w: mailbox counters below stored messages", ErrCorrupt)
		}
		mbox.count -= uint64(len(victims))
		mbox.bytes -= freed
		// The arrivals stay: they hold the idempotency keys until
		// PurgeExpired, and for an acked message it skips the delete.
		for _, k := range victims {
			if err := messages.Delete(k); err != nil {
				return write(err)
			}
		}
		if err := tx.Bucket(bucketMailboxes).Put(receiveID[:], mbox.encode()); err != nil {
			return write(err)
		}
		// Their keys are zeroed once this transaction has committed.
		for _, slot := range slots {
			tx.keys.release(slot)
		}
		tx.tot.messages -= int64(len(victims))
		tx.tot.bytes -= int64(freed)
		n = len(victims)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: ack: %w", err)
	}
	return n, nil
}

// DeleteMailbox implements Store. It removes the mailbox in one
// transaction; its size is bounded by the mailbox quota (messages) and the
// TTL (arrivals).
func (s *Bolt) DeleteMailbox(ctx context.Context, receiveID [MailboxIDSize]byte) error {
	err := s.do(ctx, func(tx *txn) error {
		mbox, err := getMailbox(tx.Tx, receiveID)
		if err != nil {
			return err
		}
		// Plan first (refusing corrupt records before any write), then
		// delete.
		d, err := planDelete(tx, receiveID, mbox)
		if err != nil {
			return err
		}
		return d.apply(tx)
	})
	if err != nil {
		return fmt.Errorf("store: delete mailbox: %w", err)
	}
	return nil
}

// mailboxDeletion is everything a mailbox's deletion removes, gathered by
// planDelete before the first write.
type mailboxDeletion struct {
	rid               [MailboxIDSize]byte
	rec               mailboxRecord
	msgKeys, arrivals [][]byte
	slots             []uint32
	dropSendID        bool
}

// work is the number of keys the deletion deletes.
func (d *mailboxDeletion) work() int { return 3 + len(d.msgKeys) + len(d.arrivals) }

// planDelete gathers what deleting the mailbox rid (whose record is rec)
// removes: its messages and their key slots, its arrivals (idempotency
// keys), its send index entry and its idle index entry. It only reads;
// keys are copied because deleting moves bbolt's memory.
func planDelete(tx *txn, rid [MailboxIDSize]byte, rec mailboxRecord) (*mailboxDeletion, error) {
	d := &mailboxDeletion{rid: rid, rec: rec}
	c := tx.Bucket(bucketMessages).Cursor()
	for k, v := c.Seek(rid[:]); k != nil && bytes.HasPrefix(k, rid[:]); k, v = c.Next() {
		if len(k) != messageKeySize {
			return nil, fmt.Errorf("%w: message key length %d", ErrCorrupt, len(k))
		}
		_, _, slot, _, err := decodeMessage(v)
		if err != nil {
			return nil, err
		}
		d.msgKeys = append(d.msgKeys, bytes.Clone(k))
		d.slots = append(d.slots, slot)
	}
	// Every arrival of the mailbox is in the index, which names its key.
	for id, e := range tx.idem.boxes[rid] {
		d.arrivals = append(d.arrivals, arrival{rid: rid, seq: e.seq, received: e.received, id: id}.key())
	}
	if v := tx.Bucket(bucketSendIDs).Get(rec.sendID[:]); v != nil {
		// Only drop the index if it is ours; anything else would be a
		// corrupt index we must not make worse.
		if back, err := decodeSendRecord(v); err == nil && back == rid {
			d.dropSendID = true
		}
	}
	return d, nil
}

// apply deletes what d gathered; every error is a failed write, fatal to
// the transaction. The key slots are zeroed once it has committed.
func (d *mailboxDeletion) apply(tx *txn) error {
	for _, del := range []struct {
		bucket []byte
		keys   [][]byte
	}{
		{bucketMessages, d.msgKeys},
		{bucketArrivals, d.arrivals},
		{bucketIdle, [][]byte{idleKey(d.rec.lastUsed, d.rid)}},
	} {
		b := tx.Bucket(del.bucket)
		for _, k := range del.keys {
			if err := b.Delete(k); err != nil {
				return write(err)
			}
		}
	}
	if d.dropSendID {
		if err := tx.Bucket(bucketSendIDs).Delete(d.rec.sendID[:]); err != nil {
			return write(err)
		}
	}
	if err := tx.Bucket(bucketMailboxes).Delete(d.rid[:]); err != nil {
		return write(err)
	}
	tx.idem.drop(d.rid)
	for _, slot := range d.slots {
		tx.keys.release(slot)
	}
	tx.tot.mailboxes--
	tx.tot.messages -= int64(d.rec.count)
	tx.tot.bytes -= int64(d.rec.bytes)
	return nil
}

// checkSpend refuses a spend key already in the spent set. Callers check
// before writing anything, so a refusal never aborts the rest of a batch.
func checkSpend(tx *bolt.Tx, spend *Spend) error {
	if spend == nil {
		return nil
	}
	if tx.Bucket(bucketSpent).Get(spend.Key[:]) != nil {
		return ErrSpent
	}
	return nil
}

// recordSpend adds a spend key to the spent set and its expiry index.
func recordSpend(tx *bolt.Tx, spend *Spend) error {
	if spend == nil {
		return nil
	}
	until := spend.Until.Unix()
	v := make([]byte, 9)
	v[0] = recordV1
	binary.BigEndian.PutUint64(v[1:], uint64(until))
	if err := tx.Bucket(bucketSpent).Put(spend.Key[:], v); err != nil {
		return write(err)
	}
	return write(tx.Bucket(bucketSpentExp).Put(expiryKey(until, spend.Key[:]), nil))
}
