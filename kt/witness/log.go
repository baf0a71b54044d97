package witness

import (
	"context"

	"golang.org/x/mod/sumdb/note"
)

// Log is one transparency log the witness is told to trust: checkpoints
// whose first line is Origin and which carry a valid signature by Verifier
// are considered; every other checkpoint is refused with 404.
type Log struct {
	Origin   string
	Verifier note.Verifier // the log's checkpoint key

	// Check, if set, runs after signature and consistency checks and before
	// the state is updated; a non-nil error refuses the checkpoint with 422
	// and nothing is cosigned. old is the tree the witness last cosigned
	// (Size 0 and the empty root on first contact), new the tree of the
	// checkpoint offered; signedCheckpoint is the whole signed note as the
	// log sent it. Check may be called concurrently for different logs, but
	// never concurrently for the same log.
	Check func(ctx context.Context, old Tree, new Tree, signedCheckpoint []byte) error
}

// Tree is a Merkle tree head: its size and its RFC 6962 root hash.
type Tree struct {
	Size uint64
	Root [32]byte
}
