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
// new checkpoint signed by LogConfig.Signer (no timestamp: C2SP
// tlog-checkpoint, the same bytes as the POSIX driver's), and commits, with
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
// # Witnesses
//
// Under a witness policy (LogConfig.Witnesses) Append commits the entry,
// its tiles and the new size but no checkpoint: a publisher goroutine
// has the checkpoint signed and cosigned by Tessera's own publisher
// (tessera.AppendOptions.CheckpointPublisher, as the POSIX driver does)
// after each Append and every second, and stores it in a transaction of
// its own over an older one (witness.go). Both of its transactions run
// Options.Fence: only the sequencer asks witnesses and publishes.
//
// Where things are: pglog.go (Open, Append, the readers), witness.go
// (the publisher), migrate.go and migrations/ (the schema).
//
// Imports: the standard library, kt, internal/pgmigrate, internal/pgtx,
// pgx, and transparency-dev's merkle, formats and tessera (its public
// api/layout and checkpoint publisher; the tile integration of its
// drivers is internal to it, so the tiles are computed here from merkle's
// compact ranges, RFC 6962 §2.1 and C2SP tlog-tiles).
package pglog
