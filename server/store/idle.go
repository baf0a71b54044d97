package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Idle mailboxes (schema 4).
//
// Anyone holding a delivery token can create a mailbox. Messages expire;
// unless mailboxes expire too, what a stranger makes the server keep
// grows for ever. So each mailbox records the day its owner last used it
// (lastUsed: a Fetch, which Subscribe also reads through), and PurgeIdle
// deletes the mailboxes not used for longer than the idle TTL, with their
// messages, key slots and idempotency keys, as DeleteMailbox does.
//
// Only the owner's use counts, not sends to the mailbox: a send proves
// that somebody knows the send ID (an intro mailbox's is public in key
// transparency), not that anybody will ever read what it stores; the
// owner of a live mailbox fetches from it, and a mailbox nobody fetches
// from is storage kept for nobody.
//
// The day is recorded by the first Fetch of that day (UTC), in a write of
// its own; the other Fetches of the day only read the record and write
// nothing. A mailbox is deleted by the first PurgeIdle at least
// idle after the end of the day it was last used: between idle and
// idle + 1 day after its owner's last Fetch.

const day = 24 * 60 * 60 // seconds

// dayOf is the start (00:00 UTC) of the day of the Unix time sec.
func dayOf(sec int64) int64 {
	d := sec % day
	if d < 0 {
		d += day
	}
	return sec - d
}

// idleKey is a mailbox's key in the idle index: its last-use day, sortable,
// then its receive ID.
func idleKey(lastUsed int64, rid [MailboxIDSize]byte) []byte { return expiryKey(lastUsed, rid[:]) }

// setLastUsed moves the mailbox rid, whose record is rec, to the day today
// in its record and the idle index. Every error is a failed write.
func setLastUsed(tx *txn, rid [MailboxIDSize]byte, rec mailboxRecord, today int64) error {
	idle := tx.Bucket(bucketIdle)
	if err := idle.Delete(idleKey(rec.lastUsed, rid)); err != nil {
		return write(err)
	}
	rec.lastUsed = today
	if err := idle.Put(idleKey(today, rid), nil); err != nil {
		return write(err)
	}
	return write(tx.Bucket(bucketMailboxes).Put(rid[:], rec.encode()))
}

// touch records that the mailbox rid was used on the day today, unless a
// later day is recorded already (or the mailbox is gone). A failure is
// logged, not returned: the Fetch that asked for it has its messages, and
// the next Fetch tries again.
func (s *Bolt) touch(ctx context.Context, rid [MailboxIDSize]byte, today int64) {
	err := s.do(ctx, func(tx *txn) error {
		rec, err := getMailbox(tx.Tx, rid)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if rec.lastUsed >= today {
			return nil // another Fetch of the day was first
		}
		return setLastUsed(tx, rid, rec, today)
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("store: recording a mailbox's use failed; the next fetch tries again", "err", err)
	}
}

// PurgeIdle implements Store. It works in transactions of about
// purgeChunk deleted keys (a mailbox whose messages alone are more goes
// in one of its own), so sends keep flowing; an error (a ctx cancelled
// between chunks included) stops it, keeping the chunks committed. keep
// is called outside any transaction.
func (s *Bolt) PurgeIdle(ctx context.Context, now time.Time, idle time.Duration, keep func([MailboxIDSize]byte) bool, gone func([MailboxIDSize]byte)) (int, error) {
	if idle <= 0 {
		return 0, nil
	}
	cutoff := dayOf(now.Add(-idle).Unix())
	today := dayOf(now.Unix())
	total := 0
	for {
		cands, err := s.idleCandidates(ctx, cutoff)
		if err != nil {
			return total, fmt.Errorf("store: purge idle: %w", err)
		}
		if len(cands) == 0 {
			return total, nil
		}
		for i := range cands {
			cands[i].keep = keep != nil && keep(cands[i].rid)
		}
		var deleted [][MailboxIDSize]byte
		if err := s.do(ctx, purgeIdleOp(cands, cutoff, today, &deleted)); err != nil {
			return total, fmt.Errorf("store: purge idle: %w", err)
		}
		total += len(deleted)
		if gone != nil {
			for _, rid := range deleted {
				gone(rid)
			}
		}
	}
}

// idleCandidate is an entry of the idle index older than the cutoff.
type idleCandidate struct {
	lastUsed int64
	rid      [MailboxIDSize]byte
	keep     bool
}

// idleCandidates reads up to purgeChunk entries of the idle index older
// than cutoff, oldest first.
func (s *Bolt) idleCandidates(ctx context.Context, cutoff int64) ([]idleCandidate, error) {
	var out []idleCandidate
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketIdle).Cursor()
		for k, _ := c.First(); k != nil && len(out) < purgeChunk; k, _ = c.Next() {
			if len(k) != idleKeySize {
				return fmt.Errorf("%w: idle index key length %d", ErrCorrupt, len(k))
			}
			t := decodeTimeKey(k)
			if t >= cutoff {
				break
			}
			var cand idleCandidate
			cand.lastUsed = t
			copy(cand.rid[:], k[8:])
			out = append(out, cand)
		}
		return nil
	})
	return out, err
}

// purgeIdleOp deletes the candidates still idle (those to keep are moved
// to today instead), as many as fit in about purgeChunk deleted keys and
// at least one; the rest wait for the next chunk. An idle index entry
// that names no mailbox, or another day than the mailbox's record, is
// removed. All reads and checks come before the first write.
func purgeIdleOp(cands []idleCandidate, cutoff, today int64, deleted *[][MailboxIDSize]byte) func(tx *txn) error {
	return func(tx *txn) error {
		*deleted = (*deleted)[:0]
		var (
			dels    []*mailboxDeletion
			touches []idleCandidate
			recs    []mailboxRecord
			strays  [][]byte
			work    int
		)
		for _, c := range cands {
			if len(dels) > 0 && work >= purgeChunk {
				break
			}
			rec, err := getMailbox(tx.Tx, c.rid)
			switch {
			case errors.Is(err, ErrNotFound):
				strays = append(strays, idleKey(c.lastUsed, c.rid))
				continue
			case err != nil:
				return err
			case rec.lastUsed != c.lastUsed:
				// Not the record's own entry: moved since it was read
				// (a Fetch), or a stray left behind.
				if k := idleKey(rec.lastUsed, c.rid); tx.Bucket(bucketIdle).Get(k) == nil {
					return fmt.Errorf("%w: mailbox missing from the idle index", ErrCorrupt)
				}
				strays = append(strays, idleKey(c.lastUsed, c.rid))
				continue
			case rec.lastUsed >= cutoff:
				continue
			case c.keep:
				touches = append(touches, c)
				recs = append(recs, rec)
				continue
			}
			d, err := planDelete(tx, c.rid, rec)
			if err != nil {
				return err
			}
			dels = append(dels, d)
			work += d.work()
		}
		idle := tx.Bucket(bucketIdle)
		for _, k := range strays {
			if err := idle.Delete(k); err != nil {
				return write(err)
			}
		}
		for i, c := range touches {
			if err := setLastUsed(tx, c.rid, recs[i], today); err != nil {
				return err
			}
		}
		for _, d := range dels {
			if err := d.apply(tx); err != nil {
				return err
			}
			*deleted = append(*deleted, d.rid)
		}
		return nil
	}
}
