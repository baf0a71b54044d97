// Package kttest holds key-transparency test fixtures, for tests only:
// no production code imports it.
//
// Start with NewKeys, which makes a log's note signing key and a VRF key:
//
//	k := kttest.NewKeys(t, "kt.example.test/log")
//
// NewForgedLog makes the log a lying server would publish: real
// tlog-tiles signed with the log's key, holding whatever entries and
// update lists the test appends, served by Handler as the server's
// kt_listen serves them. Checkpoint waits for the signed checkpoint of
// everything appended.
//
// OpenDirectory opens a real directory for a test; Lookup looks a label
// up in one as a client does (through the wire encoding, verified).
//
// kt's own internal tests (package kt) cannot import this package, which
// imports kt; they make their keys with kt/kttest/logkeys, which NewKeys
// calls.
package kttest
