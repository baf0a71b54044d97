package accounts

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/quicprochat/qpc/account"
	bolt "go.etcd.io/bbolt"
)

// issueSession creates or refreshes device for the account and gives it a
// new session, revoking the device's previous ones: one session per
// device, so that revoking a device or logging in again leaves nothing
// behind. Runs inside the caller's write transaction.
func (s *Service) issueSession(tx *bolt.Tx, acct AccountRef, device account.DeviceID, name string, now time.Time) (Session, error) {
	devices := tx.Bucket(bucketDevices)
	dk := deviceKey(acct, device)
	dev := deviceRecord{created: coarse(now), lastUsed: coarse(now), name: name}
	if v := devices.Get(dk); v != nil {
		old, err := decodeDevice(v)
		if err != nil {
			return Session{}, err
		}
		dev.created = old.created
		if err := deleteSessionsWithPrefix(tx, dk, nil); err != nil {
			return Session{}, err
		}
	} else {
		n := 0
		c := devices.Cursor()
		for k, _ := c.Seek(acct[:]); k != nil && hasPrefix(k, acct[:]); k, _ = c.Next() {
			n++
		}
		if n >= s.opts.MaxDevices {
			return Session{}, ErrTooManyDevices
		}
	}
	if err := devices.Put(dk, dev.encode()); err != nil {
		return Session{}, err
	}

	var token account.Token
	rand.Read(token[:])
	h := hashToken(token)
	expiry := coarseUp(now.Add(s.opts.SessionTTL))
	rec := sessionRecord{account: acct, device: device, expiry: expiry, lastUsed: coarse(now)}
	if err := tx.Bucket(bucketSessions).Put(h[:], rec.encode()); err != nil {
		return Session{}, err
	}
	if err := tx.Bucket(bucketAcctSession).Put(acctSessionKey(acct, device, h), nil); err != nil {
		return Session{}, err
	}
	return Session{Token: token, Expiry: time.Unix(expiry, 0), Account: acct, Device: device}, nil
}

// sessionIn looks a session up inside a transaction. Unknown and expired
// sessions are both ErrAuth.
//
// The lookup is keyed by SHA-256(token): the B-tree compares hashes, not
// tokens, in variable time, which tells a timing attacker at most how many
// leading bytes of some stored hash match the hash of a token of its
// choosing; that is no help in finding a token (it would need a preimage).
// So no further constant-time comparison is needed here.
func sessionIn(tx *bolt.Tx, h [tokenHashSize]byte, now time.Time) (sessionRecord, error) {
	v := tx.Bucket(bucketSessions).Get(h[:])
	if v == nil {
		return sessionRecord{}, ErrAuth
	}
	r, err := decodeSession(v)
	if err != nil {
		return sessionRecord{}, err
	}
	if now.Unix() >= r.expiry {
		return sessionRecord{}, ErrAuth
	}
	return r, nil
}

// Authenticate returns the account and device of a session token.
// Unknown, revoked and expired tokens fail with ErrAuth. The session's and
// device's last-used times are kept to the hour, so at most one write per
// session per hour.
func (s *Service) Authenticate(ctx context.Context, token account.Token) (AccountRef, account.DeviceID, error) {
	h := hashToken(token)
	now := s.opts.Now()
	var r sessionRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		r, err = sessionIn(tx, h, now)
		return err
	})
	if err != nil {
		return AccountRef{}, account.DeviceID{}, fmt.Errorf("accounts: authenticate: %w", err)
	}
	if r.lastUsed < coarse(now) {
		err = s.update(ctx, func(tx *bolt.Tx) error {
			r, err := sessionIn(tx, h, now)
			if err != nil {
				return err // revoked meanwhile
			}
			r.lastUsed = coarse(now)
			if err := tx.Bucket(bucketSessions).Put(h[:], r.encode()); err != nil {
				return err
			}
			devices := tx.Bucket(bucketDevices)
			dk := deviceKey(r.account, r.device)
			if v := devices.Get(dk); v != nil {
				d, err := decodeDevice(v)
				if err != nil {
					return err
				}
				d.lastUsed = coarse(now)
				return devices.Put(dk, d.encode())
			}
			return nil
		})
		if err != nil {
			return AccountRef{}, account.DeviceID{}, fmt.Errorf("accounts: authenticate: %w", err)
		}
	}
	return r.account, r.device, nil
}

