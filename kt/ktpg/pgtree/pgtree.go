package pgtree

import (
	"bytes"
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

	"github.com/quicprochat/qpc/internal/pglease"
	"github.com/quicprochat/qpc/internal/pgmigrate"
	"github.com/quicprochat/qpc/internal/pgtx"
	"github.com/quicprochat/qpc/kt"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// versionTable is the tree store's version table, apart from every other
// component's.
const versionTable = "kt_tree_schema_version"

// DefaultMaxConns is the pool size of Open when the URL sets none: each
// open snapshot holds a connection until it is released.
const DefaultMaxConns = 16

// scanPage is how many nodes ScanNodes reads per query.
const scanPage = 2048

// ErrClosed is the answer of a closed store.
var ErrClosed = errors.New("pgtree: the store is closed")

// Fence is the check a fenced CommitEpoch runs inside its transaction,
// before it locks the head row or writes anything (the same form as
// pglog.Fence). An error rolls the transaction back (the store is
// unchanged) and is returned wrapped in ErrFenced. The KT sequencer
// passes its lease check, pglease.Fence(name, token), so that a node that
// lost the lease cannot commit an epoch however long it paused.
type Fence func(ctx context.Context, tx pgx.Tx) error

// ErrFenced wraps the error of a Fence that refused a commit.
var ErrFenced = errors.New("pgtree: commit refused by the fence")

// Options configure a Store.
type Options struct {
	// Fence, if not nil, runs in every CommitEpoch's transaction (see
	// Fence). CommitEpochFenced gives one for a single commit instead.
	Fence Fence
	// Logger hears of migrations; nil is slog.Default().
	Logger *slog.Logger
	// OpenTimeout bounds connecting and migrating; 0 is 30 s.
	OpenTimeout time.Duration
}

// Store is a kt.TreeStore on PostgreSQL.
type Store struct {
	pool   *pgxpool.Pool
	owned  bool // Close closes pool
	fence  Fence
	closed atomic.Bool
}

var _ kt.TreeStore = (*Store)(nil)

// Open connects to the database at url (a postgres:// URL; pgx's
// pool_max_conns and the PG* environment variables apply), brings the
// tree schema (and the leases' schema) up to date and returns the store,
// which owns the pool.
func Open(ctx context.Context, url string, o Options) (*Store, error) {
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = 30 * time.Second
	}
	octx, cancel := context.WithTimeout(ctx, o.OpenTimeout)
	defer cancel()
	pool, err := pgtx.Open(octx, url, DefaultMaxConns, "qpc-server kt tree")
	if err != nil {
		return nil, fmt.Errorf("pgtree: open: %w", err)
	}
	s, err := New(octx, pool, o)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.owned = true
	return s, nil
}

// New is Open on a pool the caller keeps (and closes after the store):
// for a node that shares one pool between the store and its lease.
func New(ctx context.Context, pool *pgxpool.Pool, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.OpenTimeout)
	defer cancel()
	applied, err := pgmigrate.Migrate(ctx, pool, migrationFiles, "migrations", versionTable)
	if err != nil {
		return nil, fmt.Errorf("pgtree: open: migrating the schema: %w", err)
	}
	if len(applied) > 0 {
		o.Logger.Info("kt: PostgreSQL tree schema migrated", "versions", applied)
	}
	// The leases' table, which a fenced commit reads: CommitEpochFenced
	// may be called without a Fence option.
	if err := pglease.Migrate(ctx, pool); err != nil {
		return nil, fmt.Errorf("pgtree: open: %w", err)
	}
	return &Store{pool: pool, fence: o.Fence}, nil
}

// Close closes the pool if the store owns it (Open), waiting for the
// operations in flight; it is idempotent. Release the snapshots first.
func (s *Store) Close() error {
	if !s.closed.Swap(true) && s.owned {
		s.pool.Close()
	}
	return nil
}

// classify passes the TreeStore's refusals and a done context as they
// are, says ErrClosed for a closed store, and leaves the caller to say
// what failed.
func (s *Store) classify(ctx context.Context, err error) error {
	if errors.Is(err, kt.ErrEpochTaken) || errors.Is(err, ErrFenced) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if s.closed.Load() {
		return ErrClosed
	}
	return err
}

