package accounts

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/quicprochat/qpc/account"
)

// newSession makes a session for device of acct: a fresh random token,
// returned to the caller, and what the store keeps of it (its hash, the
// device's entry, coarse times). The store revokes the device's previous
// sessions when it stores it: one session per device, so that revoking a
// device or logging in again leaves nothing behind.
func (s *Service) newSession(acct AccountRef, device account.DeviceID, name string, now time.Time) (Session, NewSession) {
	var token account.Token
	rand.Read(token[:])
	expiry := time.Unix(coarseUp(now.Add(s.opts.SessionTTL)), 0)
	ns := NewSession{Hash: hashToken(token), Device: device, DeviceName: name, Now: time.Unix(coarse(now), 0), Expiry: expiry}
	return Session{Token: token, Expiry: expiry, Account: acct, Device: device}, ns
}

// Authenticate returns the account and device of a session token.
// Unknown, revoked and expired tokens fail with ErrAuth. The session's and
// device's last-used times are kept to the hour, so at most one write per
// session per hour.
func (s *Service) Authenticate(ctx context.Context, token account.Token) (AccountRef, account.DeviceID, error) {
	h := hashToken(token)
	now := s.opts.Now()
	if err := s.check(ctx); err != nil {
		return AccountRef{}, account.DeviceID{}, err
	}
	r, err := s.store.Session(ctx, h, now)
	if err != nil {
		return AccountRef{}, account.DeviceID{}, fmt.Errorf("accounts: authenticate: %w", err)
	}
	if r.LastUsed.Unix() < coarse(now) {
		if err := s.store.TouchSession(ctx, h, now, time.Unix(coarse(now), 0)); err != nil {
			return AccountRef{}, account.DeviceID{}, fmt.Errorf("accounts: authenticate: %w", err)
		}
	}
	return r.Account, r.Device, nil
}

// Devices lists the account's devices, ordered by device ID.
func (s *Service) Devices(ctx context.Context, acct AccountRef) ([]Device, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	out, err := s.store.Devices(ctx, acct)
	if err != nil {
		return nil, fmt.Errorf("accounts: devices: %w", err)
	}
	return out, nil
}

// DeviceList returns the account's devices as a DeviceList body.
func (s *Service) DeviceList(ctx context.Context, acct AccountRef) (account.DeviceList, error) {
	devs, err := s.Devices(ctx, acct)
	if err != nil {
		return account.DeviceList{}, err
	}
	l := account.DeviceList{Devices: make([]account.DeviceInfo, len(devs))}
	for i, d := range devs {
		l.Devices[i] = account.DeviceInfo{ID: d.ID, Name: d.Name, Created: uint64(d.Created.Unix()), LastUsed: uint64(d.LastUsed.Unix())}
	}
	return l, nil
}

// RevokeDevice removes a device from the account and deletes its
// sessions; its token fails Authenticate from then on. A device may
// revoke itself. ErrNotFound if the account has no such device.
func (s *Service) RevokeDevice(ctx context.Context, acct AccountRef, device account.DeviceID) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.store.RevokeDevice(ctx, acct, device); err != nil {
		return fmt.Errorf("accounts: revoke device: %w", err)
	}
	return nil
}

// ChangePasswordStart is RegisterStart for the account of a valid session:
// a fresh registration of the same credential identifier (RFC 9807 §8,
// "Handling password changes"). It returns the serialized
// RegistrationResponse.
//
// Errors: ErrAuth, ErrRateLimited, ErrMalformed, ErrNotFound, ErrStorage,
// ErrClosed, or the context's error.
func (s *Service) ChangePasswordStart(ctx context.Context, token account.Token, request []byte) ([]byte, error) {
	h := hashToken(token)
	now := s.opts.Now()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	r, err := s.store.Session(ctx, h, now)
	if err != nil {
		return nil, fmt.Errorf("accounts: change password: %w", err)
	}
	cred, err := s.store.Credential(ctx, r.Account)
	if err != nil {
		return nil, fmt.Errorf("accounts: change password: %w", err)
	}
	if !s.limits.takeLogin(now) {
		return nil, fmt.Errorf("accounts: change password: %w", ErrRateLimited)
	}
	resp, err := s.registrationResponse(cred, request)
	if err != nil {
		return nil, fmt.Errorf("accounts: change password: %w", err)
	}
	return resp, nil
}

// ChangePasswordFinish replaces the account's registration record with
// the new one (RFC 9807 §8). Every session of the account except the one
// making the change is revoked: whoever knew the old password may have
// logged in with it, and changing the password must lock them out. The
// other devices stay listed and log in again with the new password.
//
// Errors: ErrAuth, ErrMalformed, ErrNotFound, ErrStorage, ErrClosed, or
// the context's error.
func (s *Service) ChangePasswordFinish(ctx context.Context, token account.Token, record []byte) error {
	rec, err := s.parseRecord(record)
	if err != nil {
		return fmt.Errorf("accounts: change password: %w", err)
	}
	h := hashToken(token)
	now := s.opts.Now()
	if err := s.check(ctx); err != nil {
		return err
	}
	err = s.store.ChangePassword(ctx, h, now, rec)
	if err != nil {
		return fmt.Errorf("accounts: change password: %w", err)
	}
	return nil
}

// DeleteAccount deletes the session's account: its registration record,
// devices, sessions, quota counts and KeyPackage pool. The username
// becomes free.
//
// Errors: ErrAuth, ErrNotFound, ErrStorage, ErrClosed, or the context's
// error.
func (s *Service) DeleteAccount(ctx context.Context, token account.Token) error {
	h := hashToken(token)
	now := s.opts.Now()
	if err := s.check(ctx); err != nil {
		return err
	}
	err := s.store.DeleteAccount(ctx, h, now)
	if err != nil {
		return fmt.Errorf("accounts: delete account: %w", err)
	}
	return nil
}

// PurgeExpired deletes expired sessions and returns how many. Expired
// sessions already fail Authenticate; this only reclaims their space. The
// server calls it now and then (hourly is plenty).
func (s *Service) PurgeExpired(ctx context.Context) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	n, err := s.store.PurgeSessions(ctx, s.opts.Now())
	if err != nil {
		return 0, fmt.Errorf("accounts: purge: %w", err)
	}
	return n, nil
}
