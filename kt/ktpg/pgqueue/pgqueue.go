package pgqueue

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/quicprochat/qpc/internal/pgmigrate"
	"github.com/quicprochat/qpc/internal/pgtx"
	"github.com/quicprochat/qpc/kt"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

const versionTable = "kt_queue_schema_version"

// channel is the NOTIFY channel Settle wakes the nodes' listeners on.
const channel = "kt_pending"

// Defaults.
const (
	// DefaultFallbackPoll is how often a listener reads its waiters'
	// outcomes without a notification.
	DefaultFallbackPoll = 500 * time.Millisecond
	// DefaultMaxConns is the pool size when the URL sets none: one
	// listening connection and a few for adds and waits.
	DefaultMaxConns = 6
	// settledKept is how long a settled row whose publisher never
	// read it (its node died) is kept.
	settledKept = time.Hour
)

// Options are Open's.
type Options struct {
	// Fence runs inside the transactions of Take, Settle and Requeue,
	// first: an error (the sequencer lease is no longer this node's)
	// aborts them. nil: no fence (a single node).
	Fence func(context.Context, pgx.Tx) error
	// FallbackPoll is how often waiters' outcomes are read without a
	// notification; 0 is DefaultFallbackPoll.
	FallbackPoll time.Duration
	Logger       *slog.Logger
}

// Queue is kt.SharedQueue on PostgreSQL.
type Queue struct {
	pool   *pgxpool.Pool
	o      Options
	mu     sync.Mutex
	wait   map[int64]chan kt.Published
	poke   chan struct{}
	stop   context.CancelFunc
	done   chan struct{}
	closed atomic.Bool
	owned  bool // Close closes pool
}

var _ kt.SharedQueue = (*Queue)(nil)

// Open connects to url, brings the queue's schema up to date and starts
// the listener. The queue owns the pool.
func Open(ctx context.Context, url string, o Options) (*Queue, error) {
	pool, err := pgtx.Open(ctx, url, DefaultMaxConns, "qpc-server kt queue")
	if err != nil {
		return nil, fmt.Errorf("pgqueue: open: %w", err)
	}
	q, err := New(ctx, pool, o)
	if err != nil {
		pool.Close()
		return nil, err
	}
	q.owned = true
	return q, nil
}

// New is Open on a pool the caller keeps and closes after the queue (one
// of its connections listens while the queue is open).
func New(ctx context.Context, pool *pgxpool.Pool, o Options) (*Queue, error) {
	if o.FallbackPoll <= 0 {
		o.FallbackPoll = DefaultFallbackPoll
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if _, err := pgmigrate.Migrate(ctx, pool, migrationFiles, "migrations", versionTable); err != nil {
		return nil, fmt.Errorf("pgqueue: open: migrating the schema: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	q := &Queue{pool: pool, o: o, wait: map[int64]chan kt.Published{}, poke: make(chan struct{}, 1), stop: cancel, done: make(chan struct{})}
	go q.listen(lctx)
	return q, nil
}

// Close stops the listener and closes the pool; waiters get ErrClosed.
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return nil
	}
	q.stop()
	<-q.done
	if q.owned {
		q.pool.Close()
	}
	q.mu.Lock()
	for id, ch := range q.wait {
		ch <- kt.Published{Err: kt.ErrClosed}
		delete(q.wait, id)
	}
	q.mu.Unlock()
	return nil
}

func (q *Queue) write(ctx context.Context, fenced bool, fn func(context.Context, pgx.Tx) error) error {
	if q.closed.Load() {
		return kt.ErrClosed
	}
	return pgtx.Write(ctx, q.pool, func(ctx context.Context, tx pgx.Tx) error {
		if fenced && q.o.Fence != nil {
			if err := q.o.Fence(ctx, tx); err != nil {
				return err
			}
		}
		return fn(ctx, tx)
	}, nil, func(_ context.Context, err error) error { return fmt.Errorf("pgqueue: %w", err) })
}

// Add implements kt.SharedQueue.
func (q *Queue) Add(ctx context.Context, u kt.QueuedUpdate, maxPending int) (int64, error) {
	var id int64
	err := q.write(ctx, false, func(ctx context.Context, tx pgx.Tx) error {
		// Each statement reads the table afresh (READ COMMITTED): the
		// label's queued row that made the insert do nothing may be
		// settled before the check after it runs. Only a queue that is
		// really full answers ErrQueueFull; otherwise the insert is tried
		// again (a settle per try, so a few tries suffice).
		for range 8 {
			err := tx.QueryRow(ctx, `INSERT INTO kt_pending (label, value, version, vrf_index, vrf_proof, first)
				SELECT $1, $2, $3, $4, $5, $7 WHERE (SELECT count(*) FROM kt_pending WHERE state < 2) < $6
				ON CONFLICT (label) WHERE state < 2 DO NOTHING RETURNING id`,
				[]byte(u.Label), u.Value, int64(u.Version), u.Index[:], u.Proof[:], maxPending, u.First).Scan(&id)
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			var queued bool
			var pending int64
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM kt_pending WHERE label = $1 AND state < 2),
				(SELECT count(*) FROM kt_pending WHERE state < 2)`, []byte(u.Label)).Scan(&queued, &pending); err != nil {
				return err
			}
			if queued {
				return kt.ErrLabelQueued
			}
			if pending >= int64(maxPending) {
				return kt.ErrQueueFull
			}
		}
		return kt.ErrQueueFull
	})
	if errors.Is(err, kt.ErrLabelQueued) || errors.Is(err, kt.ErrQueueFull) {
		return 0, errors.Unwrap(err) // the sentinel, unwrapped from pgtx's classification
	}
	return id, err
}

// Withdraw implements kt.SharedQueue.
func (q *Queue) Withdraw(ctx context.Context, id int64) (bool, error) {
	var n int64
	err := q.write(ctx, false, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM kt_pending WHERE id = $1 AND state = 0`, id)
		n = tag.RowsAffected()
		return err
	})
	return n == 1, err
}

