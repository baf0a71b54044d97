package pgaccounts

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/server/accounts"
)

// ---- accounts ----

// Account implements accounts.Store.
func (s *Store) Account(ctx context.Context, cred accounts.CredID) (accounts.StoredAccount, error) {
	if err := s.check(ctx); err != nil {
		return accounts.StoredAccount{}, err
	}
	var ref, record []byte
	var created int64
	err := s.pool.QueryRow(ctx, "SELECT account_ref, created, record FROM accounts WHERE cred_id = $1", cred[:]).Scan(&ref, &created, &record)
	if errors.Is(err, pgx.ErrNoRows) {
		return accounts.StoredAccount{}, accounts.ErrNotFound
	}
	if err != nil {
		return accounts.StoredAccount{}, s.classify(ctx, err)
	}
	a := accounts.StoredAccount{Created: unix(created)}
	if err := into(a.Ref[:], ref); err != nil {
		return accounts.StoredAccount{}, err
	}
	if err := into(a.Record[:], record); err != nil {
		return accounts.StoredAccount{}, err
	}
	return a, nil
}

// Credential implements accounts.Store.
func (s *Store) Credential(ctx context.Context, ref accounts.AccountRef) (accounts.CredID, error) {
	var c accounts.CredID
	if err := s.check(ctx); err != nil {
		return c, err
	}
	var b []byte
	err := s.pool.QueryRow(ctx, "SELECT cred_id FROM accounts WHERE account_ref = $1", ref[:]).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, accounts.ErrNotFound
	}
	if err != nil {
		return c, s.classify(ctx, err)
	}
	return c, into(c[:], b)
}

// Register implements accounts.Store. The insert names the credential
// as its conflict: a concurrent registration of the same credential
// waits for the first one's outcome and then inserts nothing (ErrTaken);
// a taken AccountRef is a unique violation, an ErrStorage error.
func (s *Store) Register(ctx context.Context, cred accounts.CredID, a accounts.StoredAccount, ns accounts.NewSession) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO accounts (cred_id, account_ref, created, record) VALUES ($1, $2, $3, $4)
			ON CONFLICT (cred_id) DO NOTHING`, cred[:], a.Ref[:], a.Created.Unix(), a.Record[:])
		if isUniqueViolation(err) {
			// 2^-128 per pair: a collision means a broken random source.
			return fmt.Errorf("%w: account ID collision", accounts.ErrStorage)
		}
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return accounts.ErrTaken
		}
		return issueSession(ctx, tx, a.Ref, ns, math.MaxInt)
	})
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// lockAccount takes the lock of the account's row, the first step of
// every change to an account, and returns its AccountRef; ok is false
// when there is no such account.
func lockAccount(ctx context.Context, tx pgx.Tx, cred accounts.CredID) (ref accounts.AccountRef, ok bool, err error) {
	var b []byte
	err = tx.QueryRow(ctx, "SELECT account_ref FROM accounts WHERE cred_id = $1 FOR UPDATE", cred[:]).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return ref, false, nil
	}
	if err != nil {
		return ref, false, err
	}
	return ref, true, into(ref[:], b)
}

// lockRef is lockAccount by AccountRef; an account that is not there is
// accounts.ErrNotFound.
func lockRef(ctx context.Context, tx pgx.Tx, ref accounts.AccountRef) error {
	var one int
	err := tx.QueryRow(ctx, "SELECT 1 FROM accounts WHERE account_ref = $1 FOR UPDATE", ref[:]).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return accounts.ErrNotFound
	}
	return err
}

// Login implements accounts.Store.
func (s *Store) Login(ctx context.Context, cred accounts.CredID, ref accounts.AccountRef, ns accounts.NewSession, maxDevices int) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		// The account may have been deleted, or registered anew, since
		// LoginStart.
		got, ok, err := lockAccount(ctx, tx, cred)
		if err != nil {
			return err
		}
		if !ok || got != ref {
			return accounts.ErrAuth
		}
		return issueSession(ctx, tx, ref, ns, maxDevices)
	})
}

// issueSession creates or refreshes the session's device and stores the
// session, deleting the device's previous one (one session per device).
// The caller holds the account's lock (or has just created it).
func issueSession(ctx context.Context, tx pgx.Tx, ref accounts.AccountRef, ns accounts.NewSession, maxDevices int) error {
	var n int
	var known bool
	if err := tx.QueryRow(ctx, `SELECT count(*), coalesce(bool_or(device_id = $2), false)
		FROM account_devices WHERE account_ref = $1`, ref[:], ns.Device[:]).Scan(&n, &known); err != nil {
		return err
	}
	if !known && n >= maxDevices {
		return accounts.ErrTooManyDevices
	}
	now := ns.Now.Unix()
	if known {
		if _, err := tx.Exec(ctx, "DELETE FROM account_sessions WHERE account_ref = $1 AND device_id = $2", ref[:], ns.Device[:]); err != nil {
			return err
		}
	}
	// A known device keeps its created, takes the new name.
	if _, err := tx.Exec(ctx, `INSERT INTO account_devices (account_ref, device_id, name, created, last_used) VALUES ($1, $2, $3, $4, $4)
		ON CONFLICT (account_ref, device_id) DO UPDATE SET name = excluded.name, last_used = excluded.last_used`,
		ref[:], ns.Device[:], []byte(ns.DeviceName), now); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO account_sessions (token_hash, account_ref, device_id, expiry, last_used) VALUES ($1, $2, $3, $4, $5)`,
		ns.Hash[:], ref[:], ns.Device[:], ns.Expiry.Unix(), now)
	return err
}

