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

// Totals sums the mailbox records in one read transaction. It costs a
// pass over the mailboxes (not the messages: each record carries its
// mailbox's count and bytes for the quota), so callers should cache it.
func (s *Bolt) Totals(ctx context.Context) (Totals, error) {
	var t Totals
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMailboxes).ForEach(func(_, v []byte) error {
			rec, err := decodeMailbox(v)
			if err != nil {
				return err
			}
			t.Mailboxes++
			t.Messages += rec.count
			t.Bytes += rec.bytes
			return nil
		})
	})
	if err != nil {
		return Totals{}, fmt.Errorf("store: totals: %w", err)
	}
	return t, nil
}
