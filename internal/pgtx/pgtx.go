package pgtx

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MaxAttempts bounds the runs of a transaction PostgreSQL aborted for a
// deadlock or a serialization failure: nothing of it happened, so running
// it again is safe.
const MaxAttempts = 5

// WriteTimeout bounds one write transaction once it has started.
const WriteTimeout = 30 * time.Second

// Retryable reports a deadlock_detected (40P01) or serialization_failure
// (40001): PostgreSQL rolled the transaction back, so it may run again.
func Retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// Write runs fn in a transaction on pool and commits it, again (up to
// MaxAttempts runs) if PostgreSQL aborted it as Retryable; fn's own
// errors roll it back. A ctx done before the transaction starts abandons
// it; once started it runs to its outcome, bounded by WriteTimeout and not
// by ctx, so that a write the database committed is never reported as
// lost because its caller gave up a moment before. ran, if not nil, hears
// of every run (its duration and error); classify turns the last run's
// error into the store's, under the context the transaction ran in.
func Write(ctx context.Context, pool *pgxpool.Pool, fn func(context.Context, pgx.Tx) error,
	ran func(time.Duration, error), classify func(context.Context, error) error) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), WriteTimeout)
	defer cancel()
	var err error
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err = pgx.BeginFunc(wctx, pool, func(tx pgx.Tx) error { return fn(wctx, tx) })
		if ran != nil {
			ran(time.Since(start), err)
		}
		if !Retryable(err) || attempt == MaxAttempts || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return classify(wctx, err)
	}
	return nil
}