// CommitEpoch writes c in one transaction (kt.TreeStore), fenced by
// Options.Fence if set.
func (s *Store) CommitEpoch(ctx context.Context, c kt.EpochCommit) error {
	return s.CommitEpochFenced(ctx, c, s.fence)
}

// CommitEpochFenced is CommitEpoch running fence (nil: none) first in its
// transaction: if fence refuses, the commit fails with an error wrapping
// ErrFenced and fence's error, and writes nothing. With
// pglease.Fence(name, token) the check's share lock on the lease holds
// to the commit, so a takeover of the lease comes after this epoch or
// refuses it.
func (s *Store) CommitEpochFenced(ctx context.Context, c kt.EpochCommit, fence Fence) error {
	return s.commit(ctx, c, fence)
}

func (s *Store) commit(ctx context.Context, c kt.EpochCommit, fence Fence) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if c.Epoch > 1<<62 {
		return fmt.Errorf("pgtree: epoch %d out of range", c.Epoch)
	}
	keys, values := nodeArrays(c.Nodes)
	versions := make([][]any, len(c.Versions))
	for i, v := range c.Versions {
		versions[i] = []any{[]byte(v.Label), int64(v.Version), notNull(v.Record)}
	}
	err := pgtx.Write(ctx, s.pool, func(ctx context.Context, tx pgx.Tx) error {
		// Lock order: the lease, then the head.
		if fence != nil {
			if err := fence(ctx, tx); err != nil {
				return fmt.Errorf("%w: %w", ErrFenced, err)
			}
		}
		var next int64
		if err := tx.QueryRow(ctx, `SELECT epochs FROM kt_tree_head FOR UPDATE`).Scan(&next); err != nil {
			return err
		}
		if uint64(next) != c.Epoch {
			return fmt.Errorf("%w: the database's next epoch is %d, not the %d built", kt.ErrEpochTaken, next, c.Epoch)
		}
		if len(versions) > 0 {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"kt_tree_versions"}, []string{"label", "version", "record"},
				pgx.CopyFromRows(versions)); err != nil {
				return err
			}
		}
		if len(keys) > 0 {
			if err := putNodes(ctx, tx, keys, values); err != nil {
				return err
			}
		}
		// A nil list is stored as NULL: none.
		if _, err := tx.Exec(ctx, `INSERT INTO kt_tree_epochs (epoch, record, update_list) VALUES ($1, $2, $3)`,
			int64(c.Epoch), notNull(c.Record), c.UpdateList); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE kt_tree_head SET epochs = epochs + 1`)
		return err
	}, nil, s.classify)
	if err != nil && !errors.Is(err, kt.ErrEpochTaken) && !errors.Is(err, ErrFenced) {
		return fmt.Errorf("pgtree: commit epoch %d: %w", c.Epoch, err)
	}
	return err
}

// putNodes upserts the nodes keys[i] = values[i] in tx: one statement,
// the arrays sent in binary. (COPY into a temporary table and an upsert
// from it measured no faster: docs/adr/0035.)
func putNodes(ctx context.Context, tx pgx.Tx, keys, values [][]byte) error {
	_, err := tx.Exec(ctx, `INSERT INTO kt_tree_nodes (key, value)
		SELECT * FROM unnest($1::bytea[], $2::bytea[])
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, keys, values)
	return err
}

// notNull is b, or an empty slice for nil (pgx sends a nil slice as NULL).
func notNull(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// nodeArrays returns the keys and values of nodes, one per key (the last
// write of a key wins, as in a sequence of puts), in key order: an upsert
// may change a row only once.
func nodeArrays(nodes []kt.NodeWrite) (keys, values [][]byte) {
	sorted := true
	for i := 1; i < len(nodes); i++ {
		if bytes.Compare(nodes[i-1].Key, nodes[i].Key) >= 0 {
			sorted = false
			break
		}
	}
	if !sorted {
		nodes = slices.Clone(nodes)
		slices.SortStableFunc(nodes, func(a, b kt.NodeWrite) int { return bytes.Compare(a.Key, b.Key) })
	}
	keys = make([][]byte, 0, len(nodes))
	values = make([][]byte, 0, len(nodes))
	for i, n := range nodes {
		if i+1 < len(nodes) && bytes.Equal(n.Key, nodes[i+1].Key) {
			continue
		}
		keys = append(keys, notNull(n.Key))
		values = append(values, notNull(n.Value))
	}
	return keys, values
}

// Snapshot opens a read-only REPEATABLE READ transaction: every read of
// the snapshot sees the database as of its first, whatever commits
// meanwhile. It holds a pool connection until Release.
func (s *Store) Snapshot(ctx context.Context) (kt.TreeSnapshot, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("pgtree: snapshot: %w", s.classify(ctx, err))
	}
	// The first statement takes the transaction's snapshot: here, so
	// that the view is the state when Snapshot returns, not when the
	// caller first reads.
	n := &snapshot{s: s, ctx: ctx, tx: tx}
	if err := tx.QueryRow(ctx, `SELECT epochs FROM kt_tree_head`).Scan(&n.epochs); err != nil {
		n.Release()
		return nil, n.err("snapshot", err)
	}
	return n, nil
}

