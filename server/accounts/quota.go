package accounts

import (
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ConsumeQuota takes n tokens from the account's allowance of limit tokens
// for epoch, durably: the count is committed (fsync) before it returns,
// so a crash cannot hand out an allowance twice. It is all or nothing: if
// fewer than n remain, nothing is taken and the error is ErrQuota.
//
// Only the count per account and epoch is stored, never what was issued.
// Counts of epochs before epoch-1 are deleted in the same transaction (the
// previous epoch is kept for requests that straddle the rollover), so the
// table holds at most two rows per account.
//
// Errors: ErrQuota, ErrNotFound (no such account), ErrStorage, ErrClosed,
// or the context's error.
func (s *Service) ConsumeQuota(ctx context.Context, acct AccountRef, epoch uint32, n int, limit int) error {
	if n <= 0 || limit < 0 {
		return fmt.Errorf("accounts: consume quota: n = %d, limit = %d", n, limit)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccountIDs).Get(acct[:]) == nil {
			return ErrNotFound
		}
		q := tx.Bucket(bucketQuota)
		key := quotaKey(acct, epoch)
		var used uint32
		if v := q.Get(key); v != nil {
			var err error
			if used, err = decodeQuota(v); err != nil {
				return err
			}
		}
		if int64(used)+int64(n) > int64(limit) {
			return ErrQuota
		}
		if err := q.Put(key, encodeQuota(used+uint32(n))); err != nil {
			return err
		}
		return purgeOldEpochs(q, acct, epoch)
	})
	if err != nil {
		return fmt.Errorf("accounts: consume quota: %w", err)
	}
	return nil
}

// QuotaUsed returns how many tokens the account took in epoch.
func (s *Service) QuotaUsed(ctx context.Context, acct AccountRef, epoch uint32) (int, error) {
	var used uint32
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketQuota).Get(quotaKey(acct, epoch))
		if v == nil {
			return nil
		}
		var err error
		used, err = decodeQuota(v)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("accounts: quota: %w", err)
	}
	return int(used), nil
}

func purgeOldEpochs(q *bolt.Bucket, acct AccountRef, epoch uint32) error {
	if epoch < 2 {
		return nil
	}
	var doomed [][]byte
	c := q.Cursor()
	for k, _ := c.Seek(acct[:]); k != nil && hasPrefix(k, acct[:]); k, _ = c.Next() {
		if len(k) != accountIDSize+4 {
			return ErrCorrupt
		}
		if binary.BigEndian.Uint32(k[accountIDSize:]) >= epoch-1 {
			break // keys are in epoch order
		}
		doomed = append(doomed, append([]byte(nil), k...))
	}
	for _, k := range doomed {
		if err := q.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
