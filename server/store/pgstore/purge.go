package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/server/store"
)

// purgeChunk bounds the arrivals, spends or mailboxes one purge
// transaction starts from, so that a large backlog never holds many row
// locks for long.
const purgeChunk = 1024

// PurgeExpired implements store.Store, in transactions of about
// purgeChunk arrivals; an error (a ctx cancelled between them included)
// stops it, keeping what the committed ones deleted.
func (s *Store) PurgeExpired(ctx context.Context, now time.Time, ttl time.Duration) (int, error) {
	cutoff := now.Add(-ttl)
	// Stored times are whole seconds: t < cutoff  <=>  t < ceil(cutoff).
	limit := cutoff.Unix()
	if cutoff.Nanosecond() > 0 {
		limit++
	}
	total := 0
	for {
		var n, mailboxes int
		err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
			n, mailboxes = 0, 0
			// The mailboxes of the oldest arrivals, locked first and in
			// order (the lock order of every write).
			rows, err := tx.Query(ctx, `SELECT receive_id FROM mailboxes WHERE receive_id IN (
					SELECT receive_id FROM arrivals WHERE received < $1 ORDER BY received LIMIT $2)
				ORDER BY receive_id FOR UPDATE`, limit, purgeChunk)
			if err != nil {
				return err
			}
			rids, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
			if err != nil {
				return err
			}
			mailboxes = len(rids)
			if mailboxes == 0 {
				return nil
			}
			return tx.QueryRow(ctx, `WITH a AS (
					DELETE FROM arrivals WHERE receive_id = ANY($1) AND received < $2
					RETURNING receive_id, seq),
				m AS (
					DELETE FROM messages USING a
					WHERE messages.receive_id = a.receive_id AND messages.seq = a.seq
					RETURNING messages.receive_id, length(messages.envelope) AS len),
				c AS (
					SELECT receive_id, count(*) AS n, sum(len) AS b FROM m GROUP BY receive_id),
				u AS (
					UPDATE mailboxes SET msg_count = msg_count - c.n, msg_bytes = msg_bytes - c.b
					FROM c WHERE mailboxes.receive_id = c.receive_id RETURNING c.n)
				SELECT coalesce(sum(n), 0)::bigint FROM u`, rids, limit).Scan(&n)
		})
		if err != nil {
			return total, fmt.Errorf("pgstore: purge expired: %w", err)
		}
		total += n
		if mailboxes == 0 {
			break
		}
	}
	// Spends expire on their own clock (the token epoch), not the TTL.
	for {
		var n int64
		err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
			ct, err := tx.Exec(ctx, `DELETE FROM spent WHERE spend_key IN (
				SELECT spend_key FROM spent WHERE expires < $1 LIMIT $2)`, now.Unix(), purgeChunk)
			n = ct.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("pgstore: purge expired: %w", err)
		}
		if n < purgeChunk {
			break
		}
	}
	return total, nil
}

// PurgeIdle implements store.Store: in chunks of purgeChunk mailboxes
// whose last use is before the cutoff day; keep (called outside any
// transaction) spares one and moves its last use to today. A mailbox a
// Fetch touched meanwhile is left alone: the deletion checks the day
// again under the row's lock.
func (s *Store) PurgeIdle(ctx context.Context, now time.Time, idle time.Duration, keep func([store.MailboxIDSize]byte) bool, gone func([store.MailboxIDSize]byte)) (int, error) {
	if idle <= 0 {
		return 0, nil
	}
	cutoff := dayOf(now.Add(-idle).Unix())
	today := dayOf(now.Unix())
	total := 0
	for {
		if err := s.check(ctx); err != nil {
			return total, fmt.Errorf("pgstore: purge idle: %w", err)
		}
		rows, err := s.pool.Query(ctx, "SELECT receive_id FROM mailboxes WHERE last_used < $1 ORDER BY last_used, receive_id LIMIT $2", cutoff, purgeChunk)
		if err != nil {
			return total, fmt.Errorf("pgstore: purge idle: %w", s.classify(ctx, err))
		}
		cands, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return total, fmt.Errorf("pgstore: purge idle: %w", s.classify(ctx, err))
		}
		if len(cands) == 0 {
			return total, nil
		}
		var kept, drop [][]byte
		for _, c := range cands {
			var rid [store.MailboxIDSize]byte
			copy(rid[:], c)
			if keep != nil && keep(rid) {
				kept = append(kept, c)
			} else {
				drop = append(drop, c)
			}
		}
		var deleted [][]byte
		err = s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "UPDATE mailboxes SET last_used = $2 WHERE receive_id = ANY($1) AND last_used < $2", kept, today); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, "DELETE FROM mailboxes WHERE receive_id = ANY($1) AND last_used < $2 RETURNING receive_id", drop, cutoff)
			if err != nil {
				return err
			}
			deleted, err = pgx.CollectRows(rows, pgx.RowTo[[]byte])
			if err != nil {
				return err
			}
			return s.notifyDeleted(ctx, tx, deleted)
		})
		if err != nil {
			return total, fmt.Errorf("pgstore: purge idle: %w", err)
		}
		total += len(deleted)
		if gone != nil {
			for _, d := range deleted {
				var rid [store.MailboxIDSize]byte
				copy(rid[:], d)
				gone(rid)
			}
		}
	}
}