// Devices lists the account's devices, ordered by device ID.
func (s *Service) Devices(ctx context.Context, acct AccountRef) ([]Device, error) {
	var out []Device
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDevices).Cursor()
		for k, v := c.Seek(acct[:]); k != nil && hasPrefix(k, acct[:]); k, v = c.Next() {
			if len(k) != accountIDSize+account.DeviceIDSize {
				return ErrCorrupt
			}
			d, err := decodeDevice(v)
			if err != nil {
				return err
			}
			dev := Device{Name: d.name, Created: time.Unix(d.created, 0), LastUsed: time.Unix(d.lastUsed, 0)}
			copy(dev.ID[:], k[accountIDSize:])
			out = append(out, dev)
		}
		return nil
	})
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
	err := s.update(ctx, func(tx *bolt.Tx) error {
		devices := tx.Bucket(bucketDevices)
		dk := deviceKey(acct, device)
		if devices.Get(dk) == nil {
			return ErrNotFound
		}
		if err := deleteSessionsWithPrefix(tx, dk, nil); err != nil {
			return err
		}
		return devices.Delete(dk)
	})
	if err != nil {
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
	var cred [credIDSize]byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		r, err := sessionIn(tx, h, now)
		if err != nil {
			return err
		}
		cred, err = credOf(tx, r.account)
		return err
	})
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
	err = s.update(ctx, func(tx *bolt.Tx) error {
		r, err := sessionIn(tx, h, now)
		if err != nil {
			return err
		}
		cred, err := credOf(tx, r.account)
		if err != nil {
			return err
		}
		accounts := tx.Bucket(bucketAccounts)
		v := accounts.Get(cred[:])
		if v == nil {
			return ErrNotFound
		}
		a, err := decodeAccount(v)
		if err != nil {
			return err
		}
		a.record = rec
		if err := accounts.Put(cred[:], a.encode()); err != nil {
			return err
		}
		return deleteSessionsWithPrefix(tx, r.account[:], &h)
	})
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
	err := s.update(ctx, func(tx *bolt.Tx) error {
		r, err := sessionIn(tx, h, now)
		if err != nil {
			return err
		}
		cred, err := credOf(tx, r.account)
		if err != nil {
			return err
		}
		if err := deleteSessionsWithPrefix(tx, r.account[:], nil); err != nil {
			return err
		}
		if err := deletePrefix(tx.Bucket(bucketDevices), r.account[:]); err != nil {
			return err
		}
		if err := deletePrefix(tx.Bucket(bucketQuota), r.account[:]); err != nil {
			return err
		}
		if err := deletePrefix(tx.Bucket(bucketKeyPackages), r.account[:]); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAccountIDs).Delete(r.account[:]); err != nil {
			return err
		}
		return tx.Bucket(bucketAccounts).Delete(cred[:])
	})
	if err != nil {
		return fmt.Errorf("accounts: delete account: %w", err)
	}
	return nil
}

// PurgeExpired deletes expired sessions and returns how many. Expired
// sessions already fail Authenticate; this only reclaims their space. The
// server calls it now and then (hourly is plenty).
func (s *Service) PurgeExpired(ctx context.Context) (int, error) {
	now := s.opts.Now().Unix()
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		sessions, idx := tx.Bucket(bucketSessions), tx.Bucket(bucketAcctSession)
		type doomed struct {
			h   []byte
			key []byte
		}
		var del []doomed
		c := sessions.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			r, err := decodeSession(v)
			if err != nil {
				return err
			}
			if now >= r.expiry {
				var h [tokenHashSize]byte
				copy(h[:], k)
				del = append(del, doomed{h: h[:], key: acctSessionKey(r.account, r.device, h)})
			}
		}
		for _, d := range del {
			if err := sessions.Delete(d.h); err != nil {
				return err
			}
			if err := idx.Delete(d.key); err != nil {
				return err
			}
		}
		n = len(del)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("accounts: purge: %w", err)
	}
	return n, nil
}

// credOf returns the credential identifier of an account.
func credOf(tx *bolt.Tx, acct AccountRef) ([credIDSize]byte, error) {
	v := tx.Bucket(bucketAccountIDs).Get(acct[:])
	if v == nil {
		return [credIDSize]byte{}, ErrNotFound
	}
	return decodeAccountID(v)
}
