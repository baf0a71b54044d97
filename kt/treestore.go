package kt

import (
	"context"
	"errors"
)

// TreeStore keeps the directory's state besides its log: the prefix
// tree's nodes, each label's versions, and each epoch's record and update
// list. It is the seam the directory reaches its database through;
// OpenBoltTree is the embedded one (the bbolt file DBFile). A second
// implementation must pass the conformance suite in kt/ktstoretest
// (RunTree).
//
// Keys and values are opaque bytes to the store: the directory encodes
// node keys (a node's depth and prefix) and all records. The store must
// keep them exactly and order node keys bytewise (ScanNodes).
//
// # One writer
//
// CommitEpoch is the sequencer's: the node that builds epochs (the one
// holding the KT sequencer lease when several nodes share a database)
// calls it, one epoch at a time. Each call is one transaction, all or
// nothing, and refuses an epoch that is not the next one (ErrEpochTaken):
// that check, made inside the transaction, is what keeps a second writer
// (a former lease holder that paused) from committing an epoch built on a
// state that moved on. Snapshots may be taken on every node, concurrently
// with a commit, and see a committed state as a whole.
type TreeStore interface {
	// Snapshot returns a consistent read view of the committed state;
	// the caller releases it. Several may be open at once.
	Snapshot(ctx context.Context) (TreeSnapshot, error)
	// CommitEpoch writes c in one transaction, durably before it
	// returns. ErrEpochTaken if c.Epoch is not the number of committed
	// epochs (epochs are numbered from 0 with no gaps).
	CommitEpoch(ctx context.Context, c EpochCommit) error
	// Close releases the store.
	Close() error
}

// TreeSnapshot is a read view of a TreeStore. The byte slices it returns
// stay valid until Release; callers copy what they keep.
type TreeSnapshot interface {
	// Epochs is the number of committed epochs.
	Epochs() (uint64, error)
	// EpochRecord returns epoch e's record; nil if e is not committed.
	EpochRecord(e uint64) ([]byte, error)
	// UpdateList returns epoch e's update list; nil if none is stored.
	UpdateList(e uint64) ([]byte, error)
	// LatestVersion returns the greatest version stored for label; 0 if
	// none.
	LatestVersion(label string) (uint32, error)
	// Version returns the record of version v of label; nil if none.
	Version(label string, v uint32) ([]byte, error)
	// Node returns the record stored under node key k; nil if none.
	Node(k []byte) ([]byte, error)
	// ScanNodes calls fn with every node key and record in bytewise key
	// order, until fn returns false or an error.
	ScanNodes(fn func(k, v []byte) (more bool, err error)) error
	// Release ends the snapshot.
	Release()
}

// EpochCommit is one epoch's writes.
type EpochCommit struct {
	Epoch    uint64
	Versions []VersionWrite // new versions of labels
	Nodes    []NodeWrite    // new and changed nodes, in bytewise key order
	// UpdateList and Record are stored under Epoch (the list is served
	// from the commit on, so the two go in together).
	UpdateList []byte
	Record     []byte
}

// VersionWrite is one new version of a label.
type VersionWrite struct {
	Label   string
	Version uint32
	Record  []byte
}

// NodeWrite is one node of the tree, new or replacing the one under Key.
type NodeWrite struct {
	Key, Value []byte
}

// ErrEpochTaken reports a CommitEpoch of an epoch that is not the next:
// another writer committed since the epoch was built.
var ErrEpochTaken = errors.New("kt: the epoch is not the store's next (a second writer?)")

// viewTree runs fn on a snapshot of st.
func viewTree(ctx context.Context, st TreeStore, fn func(TreeSnapshot) error) error {
	s, err := st.Snapshot(ctx)
	if err != nil {
		return err
	}
	defer s.Release()
	return fn(s)
}
