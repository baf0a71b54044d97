package pgtx

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/quicprochat/qpc/internal/pgmigrate"
)

// ErrURL is Open's refusal of a store URL pgx cannot parse. pgx's own
// message may quote the URL, password included, so it is not passed on.
var ErrURL = errors.New("the store URL is not a valid PostgreSQL connection string (postgres://user@host:port/db)")

// Open connects a pool to url for one of qpc's stores and pings it. Every
// connection runs with synchronous_commit on, so a committed transaction
// is durable whatever the server's default (acknowledged means
// committed); application_name is app unless the URL names one; the pool
// holds at most maxConns connections unless the URL sets pool_max_conns.
// It returns ErrURL, or the connection's error naming host and port.
func Open(ctx context.Context, url string, maxConns int32, app string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, ErrURL
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = app
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// OpenMigrated is Open, then set.Apply on the new pool, for a store that
// owns its pool and its schema; a failure closes the pool. It returns the
// pool and the versions applied. ErrURL and pgmigrate.ErrNewerSchema,
// which the operator must fix, come as they are; any other failure of the
// database, connecting or migrating, wraps failed (the store's sentinel
// for it; nil: none).
func OpenMigrated(ctx context.Context, url string, maxConns int32, app string, set *pgmigrate.Set, failed error) (*pgxpool.Pool, []int, error) {
	wrap := func(err error) error {
		if failed == nil {
			return err
		}
		return fmt.Errorf("%w: %w", failed, err)
	}
	pool, err := Open(ctx, url, maxConns, app)
	if errors.Is(err, ErrURL) {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, wrap(err)
	}
	applied, err := set.Apply(ctx, pool)
	if err != nil {
		pool.Close()
		if errors.Is(err, pgmigrate.ErrNewerSchema) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("migrating the schema: %w", wrap(err))
	}
	return pool, applied, nil
}
