package pgtx_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"slices"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/quicprochat/qpc/internal/pgmigrate"
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

// TestOpenMigrated: on a real PostgreSQL, the first open applies the set
// and the second nothing; a URL pgx cannot parse is ErrURL and a database
// migrated further is ErrNewerSchema, neither wrapping the store's
// sentinel; a migration that fails wraps it.
func TestOpenMigrated(t *testing.T) {
	ctx := context.Background()
	url := pgtest.DB(t)
	sql := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	load := func(fsys fstest.MapFS) *pgmigrate.Set {
		t.Helper()
		set, err := pgmigrate.Load(fsys, "m", "open_version")
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	failed := errors.New("storage failed")
	one := load(fstest.MapFS{"m/0001_t.sql": sql("CREATE TABLE t (n int)")})
	for i, want := range [][]int{{1}, nil} {
		pool, applied, err := pgtx.OpenMigrated(ctx, url, 2, "pgtx test", one, failed)
		if err != nil || !slices.Equal(applied, want) {
			t.Fatalf("open %d: applied %v, %v; want %v", i+1, applied, err, want)
		}
		if _, err := pool.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		pool.Close()
	}

	if _, _, err := pgtx.OpenMigrated(ctx, "postgres://[::1", 2, "pgtx test", one, failed); !errors.Is(err, pgtx.ErrURL) || errors.Is(err, failed) {
		t.Errorf("bad URL: %v; want ErrURL alone", err)
	}
	empty := load(fstest.MapFS{"m": &fstest.MapFile{Mode: fs.ModeDir}})
	if _, _, err := pgtx.OpenMigrated(ctx, url, 2, "pgtx test", empty, failed); !errors.Is(err, pgmigrate.ErrNewerSchema) || errors.Is(err, failed) {
		t.Errorf("newer schema: %v; want ErrNewerSchema alone", err)
	}
	bad := load(fstest.MapFS{"m/0001_t.sql": sql("CREATE TABLE t (n int)"), "m/0002_bad.sql": sql("NOT SQL")})
	if _, _, err := pgtx.OpenMigrated(ctx, url, 2, "pgtx test", bad, failed); !errors.Is(err, failed) {
		t.Errorf("failing migration: %v; want it wrapping the store's sentinel", err)
	}
}
