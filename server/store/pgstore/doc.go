// Package pgstore is the mailbox store (store.Store) on PostgreSQL, for
// deployments whose nodes share one database.
//
// Call Open first with a postgres:// URL and the store's Options: it
// connects a pool (pgx), applies the schema's migrations under an
// advisory lock (migrate.go, migrations/*.sql) and returns a *Store;
// Close it last. It passes the conformance suite in store/storetest.
//
// Every write is a PostgreSQL transaction, committed with
// synchronous_commit on before the call returns: acknowledged means
// committed. A token's spend is a row of the spent table inserted in the
// transaction of the write it pays for. Writes to one mailbox take its
// row's lock first, so concurrent and retried sends through any number of
// nodes see each other: a message ID is stored once, quotas are exact. A
// send is one call of the schema's qpc_put function; a node commits the
// sends queued at the same time in one transaction (batch.go).
//
// Where things are: pgstore.go (Open, Close, Totals, Ping, the write
// helper), migrate.go and migrations/ (the schema), ops.go (the
// operations), batch.go (group commit of sends), purge.go (expiry and
// idle mailboxes), notify.go (cross-node wake-ups: store.Waker, by
// LISTEN/NOTIFY; ADR 0038).
//
// Unlike the embedded bbolt store, envelopes are not sealed under keys of
// their own: an acknowledged envelope's bytes may remain in the
// database's files, WAL and backups until PostgreSQL reuses the space
// (docs/adr/0029-postgresql-mailbox-store.md).
//
// Imports: the standard library, store and pgx.
package pgstore
