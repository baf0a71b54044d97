package mls

import (
	"bytes"
	"testing"
)

// BenchmarkKeySchedule measures one epoch transition of the key schedule
// (RFC 9420 §8): joiner, welcome and epoch secrets and all nine derived
// secrets, for a commit with one external PSK.
func BenchmarkKeySchedule(b *testing.B) {
	for _, id := range []CipherSuiteID{SuiteX25519AES128GCMSHA256Ed25519, SuiteXWingChaCha20Poly1305SHA256Ed25519} {
		s := mustSuite(b, id)
		b.Run(suiteName(id), func(b *testing.B) {
			gc := &GroupContext{
				Version: MLS10, CipherSuite: id, GroupID: []byte("bench group"), Epoch: 1,
				TreeHash: bytes.Repeat([]byte{1}, 32), ConfirmedTranscriptHash: bytes.Repeat([]byte{2}, 32),
			}
			initSecret := bytes.Repeat([]byte{3}, 32)
			commit := bytes.Repeat([]byte{4}, 32)
			psks := []PSKInput{{ID: ExternalPSKID([]byte("psk id"), bytes.Repeat([]byte{5}, 32)), PSK: bytes.Repeat([]byte{6}, 32)}}
			b.ReportAllocs()
			for b.Loop() {
				psk, err := s.PSKSecret(psks)
				if err != nil {
					b.Fatal(err)
				}
				e, err := s.DeriveEpoch(initSecret, commit, psk, gc)
				if err != nil {
					b.Fatal(err)
				}
				initSecret = e.InitSecret
				gc.Epoch++
			}
		})
	}
}

func suiteName(id CipherSuiteID) string {
	switch id {
	case SuiteX25519AES128GCMSHA256Ed25519:
		return "suite1"
	case SuiteP256AES128GCMSHA256P256:
		return "suite2"
	case SuiteX25519ChaCha20Poly1305SHA256Ed25519:
		return "suite3"
	case SuiteXWingChaCha20Poly1305SHA256Ed25519:
		return "xwing"
	}
	return "unknown"
}
