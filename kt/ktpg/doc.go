// Package ktpg connects a key-transparency directory node to the
// PostgreSQL database it shares with the other nodes of a deployment
// (docs/key-transparency.md, "Several nodes"; ADR 0037): the tree store
// (pgtree), the log (pglog), the queue of publishes (pgqueue) and the
// sequencer lease (pgseq), every write of the sequencer fenced by the
// lease.
//
// Call Configure first with the database's URL and the directory's
// options, then kt.OpenDirectory with them; close the Node after the
// directory.
//
// Imports: the standard library, kt and its ktpg packages,
// internal/pglease, internal/pgtx and pgx.
package ktpg
