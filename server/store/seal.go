package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
)

// Envelopes at rest (schema 3): each envelope is sealed with AES-256-GCM
// (NIST SP 800-38D) under a random key of its own, which lives only in the
// key-slot file (keys.go).
//
// The nonce is fixed (all zeros). SP 800-38D §8 requires that an IV never
// repeat under one key; a key here seals exactly one plaintext and is
// never reused (a new message draws a new key from crypto/rand, and the
// schema 3 upgrade draws one per message it rewrites), so the requirement
// holds with a constant IV, and there is no nonce to store.
//
// The additional data is the record's header before the slot (version,
// message ID, arrival time), so a sealed envelope opens only in the record
// it was written for. Integrity is not what this is for — the envelope is
// end-to-end encrypted by its sender, and the server is the adversary —
// but a key in the wrong slot is then an error, not garbage delivered.
const sealOverhead = 16 // the GCM tag

var zeroNonce [12]byte

// newMessageKey draws a fresh key for one envelope.
func newMessageKey() (k [keySize]byte) {
	rand.Read(k[:]) // never fails (it panics instead)
	return k
}

func messageAEAD(key *[keySize]byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// seal appends envelope sealed under key, with ad, to dst.
func seal(dst []byte, key *[keySize]byte, ad, envelope []byte) ([]byte, error) {
	aead, err := messageAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("seal envelope: %w", err)
	}
	return aead.Seal(dst, zeroNonce[:], envelope, ad), nil
}

// unseal returns the envelope sealed in sealed, in a new slice.
func unseal(key *[keySize]byte, ad, sealed []byte) ([]byte, error) {
	aead, err := messageAEAD(key)
	if err != nil {
		return nil, err
	}
	return aead.Open(make([]byte, 0, max(0, len(sealed)-sealOverhead)), zeroNonce[:], sealed, ad)
}
