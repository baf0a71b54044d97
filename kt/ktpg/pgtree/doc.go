// Package pgtree is the key transparency directory's tree store
// (kt.TreeStore) on PostgreSQL, for deployments whose nodes share one
// database (docs/adr/0035-kt-tree-store-on-postgresql.md). It passes the
// conformance suite kt/ktstoretest.RunTree.
//
// Call Open first with a postgres:// URL (or New with a pool the caller
// keeps): it applies the schema's migrations (migrations/*.sql, through
// internal/pgmigrate, version table kt_tree_schema_version; and the
// leases' schema of internal/pglease) and returns a *Store; hand it to
// the directory as kt.Options.Tree, which owns it from then on.
//
// Reads: Snapshot opens a read-only REPEATABLE READ transaction and makes
// its first read at once, so the snapshot is the committed state at that
// moment, whole, whatever commits run meanwhile (PostgreSQL's MVCC keeps
// the rows it sees); it holds one pool connection until Release. Keep
// snapshots short: a long one holds back vacuum. Each read is one query
// (a round trip). A snapshot may be shared by goroutines; its reads take
// turns.
//
// Writes: CommitEpoch is one transaction (internal/pgtx: run again on a
// deadlock, committed with synchronous_commit on). It locks the one row
// of kt_tree_head (FOR UPDATE) and refuses an epoch other than the
// committed count with kt.ErrEpochTaken; then it copies the versions in
// (COPY) and upserts the nodes with one INSERT ... SELECT FROM unnest(...)
// ON CONFLICT DO UPDATE.
//
// Fencing (the KT sequencer of several nodes): a Fence is a
// func(ctx, pgx.Tx) error that CommitEpoch runs first in its transaction
// (the same form as kt/ktpg/pglog's, so one serves both stores). Hold a
// lease of internal/pglease and pass its check, for every CommitEpoch,
// the directory's:
//
//	pgtree.Options{Fence: pglease.Fence("kt-sequencer", currentToken)}
//
// or for one call, store.CommitEpochFenced(ctx, c, fence), where
// currentToken returns the token this node holds the lease with (0 when
// it holds none: every commit is refused). A commit whose lease was
// taken over, released or has expired fails with an error wrapping
// ErrFenced and pglease.ErrFenced and writes nothing; the check's share
// lock on the lease's row lasts to the commit, so a takeover waits for an
// epoch in flight. The node must then stop sequencing and, to sequence
// again, Acquire the lease anew and reopen its directory (its in-memory
// tree may lag what the new holder committed).
//
// Imports: the standard library, kt, internal/pglease, internal/pgmigrate,
// internal/pgtx and pgx.
package pgtree
