// Package store keeps the delivery service's mailboxes and envelopes.
//
// Store is the seam: the server talks only to the interface, so a second
// backend (PostgreSQL for multi-node deployments) is a new implementation,
// not a rewrite. Open returns the embedded default, a bbolt file in the
// data directory, whose single writer goroutine groups concurrent writes
// into one fsynced transaction (group commit) and acknowledges each write
// only after that transaction is durable.
//
// The store never sees an account or a sender: a mailbox is two random IDs
// and an owner key, a message is an opaque envelope under a client-chosen
// message ID. Times are kept coarse.
//
// Imports: the standard library and bbolt only.
package store
