// Package state keeps the qpc client's local state (identity keys, MLS
// group state, contacts, outbox, history, ...) in one bbolt file in which
// nothing sensitive is stored in the clear: values, logical keys and bucket
// names are all encrypted or hidden under keys derived from the user's
// passphrase.
//
// # Use
//
// Create makes a new state directory and file; Open unlocks an existing one.
// All reads and writes go through transactions: Store.Update (read-write,
// atomic and durable on return) and Store.View (read-only snapshot). A Tx
// offers two kinds of buckets, fixed when a bucket is first written:
//
//   - keyed buckets: Put, Get, Delete, ForEach (a map of byte-string keys);
//   - sequenced buckets: Append, GetSeq, DeleteSeq, ForEachSeq (an ordered
//     queue such as an outbox or a history, numbered from 1 upwards).
//
// Only one process may have the file open at a time (bbolt's file lock);
// a second Open fails with ErrLocked after Options.LockTimeout.
//
// # Keys
//
// Argon2id (RFC 9106; default t=3, m=64 MiB, p=4, 16-byte random salt)
// turns the passphrase into a 32-byte master secret. HKDF-SHA256 expands it
// with distinct info strings into
//
//	encKey: XChaCha20-Poly1305 key for every stored value
//	macKey: HMAC-SHA256 key that hides bucket names and entry keys
//
// The master secret is zeroed right away; Close zeroes encKey and macKey.
// (Go cannot promise that no copy survives elsewhere in memory, for example
// in the AEAD and HMAC states built per operation until they are collected.)
//
// # On-disk format, version 1
//
// The file is a bbolt database with these top-level buckets:
//
//	"meta" (clear text, the only readable names)
//	    "params": version u16 | time u32 | memoryKiB u32 | threads u8 |
//	              salt length u8 (=16) | salt            (big-endian, 28 bytes)
//	    "check":  Seal("qpc-state key check: ...",
//	                   AAD = "qpc-state v1 key check" || params)
//	one bucket per logical bucket, named HMAC(macKey, "bucket" || name)[:16]
//	    0x00 (1-byte key): header = Seal(kind || name, AAD(0x00))
//	                       kind 'k' keyed or 's' sequenced
//	    keyed entry:      key   HMAC(macKey, diskBucket || key)   (32 bytes)
//	                      value Seal(u16 len(key) || key || value, AAD(diskKey))
//	    sequenced entry:  key   seq as u64 big-endian             (8 bytes)
//	                      value Seal(value, AAD(diskKey))
//
// where Seal(p, aad) = nonce(24 random bytes) || XChaCha20-Poly1305(encKey,
// nonce, p, aad) and AAD(diskKey) = "qpc-state v1" || diskBucket || diskKey.
// Binding every value to its slot means a ciphertext copied or swapped to
// another slot (or bucket) fails to authenticate and reads as ErrCorrupt,
// never as a wrong value; a keyed entry also re-checks that its decrypted
// key hashes to its slot. Sequenced buckets use bbolt's NextSequence.
//
// The header exists so that ChangePassphrase, which must re-key the hidden
// bucket names, can recover each bucket's logical name and kind; it also
// makes using a bucket as the wrong kind an error.
//
// Open reads "params" and rejects absurd cost parameters (time outside
// 1..64, threads outside 1..64, memory above 4 GiB) as ErrCorrupt before
// deriving anything, then derives the keys and opens "check": failure means
// ErrPassphrase (a wrong passphrase and an altered check value cannot be
// told apart). Because the parameters are part of the check's AAD, a file
// whose parameters were altered does not open either.
//
// # What the file still reveals
//
// The number of buckets, the number of entries in each and whether each
// bucket is keyed or sequenced (by key length), the highest sequence
// number ever used in a sequenced bucket (bbolt keeps it in clear), the
// sizes of values (plus 24+16+2 bytes), and the Argon2id cost. bbolt reuses
// freed pages without erasing them, so ciphertexts of deleted entries, and
// after ChangePassphrase ciphertexts under the old keys and the old salt,
// may remain in the file until their pages are reused: someone holding an
// old copy of the file or the old passphrase learns no more from them than
// from an old backup.
package state