const takenCols = `id, label, value, version, vrf_index, vrf_proof, epoch, first`

func scanTaken(rows pgx.Rows) ([]kt.QueuedUpdate, error) {
	var out []kt.QueuedUpdate
	for rows.Next() {
		var u kt.QueuedUpdate
		var label, index, proof []byte
		var version, epoch int64
		if err := rows.Scan(&u.ID, &label, &u.Value, &version, &index, &proof, &epoch, &u.First); err != nil {
			return nil, err
		}
		if len(index) != len(u.Index) || len(proof) != len(u.Proof) || version <= 0 || version > int64(kt.MaxVersion) || epoch < 0 {
			return nil, fmt.Errorf("pgqueue: malformed row %d", u.ID)
		}
		u.Label, u.Version, u.Epoch = string(label), uint32(version), uint64(epoch)
		copy(u.Index[:], index)
		copy(u.Proof[:], proof)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b kt.QueuedUpdate) int { return int(a.ID - b.ID) })
	return out, nil
}

// Take implements kt.SharedQueue.
func (q *Queue) Take(ctx context.Context, epoch uint64, max int) ([]kt.QueuedUpdate, error) {
	var out []kt.QueuedUpdate
	err := q.write(ctx, true, func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE kt_pending SET state = 1, epoch = $1
			WHERE id IN (SELECT id FROM kt_pending WHERE state = 0 ORDER BY id LIMIT $2)
			RETURNING `+takenCols, int64(epoch), max)
		if err != nil {
			return err
		}
		out, err = scanTaken(rows)
		return err
	})
	return out, err
}

// Taken implements kt.SharedQueue.
func (q *Queue) Taken(ctx context.Context) ([]kt.QueuedUpdate, error) {
	rows, err := q.pool.Query(ctx, `SELECT `+takenCols+` FROM kt_pending WHERE state = 1 ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("pgqueue: %w", err)
	}
	out, err := scanTaken(rows)
	if err != nil {
		return nil, fmt.Errorf("pgqueue: %w", err)
	}
	return out, nil
}

// The outcomes' errors as stored: the directory's sentinels by name.
var errNames = map[string]error{"too_many_versions": kt.ErrTooManyVersions, "version_taken": kt.ErrVersionTaken}

func errName(err error) string {
	for n, e := range errNames {
		if errors.Is(err, e) {
			return n
		}
	}
	return err.Error()
}

// Settle implements kt.SharedQueue.
func (q *Queue) Settle(ctx context.Context, ids []int64, results []kt.Published) error {
	if len(ids) != len(results) {
		return errors.New("pgqueue: settle: ids and results differ in number")
	}
	epochs := make([]int64, len(ids))
	versions := make([]int64, len(ids))
	errs := make([]string, len(ids))
	for i, r := range results {
		epochs[i], versions[i] = int64(r.Epoch), int64(r.Version)
		if r.Err != nil {
			errs[i] = errName(r.Err)
		}
	}
	return q.write(ctx, true, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE kt_pending p SET state = 2, epoch = r.epoch, result_version = r.version,
				result_err = NULLIF(r.err, ''), settled_at = now()
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[]) AS r(id, epoch, version, err)
			WHERE p.id = r.id AND p.state = 1`, ids, epochs, versions, errs); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM kt_pending WHERE state = 2 AND settled_at < now() - $1::interval`, settledKept.String()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, channel)
		return err
	})
}