// ---- sessions and devices ----

// sessionRow reads the session under h if it is valid at now.
//
// The lookup is keyed by SHA-256(token): the index compares hashes, not
// tokens, in variable time, which tells a timing attacker at most how
// many leading bytes of some stored hash match the hash of a token of its
// choosing; that is no help in finding a token (it would need a
// preimage), so no constant-time comparison is needed (as in bolt.go).
func sessionRow(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, h accounts.TokenHash, now time.Time, lock string) (accounts.StoredSession, error) {
	var ref, dev []byte
	var expiry, lastUsed int64
	err := q.QueryRow(ctx, `SELECT account_ref, device_id, expiry, last_used FROM account_sessions
		WHERE token_hash = $1 AND expiry > $2`+lock, h[:], now.Unix()).Scan(&ref, &dev, &expiry, &lastUsed)
	if errors.Is(err, pgx.ErrNoRows) {
		return accounts.StoredSession{}, accounts.ErrAuth
	}
	if err != nil {
		return accounts.StoredSession{}, err
	}
	ss := accounts.StoredSession{Expiry: unix(expiry), LastUsed: unix(lastUsed)}
	if err := into(ss.Account[:], ref); err != nil {
		return accounts.StoredSession{}, err
	}
	if err := into(ss.Device[:], dev); err != nil {
		return accounts.StoredSession{}, err
	}
	return ss, nil
}

// Session implements accounts.Store.
func (s *Store) Session(ctx context.Context, h accounts.TokenHash, now time.Time) (accounts.StoredSession, error) {
	if err := s.check(ctx); err != nil {
		return accounts.StoredSession{}, err
	}
	ss, err := sessionRow(ctx, s.pool, h, now, "")
	if err != nil {
		return accounts.StoredSession{}, s.classify(ctx, err)
	}
	return ss, nil
}

// TouchSession implements accounts.Store: the session's row first, then
// its device's (the lock order of Login and RevokeDevice).
func (s *Store) TouchSession(ctx context.Context, h accounts.TokenHash, now, lastUsed time.Time) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var ref, dev []byte
		err := tx.QueryRow(ctx, `UPDATE account_sessions SET last_used = $3 WHERE token_hash = $1 AND expiry > $2
			RETURNING account_ref, device_id`, h[:], now.Unix(), lastUsed.Unix()).Scan(&ref, &dev)
		if errors.Is(err, pgx.ErrNoRows) {
			return accounts.ErrAuth // revoked meanwhile
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE account_devices SET last_used = $3 WHERE account_ref = $1 AND device_id = $2", ref, dev, lastUsed.Unix())
		return err
	})
}

