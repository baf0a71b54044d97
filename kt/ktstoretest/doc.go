// Package ktstoretest holds the conformance suites of the key
// transparency directory's two storage seams: RunLog for kt.LogDriver
// (the epoch log: sequencing, checkpoints, tiles) and RunTree for
// kt.TreeStore (the prefix tree's nodes, the labels' versions, the epoch
// records and update lists). A backend's test calls them with a function
// that makes a fresh, empty store for each subtest; the embedded
// implementations (Tessera's POSIX driver, the bbolt file) run them in
// this package's own tests, which keeps the suites honest.
//
// The log suite checks what the directory and every verifier rely on:
// indices handed out in order and never twice (also to concurrent
// appends), entries readable from their bundles, checkpoints signed by the
// configured signer whose roots prove every entry's inclusion and each
// other's consistency (RFC 6962 §2.1), tlog-tiles resources by path equal
// to the typed reads and nothing outside them, and a reopened log keeping
// its entries and growing on from them.
//
// The tree suite checks what the directory relies on: each commit whole
// or not at all, only the next epoch accepted (the fence against a second
// writer), records, lists, versions and nodes read back byte for byte
// (also after the committer reuses its buffers, and after a reopen), the
// greatest version of a label among labels that prefix one another, node
// keys scanned in bytewise order, and snapshots that never see part of an
// epoch, also while commits run.
package ktstoretest
