package pgaccounts_test

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/accounts/pgaccounts"
)

// alternate is an accounts.Store that sends each call to the next of two
// stores on one database, as a client's requests land on whichever node.
type alternate struct {
	nodes [2]*pgaccounts.Store
	n     atomic.Uint64
}

func (a *alternate) next() *pgaccounts.Store { return a.nodes[a.n.Add(1)%2] }

func (a *alternate) Account(ctx context.Context, c accounts.CredID) (accounts.StoredAccount, error) {
	return a.next().Account(ctx, c)
}
func (a *alternate) Credential(ctx context.Context, r accounts.AccountRef) (accounts.CredID, error) {
	return a.next().Credential(ctx, r)
}
func (a *alternate) Register(ctx context.Context, c accounts.CredID, sa accounts.StoredAccount, s accounts.NewSession) error {
	return a.next().Register(ctx, c, sa, s)
}
func (a *alternate) Login(ctx context.Context, c accounts.CredID, r accounts.AccountRef, s accounts.NewSession, max int) error {
	return a.next().Login(ctx, c, r, s, max)
}
func (a *alternate) Session(ctx context.Context, h accounts.TokenHash, now time.Time) (accounts.StoredSession, error) {
	return a.next().Session(ctx, h, now)
}
func (a *alternate) TouchSession(ctx context.Context, h accounts.TokenHash, now, last time.Time) error {
	return a.next().TouchSession(ctx, h, now, last)
}
func (a *alternate) Devices(ctx context.Context, r accounts.AccountRef) ([]accounts.Device, error) {
	return a.next().Devices(ctx, r)
}
func (a *alternate) RevokeDevice(ctx context.Context, r accounts.AccountRef, d account.DeviceID) error {
	return a.next().RevokeDevice(ctx, r, d)
}
func (a *alternate) ChangePassword(ctx context.Context, h accounts.TokenHash, now time.Time, rec [account.RegistrationRecordSize]byte) error {
	return a.next().ChangePassword(ctx, h, now, rec)
}
func (a *alternate) DeleteAccount(ctx context.Context, h accounts.TokenHash, now time.Time) error {
	return a.next().DeleteAccount(ctx, h, now)
}
func (a *alternate) PurgeSessions(ctx context.Context, now time.Time) (int, error) {
	return a.next().PurgeSessions(ctx, now)
}
func (a *alternate) ConsumeQuota(ctx context.Context, r accounts.AccountRef, e uint32, n, limit int) error {
	return a.next().ConsumeQuota(ctx, r, e, n, limit)
}
func (a *alternate) QuotaUsed(ctx context.Context, r accounts.AccountRef, e uint32) (int, error) {
	return a.next().QuotaUsed(ctx, r, e)
}
func (a *alternate) AddKeyPackages(ctx context.Context, r accounts.AccountRef, kps [][]byte, limit int) (int, error) {
	return a.next().AddKeyPackages(ctx, r, kps, limit)
}
func (a *alternate) TakeKeyPackage(ctx context.Context, c accounts.CredID) ([]byte, error) {
	return a.next().TakeKeyPackage(ctx, c)
}

// Close closes both nodes: the suite's Closed subtest checks that every
// later call fails.
func (a *alternate) Close() error {
	return errors.Join(a.nodes[0].Close(), a.nodes[1].Close())
}
