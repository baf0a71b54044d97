// Package pgtx connects qpc's PostgreSQL stores (server/store/pgstore,
// server/accounts/pgaccounts) and runs their write transactions the way
// both need them: a transaction PostgreSQL aborted for a deadlock or a serialization
// failure is run again, and one that has started runs to its outcome.
//
// Call Open to connect a store's pool (synchronous commits, the store's
// pool size and application name), or OpenMigrated to connect it and
// apply the store's migrations (internal/pgmigrate), then Write with that
// pool, the transaction's body and the store's own classification of
// errors.
package pgtx
