// Package pgaccounts is the account store (accounts.Store) on
// PostgreSQL, for deployments whose nodes share one database.
//
// Call Open first with a postgres:// URL: it connects a pool (pgx),
// applies the schema's migrations (migrations/*.sql, through
// internal/pgmigrate, version table account_schema_version) and returns a
// *Store; hand it to accounts.New, which owns it from then on. It passes
// the conformance suite in server/accounts/accountstest.
//
// Every method is one transaction at READ COMMITTED, committed with
// synchronous_commit on before it returns. An operation that changes an
// account locks the account's row first (SELECT ... FOR UPDATE), so the
// operations of one account run one at a time across every node sharing
// the database, and each later statement of the transaction sees what the
// previous lock holder committed: a username registered once (the primary
// key, an insert waiting for a concurrent one's outcome), the device limit
// and the quota never exceeded, a KeyPackage taken once. A transaction
// PostgreSQL aborts for a deadlock or a serialization failure is run
// again (docs/adr/0033-postgresql-account-store.md says why row locks and
// not SERIALIZABLE).
//
// Imports: the standard library, server/accounts, account,
// internal/pgmigrate and pgx.
package pgaccounts
