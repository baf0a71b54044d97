// Package store keeps the delivery service's mailboxes and envelopes.
//
// Store is the seam: the server talks only to the interface, so a second
// backend (PostgreSQL for multi-node deployments) is a new implementation,
// not a rewrite. Open returns the embedded default, a bbolt file in the
// data directory, whose single writer goroutine groups concurrent writes
// into one fsynced transaction (group commit) and acknowledges each write
// only after that transaction is durable. Each envelope in it is sealed
// under a key of its own kept in a key-slot file beside it and overwritten
// when the message goes, so that nothing of an acknowledged envelope can
// be read from the data directory (keys.go, docs/storage.md).
//
// The store never sees an account or a sender: a mailbox is two random IDs
// and an owner key, a message is an opaque envelope under a client-chosen
// message ID. Times are kept coarse.
//
// Imports: the standard library (crypto/aes and crypto/cipher for the
// seal) and bbolt only.
package store
