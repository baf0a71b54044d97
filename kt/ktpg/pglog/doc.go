// Package pglog is the key transparency directory's epoch log
// (kt.LogDriver) on PostgreSQL, for deployments whose nodes share one
// database (issue 21, ADR 0036).
//
// Call Open first with a pool (internal/pgtx.Open), the log's
// kt.LogConfig and Options: it applies the schema's migrations
// (migrations/*.sql, version table ktlog_schema_version) and returns a
// *Log; Close it before the pool. The directory takes it through
// kt.DirectoryOptions.OpenLog. It passes the conformance suite in
// kt/ktstoretest (RunLog) and serves the same C2SP tlog-tiles bytes as
// Tessera's POSIX driver (kt.OpenPOSIXLog) for the same entries.
//
// # Append
//
// Each Append is one transaction: it locks the log's head row (SELECT
// ... FOR UPDATE), runs the fence (Options.Fence, or the one given to
// AppendFenced) in the same transaction, assigns the next index, writes
// the entry into its bundle, the hash tiles the new leaf changes and a
// new checkpoint signed by LogConfig.Signer, and commits, with
// synchronous_commit on, before it returns. The head row lock serialises
// appends from every node: concurrent appends get consecutive indices.
// A fence that returns an error rolls the whole transaction back: the log
// is unchanged. The KT multi-node sequencer passes its lease check there
// (internal/pglease), so that a former holder whose lease was taken over
// while it paused cannot integrate an entry.
//
// # Readers
//
// IntegratedSize, ReadCheckpoint, ReadTile, ReadEntryBundle and
// ReadResource read committed rows only: the checkpoint and the tiles it
// commits to are written in one transaction, so a reader never sees a
// checkpoint whose tiles are missing, nor an entry that is not
// integrated. Each tile and bundle is kept once, in its newest width; a
// partial resource of a smaller width is its prefix (C2SP tlog-tiles:
// the hashes and entries of a tile never change once written).
//
// Witness cosigning (LogConfig.Witnesses) is not implemented here yet:
// Open refuses a configuration that asks for it.
//
// Imports: the standard library, kt, internal/pgmigrate, internal/pgtx,
// pgx, and transparency-dev's merkle, formats and tessera/api/layout.
package pglog