// snapshot is a read-only REPEATABLE READ transaction.
type snapshot struct {
	s      *Store
	ctx    context.Context
	tx     pgx.Tx
	epochs int64 // read when the snapshot was taken
	// mu makes the reads take turns: a transaction runs one query at a
	// time.
	mu sync.Mutex
}

func (n *snapshot) Release() {
	// Not the snapshot's context, which may be done by now.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.tx.Rollback(ctx)
}

func (n *snapshot) err(what string, err error) error {
	return fmt.Errorf("pgtree: %s: %w", what, n.s.classify(n.ctx, err))
}

// bytesOf runs a query of one bytea; nil when there is no row (or the
// value is NULL).
func (n *snapshot) bytesOf(what, sql string, args ...any) ([]byte, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var b []byte
	err := n.tx.QueryRow(n.ctx, sql, args...).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, n.err(what, err)
	}
	return b, nil
}

func (n *snapshot) Epochs() (uint64, error) { return uint64(n.epochs), nil }

func (n *snapshot) EpochRecord(e uint64) ([]byte, error) {
	if e > 1<<62 {
		return nil, nil
	}
	return n.bytesOf("epoch record", `SELECT record FROM kt_tree_epochs WHERE epoch = $1`, int64(e))
}

func (n *snapshot) UpdateList(e uint64) ([]byte, error) {
	if e > 1<<62 {
		return nil, nil
	}
	return n.bytesOf("update list", `SELECT update_list FROM kt_tree_epochs WHERE epoch = $1`, int64(e))
}

func (n *snapshot) LatestVersion(label string) (uint32, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var v int64
	err := n.tx.QueryRow(n.ctx, `SELECT coalesce(max(version), 0) FROM kt_tree_versions WHERE label = $1`,
		[]byte(label)).Scan(&v)
	if err != nil {
		return 0, n.err("latest version", err)
	}
	return uint32(v), nil
}

func (n *snapshot) Version(label string, v uint32) ([]byte, error) {
	return n.bytesOf("version", `SELECT record FROM kt_tree_versions WHERE label = $1 AND version = $2`,
		[]byte(label), int64(v))
}

func (n *snapshot) Node(k []byte) ([]byte, error) {
	return n.bytesOf("node", `SELECT value FROM kt_tree_nodes WHERE key = $1`, notNull(k))
}

// page reads the scanPage nodes after key after (from the first if
// first).
func (n *snapshot) page(first bool, after []byte) (keys, values [][]byte, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var rows pgx.Rows
	if first {
		rows, err = n.tx.Query(n.ctx, `SELECT key, value FROM kt_tree_nodes ORDER BY key LIMIT $1`, scanPage)
	} else {
		rows, err = n.tx.Query(n.ctx, `SELECT key, value FROM kt_tree_nodes WHERE key > $1 ORDER BY key LIMIT $2`, after, scanPage)
	}
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return nil, nil, err
		}
		keys, values = append(keys, k), append(values, v)
	}
	return keys, values, rows.Err()
}

// ScanNodes reads the nodes a page at a time (keyset pagination, in the
// snapshot's one view), so fn may stop early without the rest being read
// and may call the snapshot's other methods.
func (n *snapshot) ScanNodes(fn func(k, v []byte) (bool, error)) error {
	var after []byte
	for first := true; ; first = false {
		keys, values, err := n.page(first, after)
		if err != nil {
			return n.err("scan nodes", err)
		}
		for i := range keys {
			more, err := fn(keys[i], values[i])
			if err != nil || !more {
				return err
			}
		}
		if len(keys) < scanPage {
			return nil
		}
		after = keys[len(keys)-1]
	}
}
