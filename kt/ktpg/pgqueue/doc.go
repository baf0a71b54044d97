// Package pgqueue is the queue of publishes (kt.SharedQueue) of a
// key-transparency directory whose nodes share one PostgreSQL database
// (docs/key-transparency.md, "Several nodes"; ADR 0037).
//
// Call Open first with a postgres:// URL and the sequencer lease's fence:
// it connects a pool of its own, applies the schema (migrations/*.sql,
// through internal/pgmigrate, version table kt_queue_schema_version) and
// starts listening for settled updates. Hand the *Queue to
// kt.DirectoryOptions.Queue, with the lease as Lease; the directory owns
// it from then on and closes it.
//
// Any node adds rows (Add) and waits for their outcome (Wait); the
// sequencer takes them into an epoch (Take), settles them (Settle) and, on
// taking the lease, settles or queues again what its predecessor took
// (Taken, Requeue). Take, Settle and Requeue run Options.Fence inside
// their transaction, so a former lease holder cannot take or settle
// updates once the lease moved on. Settle notifies every node (NOTIFY
// kt_pending); each node's listener then reads the outcomes of all its
// waiters in one query, and polls every FallbackPoll should a
// notification be lost.
//
// Imports: the standard library, kt, internal/pgmigrate, internal/pgtx
// and pgx.
package pgqueue
