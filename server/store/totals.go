package store

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Totals are store-wide sums for metrics: nothing per mailbox.
type Totals struct {
	Mailboxes uint64
	Messages  uint64 // messages held, all mailboxes
	Bytes     uint64 // their envelope bytes
}

// totalsDelta is one write transaction's change to the totals.
type totalsDelta struct{ mailboxes, messages, bytes int64 }

// Totals returns the store-wide sums. They are kept in memory: summed
// once by Open from the mailbox records, then changed by each write
// transaction as it commits. A call reads no record, so a metrics scrape
// costs the same whatever the number of mailboxes.
func (s *Bolt) Totals(ctx context.Context) (Totals, error) {
	if err := ctx.Err(); err != nil {
		return Totals{}, fmt.Errorf("store: totals: %w", err)
	}
	if s.shut.Load() {
		return Totals{}, fmt.Errorf("store: totals: %w", ErrClosed)
	}
	s.totMu.Lock()
	defer s.totMu.Unlock()
	return s.totals, nil
}

// addTotals applies a committed transaction's change.
func (s *Bolt) addTotals(d totalsDelta) {
	if d == (totalsDelta{}) {
		return
	}
	s.totMu.Lock()
	defer s.totMu.Unlock()
	s.totals.Mailboxes = uint64(int64(s.totals.Mailboxes) + d.mailboxes)
	s.totals.Messages = uint64(int64(s.totals.Messages) + d.messages)
	s.totals.Bytes = uint64(int64(s.totals.Bytes) + d.bytes)
}

// sumTotals sums the mailbox records (each carries its mailbox's count
// and bytes for the quota): a pass over the mailboxes, once, at Open.
func sumTotals(tx *bolt.Tx) (Totals, error) {
	var t Totals
	err := tx.Bucket(bucketMailboxes).ForEach(func(_, v []byte) error {
		rec, err := decodeMailbox(v)
		if err != nil {
			return err
		}
		t.Mailboxes++
		t.Messages += rec.count
		t.Bytes += rec.bytes
		return nil
	})
	return t, err
}
