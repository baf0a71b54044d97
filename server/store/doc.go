// Package store keeps the delivery service's mailboxes and envelopes.
//
// Call Open first: it opens (or creates, or upgrades) the store file in
// the data directory and returns a *Bolt, which the server holds as a
// Store; Close it last. Options (options.go) set its limits; the zero
// Options are the defaults. A second backend must pass the conformance
// suite in storetest.
//
// Store is the seam: the server talks only to the interface, so a second
// backend is a new implementation, not a rewrite: server/store/pgstore
// keeps the mailboxes in PostgreSQL, for nodes sharing one database. Open returns the embedded default, a bbolt file in the
// data directory, whose single writer goroutine groups concurrent writes
// into one fsynced transaction (group commit) and acknowledges each write
// only after that transaction is durable. Each envelope in it is sealed
// under a key of its own kept in a key-slot file beside it and overwritten
// when the message goes, so that nothing of an acknowledged envelope can
// be read from the data directory (keys.go, docs/storage.md).
//
// The spent-token set is part of this seam, not a seam of its own: a
// delivery token pays for a write (Spend in CreateMailbox and Put), and
// the store records its key in the same transaction as the write, so a
// token is spent exactly when its write is durable: a write refused
// (spent token, quota, unknown mailbox) spends nothing and stores
// nothing, and no crash can fall between the two. Spend alone serves the
// one payment whose write is another store's (a KeyPackage fetch). A
// second backend keeps the spent set in the same database and
// transaction as the mailboxes; storetest checks it (Spend*).
//
// The store never sees an account or a sender: a mailbox is two random IDs
// and an owner key, a message is an opaque envelope under a client-chosen
// message ID. Times are kept coarse.
//
// Where things are:
//
//	store.go    the Store interface, its types and errors
//	options.go  Options, their defaults, CommitInfo
//	bolt.go     Bolt: Open, Stats, Close; the envelope-limit check at Open
//	schema.go   creating and upgrading the file, the upgrade's compaction
//	writer.go   group commit: do queues an operation, the writer commits
//	            a batch in one transaction (update)
//	ops.go      the operations: CreateMailbox, Mailbox, Put, Spend, Fetch,
//	            Ack, DeleteMailbox
//	purge.go    PurgeExpired: messages past the TTL, spends past their time
//	idle.go     last-use days and PurgeIdle
//	records.go  the on-disk layout (buckets, keys, record formats) and the
//	            encodings of its records
//	idem.go     the in-memory idempotency index
//	keys.go     the key-slot file
//	seal.go     sealing an envelope under its key
//	totals.go   the store-wide totals
//
// Imports: the standard library (crypto/aes and crypto/cipher for the
// seal) and bbolt only.
package store
