// Package logkeys makes the keys of a key-transparency log for tests: its
// checkpoint signer and verifier and its VRF key. Call New:
//
//	k := logkeys.New(t, "kt.example.test/log")
//
// It imports neither kt nor anything that does, so that kt's own internal
// tests (package kt) can use it as well as kttest, which re-exports it
// (kttest.Keys, kttest.NewKeys). For tests only.
package logkeys
