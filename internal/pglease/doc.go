// Package pglease is a named lease in PostgreSQL with a fencing token:
// of the nodes sharing one database, at most one holds a lease at a
// time, and every write the holder makes under the lease can be checked,
// inside the write's own transaction, against the token it was granted,
// so that a holder that paused (a long GC, a stopped VM, a partition)
// and lost the lease to another node has its late writes refused.
//
// Call Open first with the pool of the database (it applies the schema,
// version table lease_schema_version); then, on each node:
//
//	token, ok, err := l.Acquire(ctx, "kt-sequencer", nodeID, ttl)
//	// ok: this node holds the lease until ttl passes without a Renew
//	err = l.Renew(ctx, "kt-sequencer", nodeID, token, ttl) // well within ttl
//	// in every write made as the holder, in the write's transaction:
//	err = pglease.Check(ctx, tx, "kt-sequencer", token) // ErrFenced: step down
//	// or hand a store the check as its fence (kt/ktpg/pgtree, kt/ktpg/pglog):
//	fence := pglease.Fence("kt-sequencer", currentToken)
//	err = l.Release(ctx, "kt-sequencer", nodeID, token)
//
// The rules:
//
//   - Time is the database's (clock_timestamp()): a lease expires ttl
//     after its last Acquire or Renew by the database server's clock, so
//     the nodes' clocks need not agree.
//   - A lease is taken only when it is free (never held, released, or
//     expired). Every grant adds one to the lease's token: tokens grow
//     strictly, across takeovers, releases and restarts (the row is never
//     deleted).
//   - Renew extends a lease still held with the given token; once it has
//     expired it fails with ErrLost, even when nobody took it yet: the
//     holder must Acquire again and gets a new token.
//   - Check reads the lease's row with FOR SHARE inside the caller's
//     transaction and refuses (ErrFenced) unless the token is the current
//     one and the lease has not expired. The share lock is held to the
//     end of the caller's transaction, and a takeover must lock the row
//     for update: a takeover waits for a checked write in flight to
//     commit or roll back, and a write checked after the takeover sees
//     the new token. So every write checked with token t commits before
//     the grant of t+1, or not at all.
//
// Run Check at READ COMMITTED (PostgreSQL's default), as pgtx.Write
// does: at REPEATABLE READ a takeover committed after the transaction's
// snapshot makes the share lock fail with a serialization error, which
// is a refusal too, but a less clear one.
//
// Imports: the standard library, internal/pgmigrate and pgx.
package pglease