// Requeue implements kt.SharedQueue.
func (q *Queue) Requeue(ctx context.Context, ids []int64) error {
	return q.write(ctx, true, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE kt_pending SET state = 0, epoch = NULL WHERE id = ANY($1) AND state = 1`, ids)
		return err
	})
}

// Wait implements kt.SharedQueue.
func (q *Queue) Wait(ctx context.Context, id int64) (kt.Published, error) {
	ch := make(chan kt.Published, 1)
	q.mu.Lock()
	if q.closed.Load() {
		q.mu.Unlock()
		return kt.Published{}, kt.ErrClosed
	}
	q.wait[id] = ch
	q.mu.Unlock()
	// The row may have been settled before the waiter was registered:
	// the listener reads it at once.
	select {
	case q.poke <- struct{}{}:
	default:
	}
	select {
	case p := <-ch:
		if errors.Is(p.Err, kt.ErrClosed) {
			return kt.Published{}, kt.ErrClosed
		}
		return p, nil
	case <-ctx.Done():
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.wait[id] == ch {
			delete(q.wait, id)
		}
		select {
		case p := <-ch: // delivered meanwhile
			return p, nil
		default:
		}
		return kt.Published{}, ctx.Err()
	}
}

// listen holds a connection LISTENing on the channel and delivers the
// waiters' outcomes after each notification, poke or FallbackPoll. The
// connection is its own, outside the pool: it is held as long as the
// queue is open, and the pool's Close waits for none of it.
func (q *Queue) listen(ctx context.Context) {
	defer close(q.done)
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, q.pool.Config().ConnConfig.Copy())
		if err == nil {
			if _, err = conn.Exec(ctx, "LISTEN "+channel); err != nil {
				conn.Close(context.Background())
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				q.o.Logger.Warn("kt queue: listening", "err", err)
			}
			// Outcomes are still read, without notifications.
			if err := q.deliver(ctx); err != nil && ctx.Err() == nil {
				q.o.Logger.Warn("kt queue: reading outcomes", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-q.poke:
			case <-time.After(q.o.FallbackPoll):
			}
			continue
		}
		err = q.serve(ctx, conn)
		conn.Close(context.Background())
		if ctx.Err() == nil {
			q.o.Logger.Warn("kt queue: listener connection lost", "err", err)
		}
	}
}

// serve delivers outcomes until the connection fails or ctx ends.
func (q *Queue) serve(ctx context.Context, conn *pgx.Conn) error {
	notes := make(chan error, 1)
	for {
		if err := q.deliver(ctx); err != nil && ctx.Err() == nil {
			q.o.Logger.Warn("kt queue: reading outcomes", "err", err)
		}
		wctx, cancel := context.WithTimeout(ctx, q.o.FallbackPoll)
		go func() {
			_, err := conn.WaitForNotification(wctx)
			notes <- err
		}()
		var err error
		select {
		case err = <-notes:
		case <-q.poke:
			cancel()
			err = <-notes
		}
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// A wait ended by its deadline (the fallback poll, or a poke)
		// leaves the connection usable (pgx's deadline context handler).
		if err != nil && wctx.Err() == nil {
			return err
		}
	}
}

// deliver reads the outcomes of the settled rows this node waits for,
// hands them over and deletes the rows.
func (q *Queue) deliver(ctx context.Context) error {
	q.mu.Lock()
	ids := make([]int64, 0, len(q.wait))
	for id := range q.wait {
		ids = append(ids, id)
	}
	q.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	rows, err := q.pool.Query(ctx, `SELECT id, epoch, result_version, coalesce(result_err, '') FROM kt_pending WHERE id = ANY($1) AND state = 2`, ids)
	if err != nil {
		return err
	}
	type outcome struct {
		id int64
		p  kt.Published
	}
	var got []outcome
	for rows.Next() {
		var o outcome
		var epoch, version int64
		var msg string
		if err := rows.Scan(&o.id, &epoch, &version, &msg); err != nil {
			return err
		}
		o.p = kt.Published{Epoch: uint64(epoch), Version: uint32(version)}
		if msg != "" {
			if e, ok := errNames[msg]; ok {
				o.p.Err = e
			} else {
				o.p.Err = errors.New(msg)
			}
		}
		got = append(got, o)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	done := make([]int64, 0, len(got))
	q.mu.Lock()
	for _, o := range got {
		if ch, ok := q.wait[o.id]; ok {
			ch <- o.p
			delete(q.wait, o.id)
			done = append(done, o.id)
		}
	}
	q.mu.Unlock()
	if len(done) > 0 {
		_, err = q.pool.Exec(ctx, `DELETE FROM kt_pending WHERE id = ANY($1) AND state = 2`, done)
	}
	return err
}
