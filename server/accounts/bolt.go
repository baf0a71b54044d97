package accounts

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/account"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bolt is the embedded Store: <dataDir>/accounts.db, one fsynced bbolt
// transaction per operation (logins are rare; no group commit needed).
// db.go has the layout.
type Bolt struct {
	db     *bolt.DB
	closed atomic.Bool
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating if needed) <dataDir>/accounts.db, mode 0600.
func OpenBolt(dataDir string) (*Bolt, error) {
	db, err := openDB(dataDir)
	if err != nil {
		return nil, fmt.Errorf("accounts: open: %w: %w", ErrStorage, err)
	}
	return &Bolt{db: db}, nil
}

// Close closes the database. It is idempotent.
func (b *Bolt) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	return nil
}

// storageErr classifies an error from a bbolt transaction: our sentinel
// errors pass unchanged, a closed database is ErrClosed, anything else is
// ErrStorage.
func storageErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrTaken), errors.Is(err, ErrAuth), errors.Is(err, ErrQuota),
		errors.Is(err, ErrNotFound), errors.Is(err, ErrTooManyDevices), errors.Is(err, ErrStorage),
		errors.Is(err, ErrMalformed), errors.Is(err, ErrPoolFull), errors.Is(err, ErrClosed):
		return err
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrStorage, err)
}

func (b *Bolt) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.closed.Load() {
		return ErrClosed
	}
	return nil
}

func (b *Bolt) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	return storageErr(b.db.Update(fn))
}

func (b *Bolt) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	return storageErr(b.db.View(fn))
}

// ---- accounts ----

// getAccount reads the account of cred; ok is false when there is none.
func getAccount(tx *bolt.Tx, cred CredID) (r accountRecord, ok bool, err error) {
	v := tx.Bucket(bucketAccounts).Get(cred[:])
	if v == nil {
		return r, false, nil
	}
	r, err = decodeAccount(v)
	return r, err == nil, err
}

// Account implements Store.
func (b *Bolt) Account(ctx context.Context, cred CredID) (StoredAccount, error) {
	var a StoredAccount
	err := b.view(ctx, func(tx *bolt.Tx) error {
		r, ok, err := getAccount(tx, cred)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		a = StoredAccount{Ref: r.id, Created: time.Unix(r.created, 0), Record: r.record}
		return nil
	})
	return a, err
}

// Credential implements Store.
func (b *Bolt) Credential(ctx context.Context, ref AccountRef) (CredID, error) {
	var c CredID
	err := b.view(ctx, func(tx *bolt.Tx) error {
		var err error
		c, err = credOf(tx, ref)
		return err
	})
	return c, err
}

// Register implements Store.
func (b *Bolt) Register(ctx context.Context, cred CredID, a StoredAccount, s NewSession) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		accounts, ids := tx.Bucket(bucketAccounts), tx.Bucket(bucketAccountIDs)
		if accounts.Get(cred[:]) != nil {
			return ErrTaken
		}
		if ids.Get(a.Ref[:]) != nil {
			// 2^-128 per pair: a collision means a broken random source.
			return fmt.Errorf("%w: account ID collision", ErrStorage)
		}
		r := accountRecord{id: a.Ref, created: a.Created.Unix(), record: a.Record}
		if err := accounts.Put(cred[:], r.encode()); err != nil {
			return err
		}
		if err := ids.Put(a.Ref[:], encodeAccountID(cred)); err != nil {
			return err
		}
		return issueSession(tx, a.Ref, s, math.MaxInt)
	})
}

// Login implements Store.
func (b *Bolt) Login(ctx context.Context, cred CredID, ref AccountRef, s NewSession, maxDevices int) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		// The account may have been deleted since LoginStart.
		r, ok, err := getAccount(tx, cred)
		if err != nil {
			return err
		}
		if !ok || r.id != ref {
			return ErrAuth
		}
		return issueSession(tx, ref, s, maxDevices)
	})
}

