// Package pgtx runs the write transactions of qpc's PostgreSQL stores
// (server/store/pgstore, server/accounts/pgaccounts) the way both need
// them: a transaction PostgreSQL aborted for a deadlock or a serialization
// failure is run again, and one that has started runs to its outcome.
//
// Call Write with the store's pool, the transaction's body and the
// store's own classification of errors.
package pgtx
