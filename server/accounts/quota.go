package accounts

import (
	"context"
	"fmt"
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
	if err := s.check(ctx); err != nil {
		return err
	}
	err := s.store.ConsumeQuota(ctx, acct, epoch, n, limit)
	if err != nil {
		return fmt.Errorf("accounts: consume quota: %w", err)
	}
	return nil
}

// QuotaUsed returns how many tokens the account took in epoch.
func (s *Service) QuotaUsed(ctx context.Context, acct AccountRef, epoch uint32) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	used, err := s.store.QuotaUsed(ctx, acct, epoch)
	if err != nil {
		return 0, fmt.Errorf("accounts: quota: %w", err)
	}
	return used, nil
}
