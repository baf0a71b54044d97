package keyset

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/quicprochat/qpc/internal/pgmigrate"
	"github.com/quicprochat/qpc/internal/pgtx"
)

// ErrMismatch is Check's refusal: a key of this node is not the one the
// database records for the server (its other nodes hold another key set).
var ErrMismatch = errors.New("this node's key set is not the one the server's database records")

// Key is one key of the set: its file name and the SHA-256 of its public
// value (Fingerprint).
type Key struct {
	Name        string
	Fingerprint [32]byte
}

// Fingerprint is the SHA-256 of a key's public value.
func Fingerprint(public []byte) [32]byte { return sha256.Sum256(public) }

//go:embed migrations/*.sql
var migrationFiles embed.FS

// versionTable numbers this component's migrations apart from the
// stores' own.
const versionTable = "keyset_schema_version"

// Book is the record of the key set in the database.
type Book struct {
	pool *pgxpool.Pool
}

// Open connects to the database at url (the store URL) and brings the
// record's schema up to date.
func Open(ctx context.Context, url string) (*Book, error) {
	ms, err := pgmigrate.Load(migrationFiles, "migrations", versionTable)
	if err != nil {
		return nil, fmt.Errorf("keyset: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, _, err := pgtx.OpenMigrated(ctx, url, 1, "qpc-server keyset", ms, nil)
	if err != nil {
		return nil, fmt.Errorf("keyset: open: %w", err)
	}
	return &Book{pool: pool}, nil
}

// Close closes the connection.
func (b *Book) Close() { b.pool.Close() }

// Recorded returns the names of the keys the database records, sorted.
func (b *Book) Recorded(ctx context.Context) ([]string, error) {
	rows, err := b.pool.Query(ctx, `SELECT name FROM server_keys ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("keyset: reading the recorded keys: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("keyset: reading the recorded keys: %w", err)
	}
	return names, nil
}

// Check records every key the database does not record yet and compares
// the others: a key whose fingerprint differs from the recorded one fails
// with ErrMismatch naming it (never its value). Two nodes checking at once
// cannot both record: the name is the primary key, and the loser compares
// against the winner's row.
func (b *Book) Check(ctx context.Context, keys []Key) error {
	var differ []string
	err := pgtx.Write(ctx, b.pool, func(ctx context.Context, tx pgx.Tx) error {
		differ = differ[:0]
		now := time.Now().Unix()
		for _, k := range keys {
			if _, err := tx.Exec(ctx, `INSERT INTO server_keys (name, fingerprint, recorded) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`,
				k.Name, k.Fingerprint[:], now); err != nil {
				return err
			}
			var fp []byte
			if err := tx.QueryRow(ctx, `SELECT fingerprint FROM server_keys WHERE name = $1`, k.Name).Scan(&fp); err != nil {
				return err
			}
			if subtle.ConstantTimeCompare(fp, k.Fingerprint[:]) != 1 {
				differ = append(differ, k.Name)
			}
		}
		return nil
	}, nil, func(_ context.Context, err error) error { return err })
	if err != nil {
		return fmt.Errorf("keyset: checking the key set: %w", err)
	}
	if len(differ) > 0 {
		slices.Sort(differ)
		return fmt.Errorf("%w: %s differ%s from the key the server's other nodes hold: copy the key set of a running node into this node's data directory (docs/scaling.md)",
			ErrMismatch, strings.Join(differ, ", "), map[bool]string{true: "s", false: ""}[len(differ) == 1])
	}
	return nil
}
