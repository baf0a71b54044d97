package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/quicprochat/qpc/internal/pgtx"
	"github.com/quicprochat/qpc/server/store"
)

// Store is store.Store on PostgreSQL. It holds a connection pool and no
// state of its own beyond counters: any number of Stores (nodes) may share
// one database.
type Store struct {
	pool     *pgxpool.Pool
	gran     time.Duration
	maxEnv   int
	log      *slog.Logger
	onCommit func(store.CommitInfo)
	closed   atomic.Bool

	// puts is the queue of the batchers (batch.go); mu orders sends on
	// it against Close, which closes it.
	puts         chan *putCall
	mu           sync.RWMutex
	batchersDone sync.WaitGroup

	// Cross-node wake-ups (notify.go): the schema's channel, this
	// Store's key of its node marks, the wake key, how sends notify, and closed by Close to end
	// Wakes.
	channel string
	nodeKey []byte
	wakeKey []byte
	mode    notifyMode
	closing chan struct{}
}

var _ store.Store = (*Store)(nil)

// DefaultMaxConns is the pool size when the URL sets no pool_max_conns.
const DefaultMaxConns = 16

// IsURL reports whether s names a PostgreSQL database (postgres:// or
// postgresql://) rather than the embedded store.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Open connects to the database at url (a postgres:// URL; pgx's
// pool_max_conns and the PG* environment variables, PGPASSWORD among
// them, apply), brings its schema up to date and returns the store. Of
// opts it uses TimeGranularity, MaxEnvelope (a database holding a longer
// envelope is refused with a *store.OversizeError, as by store.Open),
// OpenTimeout (connecting and migrating), Logger and OnCommit (once per
// write transaction).
func Open(ctx context.Context, url string, opts store.Options) (*Store, error) {
	o, err := opts.WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	if len(o.WakeKey) != store.WakeKeySize {
		return nil, fmt.Errorf("pgstore: open: a wake key of %d bytes is needed (store.Options.WakeKey), got %d", store.WakeKeySize, len(o.WakeKey))
	}
	ms, err := migrations()
	if err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, max(o.OpenTimeout, 30*time.Second))
	defer cancel()
	pool, applied, err := pgtx.OpenMigrated(ctx, url, DefaultMaxConns, "qpc-server", ms, store.ErrStorageFailed)
	if err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	if len(applied) > 0 {
		o.Logger.Info("store: PostgreSQL schema migrated", "versions", applied)
	}
	s := &Store{pool: pool, gran: o.TimeGranularity, maxEnv: o.MaxEnvelope, log: o.Logger, onCommit: o.OnCommit}
	if err := s.checkEnvelopeLimit(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	s.wakeKey = bytes.Clone(o.WakeKey)
	if err := s.setupNotify(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	s.puts = make(chan *putCall, 4*maxBatch)
	for range batchers {
		s.batchersDone.Add(1)
		go s.batcher()
	}
	return s, nil
}

// checkEnvelopeLimit refuses a limit below an envelope still stored, and
// records the limit; it scans the messages only when the limit shrank
// since the last Open (or none was recorded), as the bbolt store does.
func (s *Store) checkEnvelopeLimit(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var recorded int64
		err := tx.QueryRow(ctx, "SELECT value FROM store_meta WHERE name = 'envelope_limit' FOR UPDATE").Scan(&recorded)
		known := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return storageErr(err)
		}
		if !known || recorded > int64(s.maxEnv) {
			over := store.OversizeError{Limit: s.maxEnv}
			var largest, newest *int64
			if err := tx.QueryRow(ctx, "SELECT count(*), max(length(envelope)), max(received) FROM messages WHERE length(envelope) > $1", s.maxEnv).
				Scan(&over.Count, &largest, &newest); err != nil {
				return storageErr(err)
			}
			if over.Count > 0 {
				over.Largest = int(*largest)
				over.Newest = fromUnix(*newest)
				return &over
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO store_meta (name, value) VALUES ('envelope_limit', $1)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value`, s.maxEnv); err != nil {
			return storageErr(err)
		}
		return nil
	})
}

// Close commits the sends already queued, closes the pool, waiting for
// the operations in flight; later calls fail with store.ErrClosed. It is
// idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	first := s.closed.CompareAndSwap(false, true)
	if first {
		close(s.puts)
		close(s.closing)
	}
	s.mu.Unlock()
	if first {
		s.batchersDone.Wait()
		s.pool.Close()
	}
	return nil
}

// Ping checks that the database answers, for /readyz.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pgstore: ping: %w", s.classify(ctx, err))
	}
	return nil
}

// Totals returns the store-wide sums, for metrics. Unlike the bbolt
// store, which keeps them in memory, it sums the mailbox rows: a scan of
// the mailboxes table per call.
func (s *Store) Totals(ctx context.Context) (store.Totals, error) {
	if err := s.check(ctx); err != nil {
		return store.Totals{}, fmt.Errorf("pgstore: totals: %w", err)
	}
	var t store.Totals
	var mb, msgs, bytes int64
	err := s.pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(msg_count), 0)::bigint, coalesce(sum(msg_bytes), 0)::bigint FROM mailboxes").Scan(&mb, &msgs, &bytes)
	if err != nil {
		return store.Totals{}, fmt.Errorf("pgstore: totals: %w", s.classify(ctx, err))
	}
	t.Mailboxes, t.Messages, t.Bytes = uint64(mb), uint64(msgs), uint64(bytes)
	return t, nil
}

// check refuses an operation on a done context or a closed store.
func (s *Store) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

// classify maps an error of pgx to the store's: the store's own errors
// and a done context pass as they are, a closed pool is ErrClosed, and
// anything else is a storage failure.
func (s *Store) classify(ctx context.Context, err error) error {
	for _, known := range []error{store.ErrNotFound, store.ErrExists, store.ErrQuotaCount, store.ErrQuotaBytes, store.ErrTooLarge, store.ErrSpent, store.ErrClosed} {
		if errors.Is(err, known) {
			return err
		}
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	return storageErr(err)
}

func storageErr(err error) error { return fmt.Errorf("%w: %w", store.ErrStorageFailed, err) }

// write runs fn in a transaction and commits it (pgtx.Write: retried
// when PostgreSQL aborted it, run to its outcome once started, as the
// bbolt writer does). onCommit hears of every committed or failed
// transaction.
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	var ran func(time.Duration, error)
	if s.onCommit != nil {
		ran = func(d time.Duration, err error) {
			if !isRefusal(err) {
				s.onCommit(store.CommitInfo{Ops: 1, Duration: d, Err: err})
			}
		}
	}
	return pgtx.Write(ctx, s.pool, fn, ran, s.classify)
}

// isRefusal: an error of the store's semantics, not of the database.
func isRefusal(err error) bool {
	for _, known := range []error{store.ErrNotFound, store.ErrExists, store.ErrQuotaCount, store.ErrQuotaBytes, store.ErrSpent} {
		if errors.Is(err, known) {
			return true
		}
	}
	return false
}

func (s *Store) coarse(t time.Time) int64 { return t.Truncate(s.gran).Unix() }

func fromUnix(sec int64) time.Time { return time.Unix(sec, 0).UTC() }

const day = 24 * 60 * 60

// dayOf is the start (00:00 UTC) of the day of the Unix time sec.
func dayOf(sec int64) int64 {
	d := sec % day
	if d < 0 {
		d += day
	}
	return sec - d
}
