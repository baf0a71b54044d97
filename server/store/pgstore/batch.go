package pgstore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/internal/pgtx"
	"github.com/quicprochat/qpc/server/store"
)

// Group commit of sends. A send holds its mailbox's row lock until its
// commit is on disk, so sends into one mailbox, each in a transaction of
// its own, go one commit at a time. Instead Put queues its qpc_put call,
// and each of a few batcher goroutines takes everything queued (up to
// maxBatch), runs the calls in one transaction (pipelined, one round
// trip) and commits once: the sends of a batch share one commit, also
// those into the same mailbox. Each call wrote nothing when it refused
// (qpc_put checks before it writes), so a refusal does not disturb the
// others of its batch. Calls are made in send-ID order, so two batches
// lock the mailboxes they share in the same order and never deadlock.
// A batch whose transaction fails is run again call by call, each in a
// transaction of its own, so one bad call cannot fail the others.

const (
	batchers = 4   // concurrent batch transactions per Store
	maxBatch = 256 // calls in one transaction
)

type putCall struct {
	sendID             []byte
	id, env            []byte
	received           int64
	maxCount, maxBytes int64
	spendKey           []byte
	spendExpires       int64
	res                store.PutResult
	err                error
	done               chan struct{}
}

const putSQL = "SELECT status, rid, seq FROM qpc_put($1, $2, $3, $4, $5, $6, $7, $8)"

func (c *putCall) args() []any {
	return []any{c.sendID, c.id, c.env, c.received, c.maxCount, c.maxBytes, c.spendKey, c.spendExpires}
}

// scan sets the call's outcome from qpc_put's row.
func (c *putCall) scan(row pgx.Row) error {
	var (
		status int
		rid    []byte
		seq    *int64
	)
	if err := row.Scan(&status, &rid, &seq); err != nil {
		return err
	}
	c.res = store.PutResult{}
	copy(c.res.ReceiveID[:], rid)
	if seq != nil {
		c.res.Seq = uint64(*seq)
	}
	switch status {
	case 0:
		c.err = nil
	case 1:
		c.err = store.ErrNotFound
	case 2:
		c.res.Duplicate, c.err = true, nil
	case 3:
		c.err = store.ErrQuotaCount
	case 4:
		c.err = store.ErrQuotaBytes
	case 5:
		c.err = store.ErrSpent
	default:
		return fmt.Errorf("qpc_put returned status %d", status)
	}
	if c.err != nil {
		c.res = store.PutResult{}
	}
	return nil
}

// submit queues c and waits for its outcome. A ctx done before a batcher
// took it abandons it; once queued it is waited for, as the bbolt
// writer's operations are, since its batch may commit.
func (s *Store) submit(ctx context.Context, c *putCall) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	c.done = make(chan struct{})
	s.mu.RLock()
	if s.closed.Load() {
		s.mu.RUnlock()
		return store.ErrClosed
	}
	select {
	case s.puts <- c:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	<-c.done
	return c.err
}

// batcher runs queued calls in batches until the queue is closed.
func (s *Store) batcher() {
	defer s.batchersDone.Done()
	batch := make([]*putCall, 0, maxBatch)
	for first := range s.puts {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < maxBatch {
			select {
			case c, ok := <-s.puts:
				if !ok {
					break drain
				}
				batch = append(batch, c)
			default:
				break drain
			}
		}
		s.runBatch(batch)
		clear(batch)
	}
}

func (s *Store) runBatch(batch []*putCall) {
	slices.SortStableFunc(batch, func(a, b *putCall) int { return bytes.Compare(a.sendID, b.sendID) })
	ctx, cancel := context.WithTimeout(context.Background(), pgtx.WriteTimeout)
	defer cancel()
	var err error
	for attempt := 1; attempt <= pgtx.MaxAttempts; attempt++ {
		start := time.Now()
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			for _, c := range batch {
				b.Queue(putSQL, c.args()...)
			}
			br := tx.SendBatch(ctx, b)
			for _, c := range batch {
				if err := c.scan(br.QueryRow()); err != nil {
					br.Close()
					return err
				}
			}
			if err := br.Close(); err != nil {
				return err
			}
			return s.notifyStored(ctx, tx, batch)
		})
		if s.onCommit != nil {
			s.onCommit(store.CommitInfo{Ops: len(batch), Duration: time.Since(start), Err: err})
		}
		if !pgtx.Retryable(err) {
			break
		}
	}
	if err == nil {
		s.notifyAfter(ctx, batch)
		for _, c := range batch {
			close(c.done)
		}
		return
	}
	if len(batch) == 1 {
		batch[0].err = s.classify(ctx, err)
		close(batch[0].done)
		return
	}
	// Nothing of the batch happened: each call on its own.
	s.log.Warn("store: a batch of sends failed; running them one by one", "sends", len(batch), "err", err)
	for _, c := range batch {
		s.runBatch([]*putCall{c})
	}
}
