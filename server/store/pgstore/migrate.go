package pgstore

import (
	"embed"

	"github.com/quicprochat/qpc/internal/pgmigrate"
)

// Migrations: the schema is the SQL files in migrations/, named
// NNNN_what.sql and applied in the order of NNNN by internal/pgmigrate.
// Open applies the ones the database lacks, all in one transaction that
// first takes a transaction-level advisory lock, so that of several
// nodes starting at once exactly one migrates and the others wait, then
// find nothing to do. schema_version records each applied version (the
// account store's migrations have a table of their own).

//go:embed migrations/*.sql
var migrationFiles embed.FS

// versionTable is the mailbox store's version table.
const versionTable = "schema_version"

// migrations returns the embedded migrations.
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

// ErrNewerSchema is Open's refusal of a database migrated by a newer
// build: this one does not know what the newer schema means.
var ErrNewerSchema = pgmigrate.ErrNewerSchema
