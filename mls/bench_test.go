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

// benchSuites are the suites the message benchmarks run over: the AES-GCM
// baseline suite and the X-Wing suite (ChaCha20-Poly1305).
var benchSuites = []CipherSuiteID{SuiteX25519AES128GCMSHA256Ed25519, SuiteXWingChaCha20Poly1305SHA256Ed25519}

// BenchmarkPrivateMessage1KiB measures sending and receiving one 1 KiB
// application message: sign, ratchet step, content and sender-data
// encryption, then the reverse with signature verification (§6.3).
func BenchmarkPrivateMessage1KiB(b *testing.B) {
	for _, id := range benchSuites {
		b.Run(suiteName(id), func(b *testing.B) {
			f := newProtectFixture(b, id, 2)
			data := bytes.Repeat([]byte{'m'}, 1024)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				ac, err := f.s.SignContent(WireFormatPrivateMessage, f.app(1, data), f.gc, f.sigPriv)
				if err != nil {
					b.Fatal(err)
				}
				pm, err := f.s.ProtectPrivate(ac, f.sender, f.senderData, 0)
				if err != nil {
					b.Fatal(err)
				}
				got, err := f.s.UnprotectPrivate(pm, f.gc, f.recv, f.senderData, f.signer)
				if err != nil || len(got.Content.ApplicationData) != len(data) {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawAEAD1KiB is the floor for BenchmarkPrivateMessage1KiB: one
// seal and one open of 1 KiB with the same suite AEAD and no framing.
func BenchmarkRawAEAD1KiB(b *testing.B) {
	for _, id := range benchSuites {
		b.Run(suiteName(id), func(b *testing.B) {
			s := mustSuite(b, id)
			key, nonce := bytes.Repeat([]byte{1}, s.Nk()), bytes.Repeat([]byte{2}, s.Nn())
			aad := []byte("group id, epoch, content type, authenticated data")
			data := bytes.Repeat([]byte{'m'}, 1024)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				ct, err := s.Seal(key, nonce, aad, data)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Open(key, nonce, aad, ct); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
