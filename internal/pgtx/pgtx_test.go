package pgtx_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/internal/pgtx"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "40P01"}, true},
		{&pgconn.PgError{Code: "40001"}, true},
		{&pgconn.PgError{Code: "23505"}, false},
		{errors.New("other"), false},
		{nil, false},
	} {
		if got := pgtx.Retryable(tc.err); got != tc.want {
			t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestWrite: on a real PostgreSQL, a transaction aborted as retryable
// runs again and its last run commits; one that keeps failing stops after
// MaxAttempts runs and is classified; fn's own error rolls back; a caller
// that gives up while it runs does not make a committed write look lost.
func TestWrite(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE t (n int)`); err != nil {
		t.Fatal(err)
	}
	count := func() (n int) {
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	classify := func(_ context.Context, err error) error { return errors.Join(errors.New("classified"), err) }
	runs := 0
	ran := func(time.Duration, error) { runs++ }

	// Aborted twice, then committed: one row.
	fails := 2
	err = pgtx.Write(ctx, pool, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO t VALUES (1)`); err != nil {
			return err
		}
		if fails > 0 {
			fails--
			return &pgconn.PgError{Code: "40001"}
		}
		return nil
	}, ran, classify)
	if err != nil || runs != 3 || count() != 1 {
		t.Fatalf("retried write: %v after %d runs, %d rows; want nil, 3, 1", err, runs, count())
	}

	// Always aborted: MaxAttempts runs, nothing written, classified.
	runs = 0
	err = pgtx.Write(ctx, pool, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO t VALUES (2)`); err != nil {
			return err
		}
		return &pgconn.PgError{Code: "40P01"}
	}, ran, classify)
	if err == nil || !pgtx.Retryable(err) || runs != pgtx.MaxAttempts || count() != 1 {
		t.Fatalf("write aborted every time: %v after %d runs, %d rows; want a classified deadlock after %d, 1 row", err, runs, count(), pgtx.MaxAttempts)
	}

	// fn's own error: one run, rolled back.
	runs = 0
	mine := errors.New("refused")
	err = pgtx.Write(ctx, pool, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO t VALUES (3)`); err != nil {
			return err
		}
		return mine
	}, ran, classify)
	if !errors.Is(err, mine) || runs != 1 || count() != 1 {
		t.Fatalf("refused write: %v after %d runs, %d rows; want the refusal after 1, 1 row", err, runs, count())
	}

	// The caller gives up while the transaction runs: it still commits,
	// and says so.
	cctx, cancel := context.WithCancel(ctx)
	err = pgtx.Write(cctx, pool, func(ctx context.Context, tx pgx.Tx) error {
		cancel()
		_, err := tx.Exec(ctx, `INSERT INTO t VALUES (4)`)
		return err
	}, nil, classify)
	if err != nil || count() != 2 {
		t.Fatalf("write whose caller gave up: %v, %d rows; want nil, 2", err, count())
	}
}
