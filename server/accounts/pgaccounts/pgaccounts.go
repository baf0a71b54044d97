package pgaccounts

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/quicprochat/qpc/internal/pgmigrate"
	"github.com/quicprochat/qpc/internal/pgtx"
	"github.com/quicprochat/qpc/server/accounts"
)

// Store is accounts.Store on PostgreSQL. It holds a connection pool and
// no state of its own: any number of Stores (nodes) may share one
// database.
type Store struct {
	pool   *pgxpool.Pool
	closed atomic.Bool
}

var _ accounts.Store = (*Store)(nil)

// DefaultMaxConns is the pool size when the URL sets no pool_max_conns:
// account operations are rare next to sends (a login, a token issue a
// day, a KeyPackage take per new contact), and a pool of their own keeps
// a flood of sends from starving them.
const DefaultMaxConns = 8

//go:embed migrations/*.sql
var migrationFiles embed.FS

// versionTable is the account store's version table, apart from the
// mailbox store's schema_version: each numbers its migrations alone.
const versionTable = "account_schema_version"

func migrations() (*pgmigrate.Set, error) {
	return pgmigrate.Load(migrationFiles, "migrations", versionTable)
}

// SchemaVersion is the newest schema this build knows.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return ms.Newest()
}

// ErrNewerSchema is Open's refusal of a database whose account schema
// a newer build migrated.
var ErrNewerSchema = pgmigrate.ErrNewerSchema

// Options are Open's; the zero value is usable.
type Options struct {
	// Logger hears of migrations; nil is slog.Default().
	Logger *slog.Logger
	// OpenTimeout bounds connecting and migrating; 0 is 30 s.
	OpenTimeout time.Duration
}

// Open connects to the database at url (a postgres:// URL; pgx's
// pool_max_conns and the PG* environment variables, PGPASSWORD among
// them, apply), brings the account schema up to date and returns the
// store.
func Open(ctx context.Context, url string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = 30 * time.Second
	}
	ms, err := migrations()
	if err != nil {
		return nil, fmt.Errorf("pgaccounts: open: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.OpenTimeout)
	defer cancel()
	pool, applied, err := pgtx.OpenMigrated(ctx, url, DefaultMaxConns, "qpc-server accounts", ms, accounts.ErrStorage)
	if err != nil {
		return nil, fmt.Errorf("pgaccounts: open: %w", err)
	}
	if len(applied) > 0 {
		o.Logger.Info("accounts: PostgreSQL schema migrated", "versions", applied)
	}
	return &Store{pool: pool}, nil
}

// Close closes the pool, waiting for the operations in flight; later
// calls fail with accounts.ErrClosed. It is idempotent.
func (s *Store) Close() error {
	if !s.closed.Swap(true) {
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
		return fmt.Errorf("pgaccounts: ping: %w", s.classify(ctx, err))
	}
	return nil
}

// check refuses an operation on a done context or a closed store.
func (s *Store) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return accounts.ErrClosed
	}
	return nil
}

// sentinels pass classify unchanged: the Store contract's refusals.
var sentinels = []error{accounts.ErrTaken, accounts.ErrAuth, accounts.ErrNotFound, accounts.ErrTooManyDevices,
	accounts.ErrQuota, accounts.ErrPoolFull, accounts.ErrStorage, accounts.ErrClosed}

// classify maps an error of pgx to the store's: the contract's errors
// and a done context pass as they are, a closed store is ErrClosed, and
// anything else is ErrStorage wrapping the cause.
func (s *Store) classify(ctx context.Context, err error) error {
	for _, known := range sentinels {
		if errors.Is(err, known) {
			return err
		}
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if s.closed.Load() {
		return accounts.ErrClosed
	}
	return fmt.Errorf("%w: %w", accounts.ErrStorage, err)
}

// write runs fn in a transaction and commits it (pgtx.Write: run again
// if PostgreSQL aborted it for a deadlock; once started, run to its
// outcome, so that a change the database committed is never reported as
// not made because the caller gave up a moment before).
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return pgtx.Write(ctx, s.pool, fn, nil, s.classify)
}

// into copies a stored value into dst, an array's slice; a value of
// another length is ErrCorrupt.
func into(dst, b []byte) error {
	if len(b) != len(dst) {
		return fmt.Errorf("%w: a stored value of %d bytes, want %d", accounts.ErrCorrupt, len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

func unix(sec int64) time.Time { return time.Unix(sec, 0) }