// issueSession creates or refreshes the session's device for the account
// and stores the session, revoking the device's previous ones: one
// session per device, so that revoking a device or logging in again
// leaves nothing behind. Runs inside the caller's write transaction.
func issueSession(tx *bolt.Tx, acct AccountRef, s NewSession, maxDevices int) error {
	devices := tx.Bucket(bucketDevices)
	dk := deviceKey(acct, s.Device)
	now := s.Now.Unix()
	dev := deviceRecord{created: now, lastUsed: now, name: s.DeviceName}
	if v := devices.Get(dk); v != nil {
		old, err := decodeDevice(v)
		if err != nil {
			return err
		}
		dev.created = old.created
		if err := deleteSessionsWithPrefix(tx, dk, nil); err != nil {
			return err
		}
	} else {
		n := 0
		c := devices.Cursor()
		for k, _ := c.Seek(acct[:]); k != nil && hasPrefix(k, acct[:]); k, _ = c.Next() {
			n++
		}
		if n >= maxDevices {
			return ErrTooManyDevices
		}
	}
	if err := devices.Put(dk, dev.encode()); err != nil {
		return err
	}
	rec := sessionRecord{account: acct, device: s.Device, expiry: s.Expiry.Unix(), lastUsed: now}
	if err := tx.Bucket(bucketSessions).Put(s.Hash[:], rec.encode()); err != nil {
		return err
	}
	return tx.Bucket(bucketAcctSession).Put(acctSessionKey(acct, s.Device, s.Hash), nil)
}

// ---- sessions and devices ----

// sessionIn looks a session up inside a transaction. Unknown and expired
// sessions are both ErrAuth.
//
// The lookup is keyed by SHA-256(token): the B-tree compares hashes, not
// tokens, in variable time, which tells a timing attacker at most how many
// leading bytes of some stored hash match the hash of a token of its
// choosing; that is no help in finding a token (it would need a preimage).
// So no further constant-time comparison is needed here.
func sessionIn(tx *bolt.Tx, h TokenHash, now time.Time) (sessionRecord, error) {
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

// Session implements Store.
func (b *Bolt) Session(ctx context.Context, h TokenHash, now time.Time) (StoredSession, error) {
	var r sessionRecord
	err := b.view(ctx, func(tx *bolt.Tx) error {
		var err error
		r, err = sessionIn(tx, h, now)
		return err
	})
	if err != nil {
		return StoredSession{}, err
	}
	return StoredSession{Account: r.account, Device: r.device, Expiry: time.Unix(r.expiry, 0), LastUsed: time.Unix(r.lastUsed, 0)}, nil
}

// TouchSession implements Store.
func (b *Bolt) TouchSession(ctx context.Context, h TokenHash, now, lastUsed time.Time) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		r, err := sessionIn(tx, h, now)
		if err != nil {
			return err // revoked meanwhile
		}
		r.lastUsed = lastUsed.Unix()
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
			d.lastUsed = lastUsed.Unix()
			return devices.Put(dk, d.encode())
		}
		return nil
	})
}

// Devices implements Store.
func (b *Bolt) Devices(ctx context.Context, acct AccountRef) ([]Device, error) {
	var out []Device
	err := b.view(ctx, func(tx *bolt.Tx) error {
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
	return out, err
}

// RevokeDevice implements Store.
func (b *Bolt) RevokeDevice(ctx context.Context, acct AccountRef, device account.DeviceID) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
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
}

// ChangePassword implements Store.
func (b *Bolt) ChangePassword(ctx context.Context, h TokenHash, now time.Time, record [account.RegistrationRecordSize]byte) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		r, err := sessionIn(tx, h, now)
		if err != nil {
			return err
		}
		cred, err := credOf(tx, r.account)
		if err != nil {
			return err
		}
		a, ok, err := getAccount(tx, cred)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		a.record = record
		if err := tx.Bucket(bucketAccounts).Put(cred[:], a.encode()); err != nil {
			return err
		}
		keep := [tokenHashSize]byte(h)
		return deleteSessionsWithPrefix(tx, r.account[:], &keep)
	})
}

