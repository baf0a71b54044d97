package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Expiry: PurgeExpired deletes what the TTL and the token epochs let go,
// in transactions of bounded size. Idle mailboxes go by PurgeIdle
// (idle.go).

const (
	// purgeChunk bounds the deletions of one PurgeExpired transaction, so
	// that purging a large backlog never holds up sends for long.
	purgeChunk = 1024
)

// PurgeExpired implements Store. A stored time is truncated to the
// granularity, so a message may go up to one granularity step earlier than
// its exact arrival time plus ttl. The work is split into transactions of
// at most purgeChunk arrivals, so sends keep flowing during a big purge;
// an error (a ctx cancelled between chunks included) stops it, keeping the
// chunks already committed and returning the messages they deleted.
func (s *Bolt) PurgeExpired(ctx context.Context, now time.Time, ttl time.Duration) (int, error) {
	cutoff := now.Add(-ttl)
	// Stored times are whole seconds: t < cutoff  <=>  t < ceil(cutoff).
	limit := cutoff.Unix()
	if cutoff.Nanosecond() > 0 {
		limit++
	}
	total := 0
	for {
		n, more := 0, false
		if err := s.do(ctx, purgeArrivals(limit, &n, &more)); err != nil {
			return total, fmt.Errorf("store: purge expired: %w", err)
		}
		total += n
		if !more {
			break
		}
	}
	// Spends expire on their own clock (the token epoch), not the TTL.
	spentLimit := now.Unix()
	for {
		more := false
		if err := s.do(ctx, purgeSpent(spentLimit, &more)); err != nil {
			return total, fmt.Errorf("store: purge expired: %w", err)
		}
		if !more {
			break
		}
	}
	return total, nil
}

// expiredKeys returns up to purgeChunk keys of an expiry bucket older than
// limit (copied), and whether the chunk is full.
func expiredKeys(b *bolt.Bucket, limit int64, size int) ([][]byte, bool, error) {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) != size {
			return nil, false, fmt.Errorf("%w: expiry key length %d", ErrCorrupt, len(k))
		}
		if decodeTimeKey(k) >= limit {
			break
		}
		if len(keys) == purgeChunk {
			return keys, true, nil
		}
		keys = append(keys, bytes.Clone(k))
	}
	return keys, false, nil
}

// purgeArrivals deletes up to purgeChunk arrivals older than limit, with
// their idempotency keys and the messages still stored under them.
func purgeArrivals(limit int64, n *int, more *bool) func(tx *txn) error {
	return func(tx *txn) error {
		arrivals, messages, mailboxes := tx.Bucket(bucketArrivals), tx.Bucket(bucketMessages), tx.Bucket(bucketMailboxes)
		keys, full, err := expiredKeys(arrivals, limit, arrivalKeySize)
		if err != nil {
			return err
		}
		// Mailbox counters are adjusted in memory and written once each.
		touched := map[[MailboxIDSize]byte]*mailboxRecord{}
		var (
			dropMsgs [][]byte
			slots    []uint32
			forget   []arrival
		)
		for _, k := range keys {
			a, err := decodeArrival(k, arrivals.Get(k))
			if err != nil {
				return err
			}
			forget = append(forget, a)
			mkey := k[8:]
			v := messages.Get(mkey)
			if v == nil {
				continue // acked: only the arrival is left
			}
			_, _, slot, sealed, err := decodeMessage(v)
			if err != nil {
				return err
			}
			size := uint64(len(sealed) - sealOverhead)
			dropMsgs = append(dropMsgs, mkey)
			slots = append(slots, slot)
			rec, ok := touched[a.rid]
			if !ok {
				r, err := getMailbox(tx.Tx, a.rid)
				if errors.Is(err, ErrNotFound) {
					continue // an orphan message: delete it, no counters to fix
				}
				if err != nil {
					return err
				}
				rec = &r
				touched[a.rid] = rec
			}
			if rec.count == 0 || rec.bytes < size {
				return fmt.Errorf("%w: mailbox counters below stored messages", ErrCorrupt)
			}
			rec.count--
			rec.bytes -= size
			tx.tot.messages--
			tx.tot.bytes -= int64(size)
		}
		for _, k := range keys {
			if err := arrivals.Delete(k); err != nil {
				return write(err)
			}
		}
		for _, k := range dropMsgs {
			if err := messages.Delete(k); err != nil {
				return write(err)
			}
		}
		for rid, rec := range touched {
			if err := mailboxes.Put(rid[:], rec.encode()); err != nil {
				return write(err)
			}
		}
		for _, a := range forget {
			// Only the key this arrival made: a file that (against every
			// write path) held the ID twice keeps the later one.
			if e, ok := tx.idem.get(a.rid, a.id); ok && e.seq == a.seq {
				tx.idem.del(a.rid, a.id)
			}
		}
		for _, slot := range slots {
			tx.keys.release(slot)
		}
		*n, *more = len(dropMsgs), full
		return nil
	}
}

// purgeSpent deletes up to purgeChunk spends whose Until is before limit.
func purgeSpent(limit int64, more *bool) func(tx *txn) error {
	return func(tx *txn) error {
		exp := tx.Bucket(bucketSpentExp)
		keys, full, err := expiredKeys(exp, limit, 8+SpendKeySize)
		if err != nil {
			return err
		}
		spent := tx.Bucket(bucketSpent)
		for _, k := range keys {
			if err := spent.Delete(k[8:]); err != nil {
				return write(err)
			}
			if err := exp.Delete(k); err != nil {
				return write(err)
			}
		}
		*more = full
		return nil
	}
}
