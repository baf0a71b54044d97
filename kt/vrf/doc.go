// Package vrf implements ECVRF-EDWARDS25519-SHA512-TAI, the elliptic-curve
// verifiable random function of RFC 9381 (suite_string 0x03, §5.5), on
// filippo.io/edwards25519.
//
// A VRF is a keyed hash whose output anyone holding the public key can
// check: Prove gives the 64-byte output beta and an 80-byte proof pi; Verify
// recomputes beta from the public key, the input and pi, or fails. Key
// transparency uses it so that the directory tree is indexed by VRF(label)
// and reveals no labels, while every client can still check that the index
// it was shown is the right one for the label it asked about.
//
// Keys are RFC 8032 §5.1.5 Ed25519 keys (a 32-byte seed; the public key is
// the Ed25519 public key of that seed). Do not use the same key for Ed25519
// signatures and for the VRF.
package vrf