// Devices implements accounts.Store. bytea orders bytewise.
func (s *Store) Devices(ctx context.Context, ref accounts.AccountRef) ([]accounts.Device, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT device_id, name, created, last_used FROM account_devices
		WHERE account_ref = $1 ORDER BY device_id`, ref[:])
	if err != nil {
		return nil, s.classify(ctx, err)
	}
	var out []accounts.Device
	for rows.Next() {
		var id, name []byte
		var created, lastUsed int64
		if err := rows.Scan(&id, &name, &created, &lastUsed); err != nil {
			rows.Close()
			return nil, s.classify(ctx, err)
		}
		d := accounts.Device{Name: string(name), Created: unix(created), LastUsed: unix(lastUsed)}
		if err := into(d.ID[:], id); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, s.classify(ctx, err)
	}
	return out, nil
}

// RevokeDevice implements accounts.Store.
func (s *Store) RevokeDevice(ctx context.Context, ref accounts.AccountRef, device account.DeviceID) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := lockRef(ctx, tx, ref); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM account_sessions WHERE account_ref = $1 AND device_id = $2", ref[:], device[:]); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, "DELETE FROM account_devices WHERE account_ref = $1 AND device_id = $2", ref[:], device[:])
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return accounts.ErrNotFound
		}
		return nil
	})
}

// sessionAccount finds the account of the session under h valid at now
// and takes the account's lock; ErrAuth for no such session, ErrNotFound
// for an account gone. It rereads the session under the lock: a
// concurrent change of password or deletion may have revoked it.
func sessionAccount(ctx context.Context, tx pgx.Tx, h accounts.TokenHash, now time.Time) (accounts.AccountRef, accounts.CredID, error) {
	var cred accounts.CredID
	ss, err := sessionRow(ctx, tx, h, now, "")
	if err != nil {
		return accounts.AccountRef{}, cred, err
	}
	var c []byte
	err = tx.QueryRow(ctx, "SELECT cred_id FROM accounts WHERE account_ref = $1 FOR UPDATE", ss.Account[:]).Scan(&c)
	if errors.Is(err, pgx.ErrNoRows) {
		return accounts.AccountRef{}, cred, accounts.ErrAuth // deleted meanwhile: the session went with it
	}
	if err != nil {
		return accounts.AccountRef{}, cred, err
	}
	if err := into(cred[:], c); err != nil {
		return accounts.AccountRef{}, cred, err
	}
	// A statement of its own, so it sees what the previous lock holder
	// committed.
	if _, err := sessionRow(ctx, tx, h, now, ""); err != nil {
		return accounts.AccountRef{}, cred, err
	}
	return ss.Account, cred, nil
}

// ChangePassword implements accounts.Store.
func (s *Store) ChangePassword(ctx context.Context, h accounts.TokenHash, now time.Time, record [account.RegistrationRecordSize]byte) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		ref, _, err := sessionAccount(ctx, tx, h, now)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE accounts SET record = $2 WHERE account_ref = $1", ref[:], record[:]); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "DELETE FROM account_sessions WHERE account_ref = $1 AND token_hash <> $2", ref[:], h[:])
		return err
	})
}

// DeleteAccount implements accounts.Store: the account's row goes, and
// with it (ON DELETE CASCADE) its devices, their sessions, its quota
// counts and its KeyPackages.
func (s *Store) DeleteAccount(ctx context.Context, h accounts.TokenHash, now time.Time) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		ref, _, err := sessionAccount(ctx, tx, h, now)
		if err != nil {
			return err
		}
		// Sessions before devices, the lock order of TouchSession.
		if _, err := tx.Exec(ctx, "DELETE FROM account_sessions WHERE account_ref = $1", ref[:]); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "DELETE FROM accounts WHERE account_ref = $1", ref[:])
		return err
	})
}

// PurgeSessions implements accounts.Store.
func (s *Store) PurgeSessions(ctx context.Context, now time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM account_sessions WHERE expiry <= $1", now.Unix())
		n = tag.RowsAffected()
		return err
	})
	return int(n), err
}

// ---- quota ----

// ConsumeQuota implements accounts.Store.
func (s *Store) ConsumeQuota(ctx context.Context, ref accounts.AccountRef, epoch uint32, n, limit int) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := lockRef(ctx, tx, ref); err != nil {
			return err
		}
		var used int64
		err := tx.QueryRow(ctx, "SELECT used FROM account_quota WHERE account_ref = $1 AND epoch = $2", ref[:], int64(epoch)).Scan(&used)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if used+int64(n) > int64(limit) {
			return accounts.ErrQuota
		}
		if _, err := tx.Exec(ctx, `INSERT INTO account_quota (account_ref, epoch, used) VALUES ($1, $2, $3)
			ON CONFLICT (account_ref, epoch) DO UPDATE SET used = excluded.used`, ref[:], int64(epoch), used+int64(n)); err != nil {
			return err
		}
		// Requests straddling the rollover keep the previous epoch.
		_, err = tx.Exec(ctx, "DELETE FROM account_quota WHERE account_ref = $1 AND epoch < $2", ref[:], int64(epoch)-1)
		return err
	})
}

// QuotaUsed implements accounts.Store.
func (s *Store) QuotaUsed(ctx context.Context, ref accounts.AccountRef, epoch uint32) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	var used int64
	err := s.pool.QueryRow(ctx, "SELECT used FROM account_quota WHERE account_ref = $1 AND epoch = $2", ref[:], int64(epoch)).Scan(&used)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.classify(ctx, err)
	}
	return int(used), nil
}

// ---- KeyPackage pools ----

// AddKeyPackages implements accounts.Store.
func (s *Store) AddKeyPackages(ctx context.Context, ref accounts.AccountRef, kps [][]byte, limit int) (int, error) {
	if len(kps) == 0 {
		// A query: no lock, no commit to wait for.
		if err := s.check(ctx); err != nil {
			return 0, err
		}
		var exists bool
		var count int
		err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM accounts WHERE account_ref = $1),
			(SELECT count(*) FROM account_key_packages WHERE account_ref = $1)`, ref[:]).Scan(&exists, &count)
		if err != nil {
			return 0, s.classify(ctx, err)
		}
		if !exists {
			return 0, accounts.ErrNotFound
		}
		return count, nil
	}
	var count int
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := lockRef(ctx, tx, ref); err != nil {
			return err
		}
		var last int64
		if err := tx.QueryRow(ctx, "SELECT count(*), coalesce(max(seq), 0) FROM account_key_packages WHERE account_ref = $1", ref[:]).
			Scan(&count, &last); err != nil {
			return err
		}
		if count+len(kps) > limit {
			return accounts.ErrPoolFull
		}
		if last > math.MaxInt64-int64(len(kps)) {
			return fmt.Errorf("%w: KeyPackage sequence exhausted", accounts.ErrCorrupt)
		}
		// In upload order: seq last+1, last+2, ...
		if _, err := tx.Exec(ctx, `INSERT INTO account_key_packages (account_ref, seq, key_package)
			SELECT $1, $2 + k.ord, k.kp FROM unnest($3::bytea[]) WITH ORDINALITY AS k(kp, ord)`, ref[:], last, kps); err != nil {
			return err
		}
		count += len(kps)
		return nil
	})
	return count, err
}

// TakeKeyPackage implements accounts.Store. The account's row is locked
// only when its pool holds something, so an empty pool and an unknown
// username take one path: a statement that finds nothing, locks nothing
// and commits no write (neither the reply nor its cost tells them
// apart). Under the lock the oldest KeyPackage is deleted in a statement
// of its own, which sees every take committed before: two takes never
// return the same KeyPackage, and a take that waited on another finds the
// next one.
func (s *Store) TakeKeyPackage(ctx context.Context, cred accounts.CredID) ([]byte, error) {
	var kp []byte
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		kp = nil
		var ref []byte
		err := tx.QueryRow(ctx, `SELECT a.account_ref FROM accounts a WHERE a.cred_id = $1
			AND EXISTS (SELECT 1 FROM account_key_packages k WHERE k.account_ref = a.account_ref) FOR UPDATE OF a`, cred[:]).Scan(&ref)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `DELETE FROM account_key_packages WHERE account_ref = $1
			AND seq = (SELECT min(seq) FROM account_key_packages WHERE account_ref = $1) RETURNING key_package`, ref).Scan(&kp)
		if errors.Is(err, pgx.ErrNoRows) {
			kp = nil // taken meanwhile
			return nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return kp, nil
}
