// Package kt is qpc's key transparency: a verifiable, privacy-preserving
// directory of account credentials (docs/key-transparency.md).
//
// The server holds a Directory: a prefix tree (a binary Merkle tree over
// 256-bit indices) whose leaves commit to (label, version, value), where a
// leaf's index is the VRF output of (label, version) (package kt/vrf, RFC
// 9381) and its commitment an HMAC under a random opening, so the tree
// reveals neither usernames nor values. Every epoch (1 s by default) the
// queued updates, padded with fake leaves, are inserted, and the epoch's
// record (number, time, root, digest of the inserted leaves, configuration
// hash) is appended to an RFC 6962 log kept by Tessera as C2SP tlog-tiles,
// with C2SP checkpoints signed as notes (golang.org/x/mod/sumdb/note).
// The epoch's list of inserted leaves (UpdateList: indices and
// commitments only) is kept with the record and served beside the tiles
// (Directory.Handler), so that an auditor (package kt/audit, with a
// ReplayTree of its own) can check each tree follows from the previous.
//
// A client holds a Verifier, pinned to the log's note key, the VRF key and
// the configuration hash. It checks lookups (current version present, next
// absent, and the binary ladder below it), owner histories (every version,
// provably complete), and consistency between checkpoints; it keeps the
// newest checkpoint it accepted and refuses anything older or inconsistent.
// Monitor (owner monitoring) compares an owner's history with the versions
// it published and reports any other as an Alarm with the evidence.
//
// # Storage
//
// The directory reaches its state through two interfaces: TreeStore
// (treestore.go: the tree's nodes, the labels' versions, the epoch
// records and update lists; embedded: OpenBoltTree, the bbolt file
// DBFile, treebolt.go and store.go) and LogDriver (logdriver.go: the
// epoch log; embedded: OpenPOSIXLog, Tessera's POSIX driver in LogDir).
// DirectoryOptions.Tree and OpenLog put others; kt/ktstoretest holds the
// conformance suites they must pass. Both say what one sequencer at a
// time needs from an implementation shared by several nodes.
//
// kt imports kt/vrf, Tessera, transparency-dev/merkle, x/mod/sumdb/note,
// cryptobyte and bbolt; it imports nothing else of qpc, so a client can
// verify with it alone.
package kt