// DeleteAccount implements Store.
func (b *Bolt) DeleteAccount(ctx context.Context, h TokenHash, now time.Time) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
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
}

// PurgeSessions implements Store.
func (b *Bolt) PurgeSessions(ctx context.Context, at time.Time) (int, error) {
	now := at.Unix()
	n := 0
	err := b.update(ctx, func(tx *bolt.Tx) error {
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
				var h TokenHash
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
	return n, err
}

// credOf returns the credential identifier of an account.
func credOf(tx *bolt.Tx, acct AccountRef) (CredID, error) {
	v := tx.Bucket(bucketAccountIDs).Get(acct[:])
	if v == nil {
		return CredID{}, ErrNotFound
	}
	return decodeAccountID(v)
}

// ---- quota ----

// ConsumeQuota implements Store.
func (b *Bolt) ConsumeQuota(ctx context.Context, acct AccountRef, epoch uint32, n, limit int) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
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
}

// QuotaUsed implements Store.
func (b *Bolt) QuotaUsed(ctx context.Context, acct AccountRef, epoch uint32) (int, error) {
	var used uint32
	err := b.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketQuota).Get(quotaKey(acct, epoch))
		if v == nil {
			return nil
		}
		var err error
		used, err = decodeQuota(v)
		return err
	})
	return int(used), err
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

// ---- KeyPackage pools ----

// AddKeyPackages implements Store.
func (b *Bolt) AddKeyPackages(ctx context.Context, acct AccountRef, kps [][]byte, limit int) (int, error) {
	var count int
	run := func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccountIDs).Get(acct[:]) == nil {
			return ErrNotFound
		}
		bk := tx.Bucket(bucketKeyPackages)
		var last uint64
		var err error
		count, last, err = poolOf(bk, acct)
		if err != nil || len(kps) == 0 {
			return err
		}
		if count+len(kps) > limit {
			return ErrPoolFull
		}
		if last > math.MaxUint64-uint64(len(kps)) {
			return fmt.Errorf("%w: KeyPackage sequence exhausted", ErrCorrupt)
		}
		for i, kp := range kps {
			if err := bk.Put(keyPackageKey(acct, last+1+uint64(i)), encodeKeyPackage(kp)); err != nil {
				return err
			}
		}
		count += len(kps)
		return nil
	}
	var err error
	if len(kps) == 0 {
		err = b.view(ctx, run) // a query: no write, no fsync
	} else {
		err = b.update(ctx, run)
	}
	return count, err
}

// poolOf counts the account's pool and returns the sequence number of
// its newest KeyPackage (0 when empty).
func poolOf(b *bolt.Bucket, acct AccountRef) (count int, last uint64, err error) {
	c := b.Cursor()
	for k, _ := c.Seek(acct[:]); k != nil && hasPrefix(k, acct[:]); k, _ = c.Next() {
		if len(k) != keyPackageKeySize {
			return 0, 0, ErrCorrupt
		}
		seq := binary.BigEndian.Uint64(k[accountIDSize:])
		if seq <= last {
			return 0, 0, ErrCorrupt // keys are in order; zero is never used
		}
		count, last = count+1, seq
	}
	return count, last, nil
}

// TakeKeyPackage implements Store. It is one write transaction whether
// or not it finds anything, so that neither the reply nor its cost tells
// an empty pool from an unknown username.
func (b *Bolt) TakeKeyPackage(ctx context.Context, cred CredID) ([]byte, error) {
	var kp []byte
	err := b.update(ctx, func(tx *bolt.Tx) error {
		a, ok, err := getAccount(tx, cred)
		if err != nil || !ok {
			return err
		}
		c := tx.Bucket(bucketKeyPackages).Cursor()
		k, v := c.Seek(a.id[:])
		if k == nil || !hasPrefix(k, a.id[:]) {
			return nil
		}
		if len(k) != keyPackageKeySize {
			return ErrCorrupt
		}
		if kp, err = decodeKeyPackage(v); err != nil {
			return err
		}
		return c.Delete()
	})
	return kp, err
}
