// Package pgseq is the sequencer lease of a key-transparency directory
// whose nodes share one PostgreSQL database (kt.Lease on internal/pglease;
// docs/key-transparency.md, "Several nodes"; ADR 0037).
//
// Call New first with the database's leases (pglease.Open), a name for
// this node and the lease's time to live; give the *Lease to
// kt.DirectoryOptions.Lease and its Fence to every store the sequencer
// writes (the tree store, the log driver, pgqueue), which run it inside
// their write transactions: a write made by a node whose lease was taken
// over, or expired, fails there (pglease.ErrFenced) and changes nothing.
//
// Imports: the standard library, internal/pglease and pgx.
package pgseq
