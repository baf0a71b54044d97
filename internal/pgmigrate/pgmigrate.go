package pgmigrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Lock is the advisory lock key of every migration ("qpc" "mig"),
// shared by every node and component on the database.
const Lock int64 = 0x717063_6d6967

// ErrNewerSchema is Apply's refusal of a database migrated by a newer
// build: this one does not know what the newer schema means.
var ErrNewerSchema = errors.New("the database's schema is newer than this qpc-server knows")

// Set is one component's migrations, in version order.
type Set struct {
	table string
	list  []migration
}

type migration struct {
	version int
	name    string
	sql     string
}

// tableName is what Load accepts as a version table: a plain lower-case
// identifier, so that it needs no quoting.
var tableName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Load reads the migrations NNNN_what.sql in dir of fsys; table names the
// component's version table.
func Load(fsys fs.FS, dir, table string) (*Set, error) {
	if !tableName.MatchString(table) {
		return nil, fmt.Errorf("pgmigrate: version table %q is not a plain identifier", table)
	}
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("pgmigrate: %w", err)
	}
	s := &Set{table: table}
	for _, e := range entries {
		v, err := version(e.Name())
		if err != nil {
			return nil, err
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("pgmigrate: %w", err)
		}
		s.list = append(s.list, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(s.list, func(a, b migration) int { return a.version - b.version })
	for i, m := range s.list {
		if m.version != i+1 {
			return nil, fmt.Errorf("pgmigrate: migration %s: versions must run 1, 2, 3... without gaps", m.name)
		}
	}
	return s, nil
}

// version is the NNNN of NNNN_what.sql.
func version(name string) (int, error) {
	num, _, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
	v, err := strconv.Atoi(num)
	if !ok || err != nil || v <= 0 || !strings.HasSuffix(name, ".sql") {
		return 0, fmt.Errorf("pgmigrate: migration file %q is not named NNNN_what.sql", name)
	}
	return v, nil
}

// Newest is the newest version of the set (0 for none).
func (s *Set) Newest() int { return len(s.list) }

// Migrate is Load, then Apply on db: for a component that needs its
// Set for nothing else.
func Migrate(ctx context.Context, db Beginner, fsys fs.FS, dir, table string) ([]int, error) {
	s, err := Load(fsys, dir, table)
	if err != nil {
		return nil, err
	}
	return s.Apply(ctx, db)
}

// Beginner starts transactions: a *pgxpool.Pool or a *pgx.Conn.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Apply brings the database to the newest version of the set, returning
// the versions it applied (none when it was up to date).
func (s *Set) Apply(ctx context.Context, db Beginner) ([]int, error) {
	var applied []int
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// Held until this transaction ends: another node's Apply
		// waits here, then sees what this one applied.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", Lock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.table+` (
			version integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var current int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+s.table).Scan(&current); err != nil {
			return err
		}
		if newest := len(s.list); current > newest {
			return fmt.Errorf("%w: %s %d, this build knows up to %d", ErrNewerSchema, s.table, current, newest)
		}
		for _, m := range s.list[current:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+s.table+" (version) VALUES ($1)", m.version); err != nil {
				return err
			}
			applied = append(applied, m.version)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return applied, nil
}
