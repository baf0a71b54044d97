package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/server/store"
)

// The operations of store.Store. Lock order, everywhere: a mailbox's row
// first, then its messages and arrivals, so that two writers never wait
// for each other in a circle; a transaction PostgreSQL aborts anyway
// (two purges on two nodes) is run again (write).

// CreateMailbox implements store.Store.
func (s *Store) CreateMailbox(ctx context.Context, m store.Mailbox, spend *store.Spend) error {
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		// ON CONFLICT DO NOTHING covers both unique IDs: a taken one
		// inserts nothing, and waits for a concurrent insert of it to end.
		ct, err := tx.Exec(ctx, `INSERT INTO mailboxes (receive_id, send_id, owner_key, created, last_used)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
			m.ReceiveID[:], m.SendID[:], m.OwnerKey[:], s.coarse(m.Created), dayOf(m.Created.Unix()))
		if err != nil {
			return err
		}
		if ct.RowsAffected() == 0 {
			return store.ErrExists
		}
		return spendIn(ctx, tx, spend)
	})
	if err != nil {
		return fmt.Errorf("pgstore: create mailbox: %w", err)
	}
	return nil
}

// spendIn records spend in tx, or returns store.ErrSpent if the key is in
// the spent set (or being inserted by a transaction that then commits).
func spendIn(ctx context.Context, tx pgx.Tx, spend *store.Spend) error {
	if spend == nil {
		return nil
	}
	ct, err := tx.Exec(ctx, "INSERT INTO spent (spend_key, expires) VALUES ($1, $2) ON CONFLICT DO NOTHING", spend.Key[:], spend.Until.Unix())
	if err != nil {
		return err
	}
	if ct.RowsAffected() == 0 {
		return store.ErrSpent
	}
	return nil
}

// Mailbox implements store.Store.
func (s *Store) Mailbox(ctx context.Context, receiveID [store.MailboxIDSize]byte) (store.Mailbox, error) {
	if err := s.check(ctx); err != nil {
		return store.Mailbox{}, fmt.Errorf("pgstore: mailbox: %w", err)
	}
	var (
		sendID, owner     []byte
		created, lastUsed int64
	)
	err := s.pool.QueryRow(ctx, "SELECT send_id, owner_key, created, last_used FROM mailboxes WHERE receive_id = $1", receiveID[:]).
		Scan(&sendID, &owner, &created, &lastUsed)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Mailbox{}, fmt.Errorf("pgstore: mailbox: %w", s.classify(ctx, err))
	}
	m := store.Mailbox{ReceiveID: receiveID, Created: fromUnix(created), LastUsed: fromUnix(lastUsed)}
	copy(m.SendID[:], sendID)
	copy(m.OwnerKey[:], owner)
	return m, nil
}

// Put implements store.Store: one call of qpc_put (migrations), committed
// with the other sends queued at the time (group commit, batch.go). It locks the mailbox's row
// first: a concurrent Put of the same message ID, through this node or
// another, waits and then finds the arrival this one committed, so it is
// the Duplicate. The spend, the message, its arrival and the counters are
// one transaction.
func (s *Store) Put(ctx context.Context, sendID [store.MailboxIDSize]byte, id [store.MessageIDSize]byte, envelope []byte, q store.Quota, now time.Time, spend *store.Spend) (store.PutResult, error) {
	if len(envelope) > s.maxEnv {
		return store.PutResult{}, fmt.Errorf("pgstore: put: %w", store.ErrTooLarge)
	}
	var (
		spendKey     []byte
		spendExpires int64
	)
	if spend != nil {
		spendKey, spendExpires = spend.Key[:], spend.Until.Unix()
	}
	c := &putCall{
		sendID: sendID[:], id: id[:], env: envelope, received: s.coarse(now),
		maxCount: int64(q.MaxMessages), maxBytes: q.MaxBytes, spendKey: spendKey, spendExpires: spendExpires,
	}
	err := s.submit(ctx, c)
	if err != nil {
		return store.PutResult{}, fmt.Errorf("pgstore: put: %w", err)
	}
	return c.res, nil
}

// Spend implements store.Store: one INSERT, committed before it returns.
func (s *Store) Spend(ctx context.Context, spend *store.Spend) error {
	if spend == nil {
		return nil
	}
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error { return spendIn(ctx, tx, spend) })
	if err != nil {
		return fmt.Errorf("pgstore: spend: %w", err)
	}
	return nil
}

// Fetch implements store.Store. The first Fetch of a day (UTC) records
// the day as the mailbox's last use, in a write of its own; a failure of
// that write is logged, and the next Fetch tries again.
func (s *Store) Fetch(ctx context.Context, receiveID [store.MailboxIDSize]byte, after uint64, limit int, now time.Time) ([]store.Message, bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, false, fmt.Errorf("pgstore: fetch: %w", err)
	}
	today := dayOf(now.Unix())
	limit = min(max(limit, 0), 1<<30)
	// Seqs are below 2^63: nothing follows a larger after.
	from := int64(math.MaxInt64)
	if after < math.MaxInt64 {
		from = int64(after)
	}
	b := &pgx.Batch{}
	b.Queue("SELECT last_used FROM mailboxes WHERE receive_id = $1", receiveID[:])
	b.Queue("SELECT seq, message_id, received, envelope FROM messages WHERE receive_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", receiveID[:], from, limit+1)
	var (
		msgs     []store.Message
		more     bool
		lastUsed int64
	)
	err := func() error {
		br := s.pool.SendBatch(ctx, b)
		defer br.Close()
		if err := br.QueryRow().Scan(&lastUsed); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return store.ErrNotFound
			}
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if len(msgs) == limit {
				more = true
				break
			}
			var (
				m        store.Message
				seq, rcv int64
				mid      []byte
			)
			if err := rows.Scan(&seq, &mid, &rcv, &m.Envelope); err != nil {
				return err
			}
			m.Seq, m.ReceivedAt = uint64(seq), fromUnix(rcv)
			copy(m.ID[:], mid)
			msgs = append(msgs, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		return br.Close()
	}()
	if err != nil {
		return nil, false, fmt.Errorf("pgstore: fetch: %w", s.classify(ctx, err))
	}
	if lastUsed < today {
		// Only ever forward: a concurrent Fetch of a later day wins.
		if _, err := s.pool.Exec(ctx, "UPDATE mailboxes SET last_used = $2 WHERE receive_id = $1 AND last_used < $2", receiveID[:], today); err != nil && ctx.Err() == nil {
			s.log.Warn("store: recording a mailbox's use failed; the next fetch tries again", "err", err)
		}
	}
	return msgs, more, nil
}

// Ack implements store.Store. It deletes the messages the IDs' arrivals
// name (the arrivals stay, as idempotency keys, until PurgeExpired).
func (s *Store) Ack(ctx context.Context, receiveID [store.MailboxIDSize]byte, ids [][store.MessageIDSize]byte) (int, error) {
	if len(ids) == 0 {
		if _, err := s.Mailbox(ctx, receiveID); err != nil {
			return 0, fmt.Errorf("pgstore: ack: %w", errors.Unwrap(err))
		}
		return 0, nil
	}
	raw := make([][]byte, len(ids))
	for i := range ids {
		raw[i] = ids[i][:]
	}
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, "SELECT 1 FROM mailboxes WHERE receive_id = $1 FOR UPDATE", receiveID[:]).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		return tx.QueryRow(ctx, `WITH gone AS (
				DELETE FROM messages m USING arrivals a
				WHERE a.receive_id = $1 AND a.message_id = ANY($2)
				  AND m.receive_id = a.receive_id AND m.seq = a.seq
				RETURNING length(m.envelope) AS len)
			UPDATE mailboxes SET
				msg_count = msg_count - (SELECT count(*) FROM gone),
				msg_bytes = msg_bytes - (SELECT coalesce(sum(len), 0) FROM gone)
			WHERE receive_id = $1
			RETURNING (SELECT count(*) FROM gone)`, receiveID[:], raw).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("pgstore: ack: %w", err)
	}
	return int(n), nil
}

// DeleteMailbox implements store.Store: its messages and arrivals go with
// it (ON DELETE CASCADE), in one transaction.
func (s *Store) DeleteMailbox(ctx context.Context, receiveID [store.MailboxIDSize]byte) error {
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		ct, err := tx.Exec(ctx, "DELETE FROM mailboxes WHERE receive_id = $1", receiveID[:])
		if err != nil {
			return err
		}
		if ct.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return s.notifyDeleted(ctx, tx, [][]byte{receiveID[:]})
	})
	if err != nil {
		return fmt.Errorf("pgstore: delete mailbox: %w", err)
	}
	return nil
}
