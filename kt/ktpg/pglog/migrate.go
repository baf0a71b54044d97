package pglog

import (
	"embed"

	"github.com/quicprochat/qpc/internal/pgmigrate"
)

// The schema is the SQL files in migrations/, applied by internal/pgmigrate
// under its advisory lock; ktlog_schema_version records the applied
// versions (other components sharing the database have tables of their
// own).

//go:embed migrations/*.sql
var migrationFiles embed.FS

// versionTable is the log's version table.
const versionTable = "ktlog_schema_version"

// ErrNewerSchema is Open's refusal of a database migrated by a newer
// build.
var ErrNewerSchema = pgmigrate.ErrNewerSchema
