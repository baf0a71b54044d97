package pglease

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quicprochat/qpc/internal/pgmigrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// versionTable is the leases' version table, apart from every other
// component's.
const versionTable = "lease_schema_version"

// ErrFenced is Check's refusal: the token is not the lease's current one
// (another node took the lease over) or the lease has expired. The
// caller's transaction must not commit, and the caller is no longer the
// holder.
var ErrFenced = errors.New("pglease: the lease was taken over or has expired (fenced off)")

// ErrLost is Renew's and Release's answer when the caller no longer holds
// the lease with that token.
var ErrLost = errors.New("pglease: the lease is no longer held with this token")

// Leases are the leases of one database.
type Leases struct {
	pool *pgxpool.Pool
}

// Open applies the leases' schema to the database of pool and returns its
// leases. The pool stays the caller's.
func Open(ctx context.Context, pool *pgxpool.Pool) (*Leases, error) {
	if err := Migrate(ctx, pool); err != nil {
		return nil, err
	}
	return &Leases{pool: pool}, nil
}

// Migrate applies the leases' schema (a component that calls Check
// without Open, such as a store fenced by a lease, calls it at its own
// open).
func Migrate(ctx context.Context, db pgmigrate.Beginner) error {
	if _, err := pgmigrate.Migrate(ctx, db, migrationFiles, "migrations", versionTable); err != nil {
		return fmt.Errorf("pglease: migrating the schema: %w", err)
	}
	return nil
}

// micros is ttl in whole microseconds, PostgreSQL's resolution; at least
// one.
func micros(ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("pglease: ttl %v is not positive", ttl)
	}
	return max(ttl.Microseconds(), 1), nil
}

// Acquire takes the lease name for holder for ttl if it is free (never
// held, released, or expired), returning its new token and true; if
// another holder (or holder itself: use Renew) holds it, 0 and false. Of
// several nodes acquiring a free lease at once exactly one gets it.
func (l *Leases) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (token uint64, ok bool, err error) {
	us, err := micros(ttl)
	if err != nil {
		return 0, false, err
	}
	// One statement: a concurrent Acquire waits on the row (or on the
	// conflicting insert) and re-evaluates the WHERE on the winner's
	// row, which is not expired.
	var t int64
	err = l.pool.QueryRow(ctx, `INSERT INTO qpc_leases AS l (name, holder, token, expires_at)
		VALUES ($1, $2, 1, clock_timestamp() + $3 * interval '1 microsecond')
		ON CONFLICT (name) DO UPDATE
			SET holder = excluded.holder, token = l.token + 1,
				expires_at = clock_timestamp() + $3 * interval '1 microsecond'
			WHERE l.expires_at <= clock_timestamp()
		RETURNING token`, name, holder, us).Scan(&t)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("pglease: acquire %s: %w", name, err)
	}
	return uint64(t), true, nil
}

// Renew extends the lease name, held by holder with token, to ttl from
// now. ErrLost if it is not so held any more (expired, taken over or
// released): the caller has lost the lease and must stop writing as its
// holder.
func (l *Leases) Renew(ctx context.Context, name, holder string, token uint64, ttl time.Duration) error {
	us, err := micros(ttl)
	if err != nil {
		return err
	}
	tag, err := l.pool.Exec(ctx, `UPDATE qpc_leases
		SET expires_at = clock_timestamp() + $4 * interval '1 microsecond'
		WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()`,
		name, holder, int64(token), us)
	if err != nil {
		return fmt.Errorf("pglease: renew %s: %w", name, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("renew %s (token %d): %w", name, token, ErrLost)
	}
	return nil
}

// Release gives the lease up at once, so another node need not wait for
// it to expire. ErrLost if holder did not hold it with token any more
// (nothing is changed then).
func (l *Leases) Release(ctx context.Context, name, holder string, token uint64) error {
	tag, err := l.pool.Exec(ctx, `UPDATE qpc_leases SET expires_at = '-infinity'
		WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()`,
		name, holder, int64(token))
	if err != nil {
		return fmt.Errorf("pglease: release %s: %w", name, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("release %s (token %d): %w", name, token, ErrLost)
	}
	return nil
}

// Holder returns who holds the lease name and with which token; "" and 0
// when nobody does.
func (l *Leases) Holder(ctx context.Context, name string) (holder string, token uint64, err error) {
	var t int64
	err = l.pool.QueryRow(ctx, `SELECT holder, token FROM qpc_leases
		WHERE name = $1 AND expires_at > clock_timestamp()`, name).Scan(&holder, &t)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("pglease: holder of %s: %w", name, err)
	}
	return holder, uint64(t), nil
}

// Check is the fence: called inside a write transaction tx (at READ
// COMMITTED) of the database the leases are in, it returns nil if the
// lease name is held with token now, and ErrFenced if it is not (taken
// over, released or expired). It share-locks the lease's row until tx
// ends, so the lease cannot change hands before tx commits: call it
// before tx's writes, or at least before its commit, and roll tx back on
// an error.
func Check(ctx context.Context, tx pgx.Tx, name string, token uint64) error {
	var cur int64
	var live bool
	err := tx.QueryRow(ctx, `SELECT token, expires_at > clock_timestamp() FROM qpc_leases
		WHERE name = $1 FOR SHARE`, name).Scan(&cur, &live)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("lease %s was never taken: %w", name, ErrFenced)
	}
	if err != nil {
		return fmt.Errorf("pglease: check %s: %w", name, err)
	}
	if uint64(cur) != token {
		return fmt.Errorf("lease %s: token %d, the current one is %d: %w", name, token, cur, ErrFenced)
	}
	if !live {
		return fmt.Errorf("lease %s (token %d) has expired: %w", name, token, ErrFenced)
	}
	return nil
}

// Fence returns the fence of a store written by the holder of the lease
// name (pgtree.Options.Fence, pglog.Options.Fence): run inside the
// store's write transaction, it is Check with the token that token
// returns at that moment (0, no lease held: refused).
func Fence(name string, token func() uint64) func(ctx context.Context, tx pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error { return Check(ctx, tx, name, token()) }
}
