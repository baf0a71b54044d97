// Package pgmigrate applies a component's schema to a PostgreSQL
// database: versioned SQL files, applied at start, under a lock so that of
// several nodes starting at once exactly one migrates.
//
// Call Load first with the component's embedded files and the name of
// its version table, then Apply with a pool each time the component opens:
//
//	//go:embed migrations/*.sql
//	var files embed.FS
//
//	set, err := pgmigrate.Load(files, "migrations", "schema_version")
//	applied, err := set.Apply(ctx, pool)
//
// (Migrate does both, for a component that needs the Set for nothing
// else.)
//
// Files are named NNNN_what.sql, numbered 1, 2, 3... without gaps. Apply
// runs every version the database lacks in one transaction that first
// takes a transaction-level advisory lock (one key for every component:
// migrations never run concurrently on one database), and records each
// version in the component's table. A database whose table holds a
// version newer than the files is refused with ErrNewerSchema.
//
// Several components share one database (the mailbox store and the account
// store, ADR 0029 and 0033), each with its own version table, so that
// each numbers its migrations on its own.
//
// Imports: the standard library and pgx.
package pgmigrate
